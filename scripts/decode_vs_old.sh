#!/usr/bin/env bash
# Decoding speed inside one process, start-up excluded: this code against OLD_REV's
# (3750b5f) on the same weights, alternating, each run a fresh process
# (scripts/decode_ab.py: load, then time translate()): greedy and beam 5 at 64 and 256
# sentences a batch, ROUNDS rounds (default 5); then each side's median first run at its
# faster batch size and their ratio (scripts/speed_table.py --in-process).
# OLD_CKPT is CKPT as OLD_REV reads it (scripts/old_checkpoint.py); scripts/bench_speed.sh
# makes it, installs OLD_REV's venv (OLD_VENV) and calls this after its own decoding.
# SHORTLIST=FILE (an `s2s shortlist` of CKPT): this code also runs with it, each round.
# Usage: scripts/decode_vs_old.sh CKPT OLD_CKPT OUT [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ckpt=${1:?usage: scripts/decode_vs_old.sh CKPT OLD_CKPT OUT [ROUNDS]}
old_ckpt=${2:?usage: scripts/decode_vs_old.sh CKPT OLD_CKPT OUT [ROUNDS]}
out=${3:?usage: scripts/decode_vs_old.sh CKPT OLD_CKPT OUT [ROUNDS]}
rounds=${4:-5}
bin=${S2S_BIN:-$here/.venv/bin}
old=${OLD_VENV:-$here/.venv-${OLD_REV:-3750b5f}}
if [ ! -x "$old/bin/python" ]; then
    echo "decode_vs_old.sh: no venv of the old code at $old (scripts/bench_speed.sh installs it)" >&2
    exit 2
fi
export S2S_DATA=$(cd "${S2S_DATA:-$here/../shared/data}" && pwd)
mkdir -p "$out/inproc"
for k in $(seq "$rounds"); do
    for search in greedy beam5; do
        opts=()
        [ "$search" = beam5 ] && opts=(--beam 5)
        for bs in 64 256; do
            "$bin/python" "$here/scripts/decode_ab.py" "$ckpt" "${opts[@]}" --batch-size $bs \
                > "$out/inproc/s2s.$search.b$bs.r$k.txt"
            if [ -n "${SHORTLIST:-}" ]; then
                "$bin/python" "$here/scripts/decode_ab.py" "$ckpt" "${opts[@]}" --batch-size $bs \
                    --shortlist "$SHORTLIST" > "$out/inproc/shortlist.$search.b$bs.r$k.txt"
            fi
            # OLD_REV's code from its venv only (a PYTHONPATH set for this checkout must not
            # reach it)
            env -u PYTHONPATH "$old/bin/python" "$here/scripts/decode_ab.py" "$old_ckpt" \
                "${opts[@]}" --batch-size $bs > "$out/inproc/old.$search.b$bs.r$k.txt"
        done
    done
done
"$bin/python" "$here/scripts/speed_table.py" "$out" --in-process
