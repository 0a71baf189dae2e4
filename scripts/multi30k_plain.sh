#!/usr/bin/env bash
# Decompress Multi30k en/de (train, val, test_2016_flickr) from $S2S_DATA/multi30k into
# WORK/data as plain text, for the toolkits the side-by-side benchmarks run (they read
# plain files). Usage: scripts/multi30k_plain.sh WORK
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: scripts/multi30k_plain.sh WORK}
data=${S2S_DATA:-$here/../shared/data}/multi30k
mkdir -p "$work/data"
for split in train val test_2016_flickr; do
    for lang in en de; do
        [ -s "$work/data/$split.$lang" ] || gzip -dc "$data/$split.$lang.gz" > "$work/data/$split.$lang"
    done
done
