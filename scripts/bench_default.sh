#!/usr/bin/env bash
# Benchmark of the default config on this machine: trains configs/multi30k_en_de.yaml
# into $RUN (default bench/base; rerunning resumes an interrupted run), then reports
# target tokens/s, training wall time, peak memory (max RSS), best validation BLEU and
# greedy test BLEU. Usage: scripts/bench_default.sh [RUN] [KEY=VALUE ...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run=${1:-bench/base}
shift || true
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
mkdir -p "$run"
log=$run.train.log
start=$(date +%s)
/usr/bin/time -v "$bin/s2s" train "$here/configs/multi30k_en_de.yaml" "$@" --out "$run" 2> >(tee -a "$log" >&2)
end=$(date +%s)
echo "wall_s $((end - start))" | tee -a "$log"
"$bin/python" "$here/scripts/run_summary.py" "$run"
grep -E "Maximum resident set size|Elapsed \(wall" "$log" | tail -2
"$here/scripts/test_bleu.sh" "$run/best.pt"
