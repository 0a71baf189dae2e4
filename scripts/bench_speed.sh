#!/usr/bin/env bash
# The speed table, back to back on this machine: s2s and OpenNMT-py 3.5.1 train Multi30k
# en->de for the same number of updates in two shapes, then decode test_2016_flickr
# (greedy and beam 5) with both and with s2s at OLD_REV (default 3750b5f, the code before
# the speed work, on the same weights). One table at the end (scripts/speed_table.py).
#
# Shapes (each toolkit in its own settings for the task):
#   default  s2s: configs/multi30k_en_de.yaml as committed (precision/compile auto,
#            scheduled sampling), with a constant rate; OpenNMT-py: its counterpart
#            scripts/opennmt_multi30k.yaml (same subwords, 2,048-token batches, Adam 0.002,
#            label smoothing 0.1; its encoder has 128 units per direction, s2s's 256).
#   same     the default shape in OpenNMT-py's dimensions, s2s only: the default config with
#            OpenNMT-py's encoder (128 units per direction) and, as OpenNMT-py, no scheduled
#            sampling (SAME_SHAPE below); compared with onmt-default, the same model shape.
#   rnn      OpenNMT-py's default RNN shape (scripts/opennmt_multi30k_rnn.yaml): bidirectional
#            2 x 128 encoder, 256 decoder with input feeding and additive attention,
#            64-sentence batches, Adam 0.001, no label smoothing, untied output; s2s in the
#            same shape (RNN_SHAPE below), its attentional vector linear as OpenNMT-py's
#            mlp attention computes it (without it, 4.7 BLEU lower at 1,000 updates:
#            BENCHMARKS.md, thirty-third session).
# Decoding: each side in its own default precision (s2s: --precision auto, bf16 where the
# CPU has it; 3750b5f and OpenNMT-py: fp32), at batches of 64 and of 256 sentences
# (DECODE_BATCHES), each command DECODE_RUNS times (default 3, as the start-up); the table
# keeps each side's fastest.
# s2s-same-sampled and s2s-rnn-sampled: the same two s2s shapes with the sampled softmax
# (train.sampled_softmax: 2,048 columns for the 2,560-token batches, 1,024 for the
# 64-sentence ones; scripts/bench_sampled.sh compares its BLEU over 3 seeds).
# s2s also trains each shape in fp32 (BLEU reference for its bf16 runs; FP32=0 skips it).
# Training runs validate once, at the end; tokens/s is non-pad target tokens (EOS
# included) over training seconds without validation, counted from each toolkit's log.
#
# Usage: S2S_DATA=../shared/data scripts/bench_speed.sh [OUT] [UPDATES]   (bench/speed, 1600)
# Resumable: a finished step leaves OUT/NAME.done and is skipped when the command is rerun.
# DECODE=0 stops after the trainings.
# Needs network access to the package index on first use (two venvs: ONMT_VENV, OLD_VENV).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-bench/speed}" && cd "${1:-bench/speed}" && pwd)
updates=${2:-1600}
bin=${S2S_BIN:-$here/.venv/bin}
onmt=${ONMT_VENV:-$here/.venv-onmt}
old_rev=${OLD_REV:-3750b5f}
old=${OLD_VENV:-$here/.venv-$old_rev}
export S2S_DATA=$(cd "${S2S_DATA:-$here/../shared/data}" && pwd)
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
source "$here/scripts/sxs_common.sh"
RNN_SHAPE=(model.encoder.layers=1 model.encoder.hidden_size=128 model.decoder.hidden_size=256
    model.attention=additive model.decoder.input_feeding=true model.tie_target_embeddings=false
    model.dropout=0.3 model.embedding_dropout=0.3 data.batch_size=64 data.batch_unit=sentences
    train.lr=0.001 train.label_smoothing=0.0 train.loss_norm=sentences
    train.scheduled_sampling.decay=constant train.scheduled_sampling.k=1.0
    model.attentional_vector=linear)
SAME_SHAPE=(model.encoder.hidden_size=128 train.scheduled_sampling.decay=constant
    train.scheduled_sampling.k=1.0)
RUN=(train.max_steps="$updates" train.lr_schedule=constant train.valid_every="$updates"
    train.save_every="$updates" train.max_minutes=0)

install_toolkit "$onmt" OpenNMT-py==3.5.1 configargparse pyyaml sacrebleu sentencepiece \
    tensorboard six rapidfuzz pyonmttok numpy spacy pyahocorasick fasttext-wheel
