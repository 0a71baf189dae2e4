#!/usr/bin/env bash
# Benchmark of the char-LM preset on this machine: trains configs/charlm_shakespeare.yaml
# into $RUN (default bench/charlm; rerunning resumes), then reports validation bits per
# byte, units/s, wall time and peak memory, a sample, and the MR sentiment probe
# (10-fold logistic regression on the LM's final hidden state).
# Usage: scripts/bench_charlm.sh [RUN] [KEY=VALUE ...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run=${1:-bench/charlm}
shift || true
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
mkdir -p "$run"
log=$run.train.log
/usr/bin/time -v "$bin/s2s" charlm train "$here/configs/charlm_shakespeare.yaml" "$@" --out "$run" \
    2> >(tee -a "$log" >&2)
"$bin/python" "$here/scripts/run_summary.py" "$run"
grep -E "Maximum resident set size|Elapsed \(wall" "$log" | tail -2
"$bin/s2s" -q charlm sample "$run/best.pt" --prime "ROMEO:" --length 200 --temperature 0.8 --seed 1
/usr/bin/time -f "probe wall %e s" "$bin/s2s" -q charlm probe "$run/best.pt" --pos "$S2S_DATA/mr/rt-polarity.pos" \
    --neg "$S2S_DATA/mr/rt-polarity.neg" --folds 10
