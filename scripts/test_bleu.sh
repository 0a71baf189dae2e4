#!/usr/bin/env bash
# Translate Multi30k test_2016_flickr with a checkpoint and score it with sacrebleu:
# cased BLEU / chrF with 13a tokenization (the project's headline figure).
# Usage: scripts/test_bleu.sh CKPT [extra s2s translate options]
set -euo pipefail
ckpt=${1:?usage: scripts/test_bleu.sh CKPT}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${S2S_BIN:-$here/.venv/bin}
data=${S2S_DATA:-$here/../shared/data}
test=$data/multi30k/test_2016_flickr
hyp=${ckpt%.pt}.test.de
start=$(date +%s.%N)
gzip -dc "$test.en.gz" | "$bin/s2s" -q translate "$ckpt" "$@" > "$hyp"
end=$(date +%s.%N)
echo "translated $(wc -l < "$hyp") lines in $(awk "BEGIN {printf \"%.1f\", $end - $start}") s -> $hyp"
gzip -dc "$test.de.gz" > "${hyp}.ref"
"$bin/sacrebleu" "${hyp}.ref" -i "$hyp" -m bleu chrf -b -w 2 --short
"$bin/sacrebleu" "${hyp}.ref" -i "$hyp" -m bleu chrf -w 2 | grep -E '"(name|score|signature)"'
rm -f "${hyp}.ref"