if [ ! -f "$old/.installed" ]; then  # s2s at OLD_REV, installed from a temporary worktree
    python3 -m venv "$old"
    "$old/bin/pip" install -q torch==2.13.0
    git -C "$here" worktree add --detach "$out/old-src" "$old_rev" > /dev/null
    "$old/bin/pip" install -q "$out/old-src"
    git -C "$here" worktree remove --force "$out/old-src"
    touch "$old/.installed"
fi
prepare_multi30k "$out"
test=$out/data/test_2016_flickr
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
flags=$(grep -m1 -o -w -E "avx512_bf16|amx_bf16" /proc/cpuinfo | sort -u | xargs || true)
echo "machine: $cpu, $(nproc) cores, bf16: ${flags:-none}; $(date -u +%FT%TZ)" | tee "$out/machine"

# step NAME: true when NAME is still to do (no NAME.done)
step() { [ ! -f "$out/$1.done" ] && echo "== $1 ($(date +%T))"; }

s2s_train() {  # NAME KEY=VALUE...
    local name=$1
    shift
    step "$name" || return 0
    rm -rf "${out:?}/$name"
    run_logged "$out/$name.log" "$bin/s2s" -q train "$here/configs/multi30k_en_de.yaml" \
        --out "$out/$name" "${RUN[@]}" "$@"
    touch "$out/$name.done"
}

onmt_train() {  # NAME TEMPLATE
    local name=$1 work=$out/$1
    step "$name" || return 0
    rm -rf "$work"
    mkdir -p "$work"
    sed -e "s#@WORK@#$work#g" -e "s#@SPM@#$out/s2s-default/tokenizer.joint.model#g" \
        -e "s#@UPDATES@#$updates#g" -e "s#@VALID@#$updates#g" -e "s#@LOG@#50#g" \
        -e "s#@WORK@/data#$out/data#g" "$here/scripts/$2" |
        sed -e "s#$work/data/#$out/data/#g" > "$work/config.yaml"
    run_logged "$work/vocab.log" "$onmt/bin/onmt_build_vocab" -config "$work/config.yaml" -n_sample -1
    run_logged "$out/$name.log" "$onmt/bin/onmt_train" -config "$work/config.yaml"
    touch "$out/$name.done"
}

# Each OpenNMT-py run right after the s2s run(s) it is compared with, so that the VM's
# drift over the hour (10-30% between tables: BENCHMARKS.md) touches each pair least
s2s_train s2s-default
onmt_train onmt-default opennmt_multi30k.yaml
s2s_train s2s-same "${SAME_SHAPE[@]}"
s2s_train s2s-same-sampled "${SAME_SHAPE[@]}" train.sampled_softmax=2048
s2s_train s2s-rnn "${RNN_SHAPE[@]}"
s2s_train s2s-rnn-sampled "${RNN_SHAPE[@]}" train.sampled_softmax=1024
onmt_train onmt-rnn opennmt_multi30k_rnn.yaml
if [ "${FP32:-1}" = 1 ]; then
    s2s_train s2s-default-fp32 train.precision=fp32
    s2s_train s2s-rnn-fp32 "${RNN_SHAPE[@]}" train.precision=fp32
fi

[ "${DECODE:-1}" = 1 ] || exit 0  # DECODE=0: trainings only (a rerun decodes)

# --------------------------------------------------------------------------- decoding
# timed NAME INPUT COMMAND...: COMMAND reading INPUT under /usr/bin/time; NAME.time holds
# "seconds max_rss_kb", NAME.hyp the output.
timed() {
    local name=$1 input=$2
    shift 2
    /usr/bin/time -o "$out/decode/$name.time" -f "%e %M" "$@" < "$input" > "$out/decode/$name.hyp" \
        2> "$out/decode/$name.err" || { tail -20 "$out/decode/$name.err"; exit 1; }
}

# decode_one RUN SIDE CKPT SEARCH BATCH: one decoding of the test set (RUN.time, .hyp, .bleu)
decode_one() {
    local run=$1 side=$2 ckpt=$3 search=$4 bs=$5
    case $side in
        s2s | old)
            local cmd=("$bin/s2s")
            [ "$side" = old ] && cmd=(env -u PYTHONPATH "$old/bin/s2s")
            local opts=()
            [ "$search" = beam5 ] && opts=(--beam 5)
            timed "$run" "$test.en" "${cmd[@]}" -q translate "$ckpt" --batch-size "$bs" "${opts[@]}"
            ;;
        onmt)
            local beam=1
            [ "$search" = beam5 ] && beam=5
            timed "$run" /dev/null "$onmt/bin/onmt_translate" -model "$ckpt" \
                -src "$test.en" -output "$out/decode/$run.out" -beam_size $beam \
                -batch_size "$bs" -batch_type sents -max_length 100 -transforms sentencepiece \
                -src_subword_model "$out/s2s-default/tokenizer.joint.model" \
                -tgt_subword_model "$out/s2s-default/tokenizer.joint.model"
            mv "$out/decode/$run.out" "$out/decode/$run.hyp"
            ;;
    esac
    "$bin/sacrebleu" "$test.de" -i "$out/decode/$run.hyp" -m bleu -b -w 2 > "$out/decode/$run.bleu"
}

