#!/usr/bin/env bash
# Char-LM transfer into character-level translation (issue 14, item 4): trains the
# English and German char LMs of Multi30k (runs/charlm_multi30k_{en,de}), then runs the
# sweep configs/sweep_charlm_transfer.yaml (random init vs encoder / decoder / both from
# the LMs, 3 seeds) into OUT, and configs/sweep_charlm_transfer_wd.yaml (random init and
# the decoder from the German LM, without and with word dropout) into OUT_wd. Everything
# resumes: rerun the same command after a cut.
# Usage: scripts/bench_transfer.sh [OUT]   (default bench/transfer; S2S_DATA, S2S_BIN)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${1:-bench/transfer}
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
for lang in en de; do
    run=runs/charlm_multi30k_$lang
    if [ ! -f "$run.done" ]; then
        "$bin/s2s" charlm train "configs/charlm_multi30k_$lang.yaml" --out "$run"
        "$bin/python" scripts/run_summary.py "$run" | tee "$run.done"
    fi
    cat "$run.done"
done
"$bin/s2s" compare configs/sweep_charlm_transfer.yaml --out "$out"
"$bin/s2s" compare configs/sweep_charlm_transfer_wd.yaml --out "${out}_wd"
