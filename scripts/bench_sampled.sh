#!/usr/bin/env bash
# The sampled softmax (train.sampled_softmax) against the whole output layer, in the two
# shapes of scripts/bench_speed.sh (s2s-same: OpenNMT-py's dimensions; s2s-rnn: its
# default RNN shape), 3 seeds each, 1,000 updates at a constant rate; each model decoded
# greedy and beam 5 on test_2016_flickr. One training at a time; resumable (NAME.done).
# Prints mean and standard deviation over the seeds (scripts/sampled_table.py).
# Usage: S2S_DATA=../shared/data scripts/bench_sampled.sh [OUT]   (bench/sampled)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-bench/sampled}" && cd "${1:-bench/sampled}" && pwd)
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=$(cd "${S2S_DATA:-$here/../shared/data}" && pwd)
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
source "$here/scripts/sxs_common.sh"
prepare_multi30k "$out"
test=$out/data/test_2016_flickr
# the shapes exactly as scripts/bench_speed.sh gives them (SAME_SHAPE, RNN_SHAPE)
eval "$(sed -n '/^RNN_SHAPE=(/,/)$/p;/^SAME_SHAPE=(/,/)$/p' "$here/scripts/bench_speed.sh")"
RUN=(train.max_steps=1000 train.lr_schedule=constant train.valid_every=1000
    train.save_every=1000 train.max_minutes=0)

run() {  # NAME KEY=VALUE...
    local name=$1
    shift
    [ -f "$out/$name.done" ] && return 0
    echo "== $name ($(date +%T))"
    rm -rf "${out:?}/$name"
    run_logged "$out/$name.log" "$bin/s2s" -q train "$here/configs/multi30k_en_de.yaml" \
        --out "$out/$name" "${RUN[@]}" "$@"
    for beam in 1 5; do
        "$bin/s2s" -q translate "$out/$name/best.pt" --beam $beam --batch-size 256 \
            < "$test.en" > "$out/$name.b$beam.hyp"
        echo "$name beam$beam $("$bin/sacrebleu" "$test.de" -i "$out/$name.b$beam.hyp" -m bleu -b -w 2)" \
            >> "$out/bleu.txt"
    done
    touch "$out/$name.done"
}

for seed in 1 2 3; do
    s=""
    [ $seed = 1 ] || s=-s$seed
    run "same-k2048$s" "${SAME_SHAPE[@]}" train.sampled_softmax=2048 train.seed=$seed
    run "same-k0$s" "${SAME_SHAPE[@]}" train.sampled_softmax=0 train.seed=$seed
    run "rnn-k1024$s" "${RNN_SHAPE[@]}" train.sampled_softmax=1024 train.seed=$seed
    run "rnn-k0$s" "${RNN_SHAPE[@]}" train.sampled_softmax=0 train.seed=$seed
done
"$bin/python" "$here/scripts/sampled_table.py" "$out"
