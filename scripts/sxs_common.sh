# Shared by the side-by-side benchmarks (scripts/bench_joeynmt.sh, bench_opennmt.sh):
# source it, with $here set to the repository root.

# install_toolkit VENV PACKAGE DEPENDENCY...: on first use, a venv with torch 2.13.0 (CPU),
# PACKAGE without its own pins (they ask for older torch versions), and DEPENDENCY...
install_toolkit() {
    local venv=$1 package=$2
    shift 2
    [ -f "$venv/.installed" ] && return
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.13.0
    "$venv/bin/pip" install -q --no-deps "$package"
    "$venv/bin/pip" install -q "$@"
    touch "$venv/.installed"
}

# prepare_multi30k WORK: Multi30k en/de (train, val, test_2016_flickr) from
# $S2S_DATA/multi30k, decompressed into WORK/data (the other toolkits read plain files).
prepare_multi30k() {
    local data=${S2S_DATA:-$here/../shared/data}/multi30k split lang
    mkdir -p "$1/data"
    for split in train val test_2016_flickr; do
        for lang in en de; do
            [ -s "$1/data/$split.$lang" ] || gzip -dc "$data/$split.$lang.gz" > "$1/data/$split.$lang"
        done
    done
}

# run_logged LOG COMMAND...: COMMAND under /usr/bin/time -v, all output into LOG; on
# failure, LOG's tail and exit.
run_logged() {
    local log=$1
    shift
    /usr/bin/time -v "$@" > "$log" 2>&1 || { tail -30 "$log"; exit 1; }
}

# training_summary LOG: wall time and peak memory of the training command(s) in LOG.
training_summary() {
    grep -E "Maximum resident set size|Elapsed \(wall|^wall_s" "$1" | tail -3
}

# score_test PYTHON HYP REF: test BLEU and chrF, as scripts/test_bleu.sh prints them.
score_test() {
    "$1" -m sacrebleu "$3" -i "$2" -m bleu chrf -b -w 2 --short
    "$1" -m sacrebleu "$3" -i "$2" -m bleu chrf -w 2 | grep -E '"(name|score|signature)"'
}
