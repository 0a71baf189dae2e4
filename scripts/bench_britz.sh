#!/usr/bin/env bash
# The Britz et al. 2017 study on Multi30k en->de (issue 15; docs/britz_multi30k.md): the
# five sweeps of configs/britz/ with s2s compare, one after another, each reusing the
# runs the others finished (the default model is trained once and serves cell, attention
# and beam). Resumable: rerun the same command after a cut and finished runs are skipped.
# Each question's report.md, report.json and PNGs are copied to DOCS/<question>/.
# Usage: scripts/bench_britz.sh [OUT] [QUESTION...]
#   OUT default runs/britz; QUESTION default: cell beam attention encoder decoder
#   env: S2S_DATA (default ../shared/data), S2S_BIN (default .venv/bin), DOCS (docs/britz)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${1:-runs/britz}
shift || true
questions=${*:-cell beam attention encoder decoder}
bin=${S2S_BIN:-$here/.venv/bin}
docs=${DOCS:-$here/docs/britz}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
mkdir -p "$out"
for q in $questions; do
    echo "== $q: start $(date -u +%FT%TZ)"
    reuse=()
    for other in cell beam attention encoder decoder; do
        [ "$other" != "$q" ] && [ -d "$out/$other" ] && reuse+=("$out/$other")
    done
    start=$(date +%s)
    "$bin/s2s" compare "configs/britz/$q.yaml" --out "$out/$q" ${reuse[@]+--reuse "${reuse[@]}"}
    echo "== $q: done $(date -u +%FT%TZ) ($(( $(date +%s) - start )) s this call)"
    mkdir -p "$docs/$q"
    cp "$out/$q/report.md" "$out/$q/report.json" "$out/$q/compare.png" "$out/$q/curves.png" \
        "$docs/$q/"
done
