#!/usr/bin/env bash
# Char-LM transfer into character-level translation (issue 14, item 4): trains the
# English and German char LMs of Multi30k (runs/charlm_multi30k_{en,de}), then runs the
# sweep configs/sweep_charlm_transfer.yaml (random init vs encoder / decoder / both from
# the LMs, 3 seeds) into OUT, and configs/sweep_charlm_transfer_wd.yaml (random init and
# the decoder from the German LM, without and with word dropout) into OUT_wd, and
# configs/sweep_charlm_transfer_low.yaml (3,000 training pairs; also a backward English
# LM, runs/charlm_multi30k_en_backward, in the encoder) into OUT_low. Everything
# resumes: rerun the same command after a cut.
# Usage: scripts/bench_transfer.sh [OUT]   (default bench/transfer; S2S_DATA, S2S_BIN)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${1:-bench/transfer}
bin=${S2S_BIN:-$here/.venv/bin}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
lm() {  # RUN CONFIG [KEY=VALUE...]: train a char LM once
    local run=$1
    if [ ! -f "$run.done" ]; then
        "$bin/s2s" charlm train "${@:2}" --out "$run"
        "$bin/python" scripts/run_summary.py "$run" | tee "$run.done"
    fi
    cat "$run.done"
}
lm runs/charlm_multi30k_en configs/charlm_multi30k_en.yaml
lm runs/charlm_multi30k_de configs/charlm_multi30k_de.yaml
lm runs/charlm_multi30k_en_backward configs/charlm_multi30k_en.yaml data.direction=backward
lm runs/charlm_multi30k_en_backward_shared configs/charlm_multi30k_en.yaml data.direction=backward \
    model.embedding_from=runs/charlm_multi30k_en/best.pt "train.lr_multipliers={embedding: 0}"
"$bin/s2s" compare configs/sweep_charlm_transfer.yaml --out "$out"
"$bin/s2s" compare configs/sweep_charlm_transfer_wd.yaml --out "${out}_wd"
"$bin/s2s" compare configs/sweep_charlm_transfer_low.yaml --out "${out}_low"
