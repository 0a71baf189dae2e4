#!/usr/bin/env bash
# Side-by-side benchmark: OpenNMT-py 3.5.1 trains the counterpart of
# configs/multi30k_en_de.yaml (scripts/opennmt_multi30k.yaml) on the same Multi30k en->de
# files with the same SentencePiece model as an s2s run, scores every kept checkpoint's
# greedy validation BLEU, then decodes test_2016_flickr with the best of them (as s2s
# keeps best.pt) greedily and with beam 5, scored by the same sacrebleu command as
# scripts/test_bleu.sh.
#
# Usage: scripts/bench_opennmt.sh WORK SPM_MODEL [UPDATES]
# TEMPLATE: another OpenNMT-py template in scripts/ (opennmt_multi30k_rnn.yaml: the
# counterpart of configs/multi30k_en_de_rnn.yaml); VALID_EVERY: validation and checkpoint
# interval (400); EXTRA: lines appended to the config (a learning-rate decay, say).
# OpenNMT-py is installed into $ONMT_VENV (default .venv-onmt) on first use: it pins
# torch<2.3, so it goes in with --no-deps next to torch 2.13.0 (CPU).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: scripts/bench_opennmt.sh WORK SPM_MODEL [UPDATES]}
spm=$(realpath "${2:?usage: scripts/bench_opennmt.sh WORK SPM_MODEL [UPDATES]}")
updates=${3:-1600}
venv=${ONMT_VENV:-$here/.venv-onmt}
source "$here/scripts/sxs_common.sh"
install_toolkit "$venv" OpenNMT-py==3.5.1 configargparse pyyaml sacrebleu sentencepiece \
    tensorboard six rapidfuzz pyonmttok numpy spacy pyahocorasick fasttext-wheel
prepare_multi30k "$work"
work=$(realpath "$work")
sed -e "s#@WORK@#$work#g" -e "s#@SPM@#$spm#g" -e "s#@UPDATES@#$updates#g" \
    -e "s#@VALID@#${VALID_EVERY:-400}#g" -e "s#@LOG@#${LOG_EVERY:-50}#g" \
    "$here/scripts/${TEMPLATE:-opennmt_multi30k.yaml}" > "$work/config.yaml"
[ -z "${EXTRA:-}" ] || printf '%s\n' "$EXTRA" >> "$work/config.yaml"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1  # 3.5.1's checkpoints hold an argparse.Namespace
log=$work/train.log
last=$work/model/model_step_$updates.pt
if [ ! -f "$last" ]; then
    start=$(date +%s)
    run_logged "$work/vocab.log" "$venv/bin/onmt_build_vocab" -config "$work/config.yaml" -n_sample -1
    run_logged "$log" "$venv/bin/onmt_train" -config "$work/config.yaml"
    echo "wall_s $(($(date +%s) - start)) (vocabulary and training)" | tee -a "$log"
fi
training_summary "$log"
"$venv/bin/python" - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# "SRC/TGT tok/s" per report window (since the previous report)
tps = sorted(float(x) for x in re.findall(r"\d+/\s*(\d+) tok/s", text))
steps = re.findall(r"Step\s+(\d+)/", text)
median = f"{tps[len(tps) // 2]:.0f}" if tps else "? (no report)"
print(f"steps {steps[-1] if steps else '?'}  target tokens_per_s median {median}")
PY
# validation BLEU of every kept checkpoint (OpenNMT-py validates by perplexity only)
best=$last best_bleu=-1
for ckpt in $(ls -v "$work"/model/model_step_*.pt); do
    step=${ckpt##*_step_}
    step=${step%.pt}
    "$venv/bin/onmt_translate" -model "$ckpt" -src "$work/data/val.en" -output "$work/hyp.val.$step" \
        -beam_size 1 -batch_size 64 -batch_type sents -max_length 100 -transforms sentencepiece \
        -src_subword_model "$spm" -tgt_subword_model "$spm" > "$work/val.log" 2>&1
    bleu=$("$venv/bin/python" -m sacrebleu "$work/data/val.de" -i "$work/hyp.val.$step" -m bleu -b -w 2)
    echo "step $step valid BLEU $bleu"
    if awk "BEGIN {exit !($bleu > $best_bleu)}"; then best=$ckpt best_bleu=$bleu; fi
done
echo "test with $(basename "$best") (best validation BLEU $best_bleu)"
for beam in 1 5; do
    start=$(date +%s.%N)
    "$venv/bin/onmt_translate" -model "$best" -src "$work/data/test_2016_flickr.en" \
        -output "$work/hyp.test.beam$beam" -beam_size $beam -batch_size 64 -batch_type sents \
        -max_length 100 -transforms sentencepiece -src_subword_model "$spm" \
        -tgt_subword_model "$spm" > "$work/test.log" 2>&1 || { tail -30 "$work/test.log"; exit 1; }
    end=$(date +%s.%N)
    echo "beam $beam: onmt_translate (model loading and test decoding)" \
        "$(awk "BEGIN {printf \"%.1f\", $end - $start}") s"
    score_test "$venv/bin/python" "$work/hyp.test.beam$beam" "$work/data/test_2016_flickr.de"
done
