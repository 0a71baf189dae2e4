#!/usr/bin/env bash
# Training speed of REV's code against this checkout, back to back on this machine
# (speeds are only comparable within one session): trains CONFIG (default
# configs/multi30k_en_de.yaml) for STEPS updates (default 300, no validation until the
# end, constant learning rate) with each, and prints each run's summary (median
# tokens/s over log windows).
# REV's code runs from a git worktree. Usage: scripts/bench_ab.sh REV [STEPS] [CONFIG] [OUT]
# AFTER="KEY=VALUE ..." adds overrides for this checkout's run only (keys REV lacks).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rev=$1
steps=${2:-300}
config=$(cd "$(dirname "${3:-$here/configs/multi30k_en_de.yaml}")" && pwd)/$(basename "${3:-multi30k_en_de.yaml}")
out=$(mkdir -p "${4:-$here/bench/ab}" && cd "${4:-$here/bench/ab}" && pwd)
python=${PYTHON:-$here/.venv/bin/python}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
[ -d "$out/before" ] || git -C "$here" worktree add --detach "$out/before" "$rev" > /dev/null
git -C "$out/before" checkout --quiet --detach "$rev"
cd "$out"  # not a checkout: python puts the working folder first on its path
grep -m1 -o "avx512_bf16" /proc/cpuinfo > /dev/null && echo "cpu: avx512_bf16" || echo "cpu: no avx512_bf16"
for side in before after; do
  code=$here
  [ "$side" = before ] && code=$out/before
  rm -rf "$out/$side-run"
  start=$(date +%s)
  PYTHONPATH=$code "$python" -m s2s -q train "$config" --out "$out/$side-run" \
    train.max_steps="$steps" train.valid_every=1000000 train.save_every=1000000 \
    train.lr_schedule=constant $( [ "$side" = after ] && echo "${AFTER:-}" )
  # (constant: a decay that starts later than STEPS would be an error)
  echo "$side ($( [ "$side" = before ] && echo "$rev" || git -C "$here" rev-parse --short HEAD)):" \
    "wall_s $(($(date +%s) - start))  $("$python" "$here/scripts/run_summary.py" "$out/$side-run")"
done
git -C "$here" worktree remove --force "$out/before"