# decode NAME SIDE CKPT: greedy and beam 5 on the test set at each of DECODE_BATCHES
# sentences a batch, and start-up (one empty line; OpenNMT-py: one sentence; best of 3)
# for one side: s2s (this code), old (OLD_REV's code) or onmt.
decode() {
    local name=$1 side=$2 ckpt=$3 k search bs
    step "decode-$name" || return 0
    mkdir -p "$out/decode"
    for search in greedy beam5; do
        for bs in ${DECODE_BATCHES:-64 256}; do
            for k in $(seq "${DECODE_RUNS:-3}"); do
                decode_one "$name.$search.b$bs.r$k" "$side" "$ckpt" "$search" "$bs"
            done
        done
    done
    echo > "$out/decode/empty.txt"
    head -1 "$test.en" > "$out/decode/one.txt"  # OpenNMT-py fails on an empty line
    for k in 1 2 3; do
        case $side in
            s2s) timed "$name.startup$k" "$out/decode/empty.txt" "$bin/s2s" -q translate "$ckpt" ;;
            old) timed "$name.startup$k" "$out/decode/empty.txt" env -u PYTHONPATH "$old/bin/s2s" -q \
                translate "$ckpt" ;;
            onmt) timed "$name.startup$k" /dev/null "$onmt/bin/onmt_translate" -model "$ckpt" \
                -src "$out/decode/one.txt" -output "$out/decode/$name.startup.out" -beam_size 1 \
                -transforms sentencepiece \
                -src_subword_model "$out/s2s-default/tokenizer.joint.model" \
                -tgt_subword_model "$out/s2s-default/tokenizer.joint.model" ;;
        esac
    done
    touch "$out/$name.decode.done" "$out/decode-$name.done"
}

for k in 1 2 3; do  # the floor: importing torch
    /usr/bin/time -o "$out/torch_import.$k.time" -f "%e %M" "$bin/python" -c "import torch"
done
decode s2s-default s2s "$out/s2s-default/best.pt"
# OLD_REV's code from its venv only (a PYTHONPATH set for this checkout must not reach it)
env -u PYTHONPATH "$old/bin/python" "$here/scripts/old_checkpoint.py" "$out/s2s-default/best.pt" \
    "$out/old-default.pt"
decode old-default old "$out/old-default.pt"
decode onmt-default onmt "$out/onmt-default/model/model_step_$updates.pt"
decode s2s-same s2s "$out/s2s-same/best.pt"
decode s2s-same-sampled s2s "$out/s2s-same-sampled/best.pt"
decode s2s-rnn s2s "$out/s2s-rnn/best.pt"
decode s2s-rnn-sampled s2s "$out/s2s-rnn-sampled/best.pt"
decode onmt-rnn onmt "$out/onmt-rnn/model/model_step_$updates.pt"
[ "${FP32:-1}" = 1 ] && decode s2s-default-fp32 s2s "$out/s2s-default-fp32/best.pt"
[ "${FP32:-1}" = 1 ] && decode s2s-rnn-fp32 s2s "$out/s2s-rnn-fp32/best.pt"
# Inside one process (scripts/decode_vs_old.sh: start-up excluded by construction, not by
# subtracting a noisy start-up command): this code and OLD_REV's on the same weights,
# alternating, INPROC_RUNS rounds (default 5); the table takes each side's median first
# run (a fresh process, as a command decodes) at its faster batch size. This code also
# decodes there with a lexical shortlist of the model (`s2s shortlist`, its defaults).
if step inproc; then
    "$bin/s2s" -q shortlist "$out/s2s-default/best.pt" --out "$out/s2s-default.shortlist"
    SHORTLIST=$out/s2s-default.shortlist "$here/scripts/decode_vs_old.sh" \
        "$out/s2s-default/best.pt" "$out/old-default.pt" "$out" "${INPROC_RUNS:-5}"
    touch "$out/inproc.done"
fi
"$bin/python" "$here/scripts/speed_table.py" "$out" | tee "$out/table.md"
