#!/usr/bin/env bash
# The default config on a CUDA GPU in bf16: trains for a fixed number of updates, then
# decodes test_2016_flickr greedily and with beam 5, and prints target tokens/s, peak
# GPU memory, sentences/s (start-up apart) and test BLEU. Run it where a GPU is at hand.
#
# Usage: S2S_DATA=../shared/data scripts/bench_gpu.sh [RUN] [UPDATES] [KEY=VALUE ...]
# (defaults: bench/gpu, 1600). Rerunning resumes an interrupted training run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run=${1:-bench/gpu}
updates=${2:-1600}
shift $(($# > 2 ? 2 : $#)) || true
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
"$bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "not run: no GPU available"
    exit 0
}
"$bin/python" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}')"
start=$(date +%s)
"$bin/s2s" train "$here/configs/multi30k_en_de.yaml" --out "$run" train.device=cuda \
    train.precision=bf16 train.max_steps="$updates" train.max_minutes=0 "$@"
echo "training wall time $(($(date +%s) - start)) s (command start to exit)"
"$bin/python" - "$run" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [r for r in rows if r["kind"] == "train"]
tps = sorted(r["tokens_per_s"] for r in train)
peak = max((r.get("gpu_peak_gb", 0.0) for r in train), default=0.0)
valid = [r for r in rows if r["kind"] == "valid"]
print(f"updates {train[-1]['step']}  target tokens/s (median of windows) {tps[len(tps) // 2]:.0f}")
print(f"peak GPU memory {peak:.2f} GB (torch.cuda.max_memory_allocated)")
if valid:
    print(f"validation BLEU at the end {valid[-1]['bleu']:.2f}")
PY
test=$S2S_DATA/multi30k/test_2016_flickr
gzip -dc "$test.en.gz" > "$run/test.en"
gzip -dc "$test.de.gz" > "$run/test.de"
t0=$(date +%s.%N)
echo | "$bin/s2s" -q translate "$run/last.pt" --device cuda > /dev/null
t1=$(date +%s.%N)
startup=$(awk "BEGIN {print $t1 - $t0}")
printf "start-up (echo | s2s translate CKPT --device cuda): %.2f s\n" "$startup"
for beam in 1 5; do
    opts=(--device cuda)
    [ "$beam" -gt 1 ] && opts+=(--beam "$beam")
    t0=$(date +%s.%N)
    "$bin/s2s" -q translate "$run/last.pt" "${opts[@]}" < "$run/test.en" > "$run/test.hyp.$beam"
    t1=$(date +%s.%N)
    secs=$(awk "BEGIN {print $t1 - $t0 - $startup}")
    bleu=$("$bin/sacrebleu" "$run/test.de" -i "$run/test.hyp.$beam" -m bleu -b -w 2)
    name=$([ "$beam" -gt 1 ] && echo "beam $beam" || echo "greedy")
    printf "%s: %.1f sentences/s (start-up excluded), test BLEU %s\n" "$name" \
        "$(awk "BEGIN {print $(wc -l < "$run/test.en") / $secs}")" "$bleu"
done
