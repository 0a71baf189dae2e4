#!/usr/bin/env bash
# Char-LM benchmarks on this machine (rerunning a mode resumes its run folder).
#   scripts/bench_charlm.sh shakespeare [RUN] [KEY=VALUE ...]
#       trains configs/charlm_shakespeare.yaml (default RUN bench/charlm_shakespeare), then
#       prints wall time and peak memory, the validation curve (nats per character against
#       minutes; RUN.curve.png), a sample, and the MR probe of its features
#   scripts/bench_charlm.sh mr [RUN] [KEY=VALUE ...]
#       pretrains configs/charlm_mr.yaml on MR's text, labels thrown away (default RUN
#       bench/charlm_mr), then the 10-fold MR probe beside a random-init LM and n-grams
#   scripts/bench_charlm.sh mr_english [RUN] [KEY=VALUE ...]
#       as mr, on configs/charlm_mr_english.yaml: MR's text beside Multi30k's English
#       captions and tinyshakespeare in MR's style (scripts/english_text.py, into
#       $S2S_TEXT, default RUN.text)
#   scripts/bench_charlm.sh mr_backward [RUN] [KEY=VALUE ...]
#       as mr, with data.direction=backward (default RUN bench/charlm_mr_backward): a
#       backward LM, then the probe of its features beside those of mr's forward LM
#       (FORWARD, default bench/charlm_mr/best.pt: run mode mr first), side by side
# Environment: S2S_DATA (default ../shared/data), S2S_BIN (default .venv/bin),
# FEATURES (probe features, default layers: every layer's mean, BENCHMARKS.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/bench_charlm.sh shakespeare|mr|mr_english|mr_backward [RUN] [KEY=VALUE ...]"
mode=${1:?$usage}
shift
case $mode in
shakespeare | mr | mr_english | mr_backward) ;;
*) echo "unknown mode '$mode' (shakespeare, mr, mr_english or mr_backward)" >&2; exit 2 ;;
esac
run=${1:-bench/charlm_$mode}
shift || true
bin=${S2S_BIN:-$here/.venv/bin}
features=${FEATURES:-layers}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
mkdir -p "$run"
if [ "$mode" = mr_english ]; then
    export S2S_TEXT=${S2S_TEXT:-$(cd "$run" && pwd).text}
    "$bin/python" "$here/scripts/english_text.py" "$S2S_TEXT"
fi
checkpoints=("$run/best.pt")
config=$here/configs/charlm_$mode.yaml
if [ "$mode" = mr_backward ]; then
    forward=${FORWARD:-bench/charlm_mr/best.pt}
    if [ ! -f "$forward" ]; then
        echo "mr_backward: no forward LM at $forward (run scripts/bench_charlm.sh mr first)" >&2
        exit 2
    fi
    config=$here/configs/charlm_mr.yaml
    set -- data.direction=backward "$@"
    checkpoints=("$forward" "$run/best.pt")
fi
log=$run.train.log
/usr/bin/time -v "$bin/s2s" charlm train "$config" "$@" --out "$run" 2> >(tee -a "$log" >&2)
"$bin/python" "$here/scripts/run_summary.py" "$run"
grep -E "Maximum resident set size|Elapsed \(wall" "$log" | tail -2
"$bin/python" "$here/scripts/lm_curve.py" "$run" --png "$run.curve.png"
if [ "$mode" = shakespeare ]; then
    "$bin/s2s" -q charlm sample "$run/best.pt" --prime "ROMEO:" --length 300 --temperature 0.8 --seed 1
fi
/usr/bin/time -f "probe wall %e s" "$bin/s2s" -q charlm probe "${checkpoints[@]}" \
    --pos "$S2S_DATA/mr/rt-polarity.pos" --neg "$S2S_DATA/mr/rt-polarity.neg" --folds 10 \
    --features "$features"
