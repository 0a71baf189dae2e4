#!/usr/bin/env bash
# Side-by-side benchmark: Joey NMT 2.3.0 trains the model of configs/multi30k_en_de.yaml
# (bi-LSTM 256 encoder, LSTM 256 decoder, Luong "general" attention, no input feeding,
# tied output layer, dropout 0.2) on the same Multi30k en->de files, with the same
# SentencePiece model as an s2s run, the same batch size (2,048 padded tokens), Adam
# 0.002 at a constant rate, clipping 5, label smoothing 0.1, the same number of updates;
# then greedy decoding of test_2016_flickr scored by the same sacrebleu command.
#
# Usage: scripts/bench_joeynmt.sh WORK SPM_MODEL [UPDATES]
#   WORK       folder for Joey's data copy, config, model and logs (outside the repo)
#   SPM_MODEL  tokenizer.joint.model of an s2s run on Multi30k (the subwords to share)
# Joey NMT is installed into $JOEY_VENV (default .venv-joey) on first use, with --no-deps
# next to torch 2.13.0 (CPU): its own pins (protobuf<3.21, ...) do not fit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: scripts/bench_joeynmt.sh WORK SPM_MODEL [UPDATES]}
spm=$(realpath "${2:?usage: scripts/bench_joeynmt.sh WORK SPM_MODEL [UPDATES]}")
updates=${3:-1600}
venv=${JOEY_VENV:-$here/.venv-joey}
source "$here/scripts/sxs_common.sh"
install_toolkit "$venv" joeynmt==2.3.0 numpy pyyaml sacrebleu sentencepiece==0.2.0 subword-nmt \
    sacremoses tensorboard matplotlib seaborn pandas plotly packaging wrapt six future pillow \
    importlib_metadata
py=$venv/bin/python
prepare_multi30k "$work"
work=$(realpath "$work")
# one vocabulary for both sides: the SentencePiece model's pieces (as s2s's joint vocabulary)
"$py" - "$spm" "$work/data/vocab.txt" <<'PY'
import sys
import sentencepiece as sp
m = sp.SentencePieceProcessor(model_file=sys.argv[1])
pieces = [m.id_to_piece(i) for i in range(m.get_piece_size())]
special = ("<unk>", "<s>", "</s>", "<pad>")  # Joey NMT adds its own
open(sys.argv[2], "w").write("\n".join(p for p in pieces if p not in special) + "\n")
PY
sed -e "s#@WORK@#$work#g" -e "s#@SPM@#$spm#g" -e "s#@UPDATES@#$updates#g" \
    -e "s#@VALID@#${VALID_EVERY:-400}#g" -e "s#@LOG@#${LOG_EVERY:-50}#g" \
    "$here/scripts/joeynmt_multi30k.yaml" > "$work/config.yaml"
log=$work/train.log
if [ ! -f "$work/model/best.ckpt" ]; then
    start=$(date +%s)
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_logged "$log" "$py" -m joeynmt train "$work/config.yaml"
    echo "wall_s $(($(date +%s) - start))" | tee -a "$log"
fi
training_summary "$log"
"$py" - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
tps = sorted(float(x) for x in re.findall(r"Tokens per Sec:\s*([\d.]+)", text))
steps = re.findall(r"Step:\s*(\d+)", text)
bleu = [float(x) for x in re.findall(r"bleu:\s*([\d.]+)", text)]
print(f"steps {steps[-1] if steps else '?'}  tokens_per_s median {tps[len(tps) // 2]:.0f}  "
      f"best_valid_bleu {max(bleu) if bleu else float('nan'):.2f}")
PY
start=$(date +%s.%N)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$py" -m joeynmt test "$work/config.yaml" \
    --output-path "$work/hyp" > "$work/test.log" 2>&1 || { tail -30 "$work/test.log"; exit 1; }
end=$(date +%s.%N)
echo "joeynmt test (model loading, dev and test decoding) $(awk "BEGIN {printf \"%.1f\", $end - $start}") s"
score_test "$py" "$work/hyp.test" "$work/data/test_2016_flickr.de"
