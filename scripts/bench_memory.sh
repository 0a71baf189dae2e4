#!/usr/bin/env bash
# Peak memory (max RSS) and speed of a short training run of the default config:
# STEPS updates (default 200, constant rate, validation only at the end), under
# /usr/bin/time. Environment variables given before the command (e.g.
# MALLOC_ARENA_MAX=1, ONEDNN_PRIMITIVE_CACHE_CAPACITY=8) reach the run.
# Usage: scripts/bench_memory.sh NAME [STEPS] [KEY=VALUE ...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: scripts/bench_memory.sh NAME [STEPS] [KEY=VALUE ...]}
steps=${2:-200}
shift $(($# > 2 ? 2 : $#)) || true
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
run=${TMPDIR:-/tmp}/s2s-memory-$name
rm -rf "$run"
/usr/bin/time -v "$bin/s2s" -q train "$here/configs/multi30k_en_de.yaml" --out "$run" \
    train.max_steps="$steps" train.valid_every=1000000 train.save_every=1000000 \
    train.lr_schedule=constant "$@" 2> "$run.err"
rss=$(awk '/Maximum resident/ {printf "%.0f", $6 / 1024}' "$run.err")
echo "$name: peak RSS $rss MB  $("$bin/python" "$here/scripts/run_summary.py" "$run")"
rm -rf "$run" "$run.err"
