#!/usr/bin/env bash
# Is behaviour unchanged since REV? Trains configs/smoke.yaml (seed 1, 60 steps) and
# configs/charlm_smoke.yaml once with the code of REV (checked out as a git worktree)
# and once with this checkout, then compares the last.pt weights bitwise and the greedy
# translations of the first 200 test_2016_flickr sentences. Both sides read this
# checkout's config files. Usage: scripts/behaviour_check.sh REV [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rev=$1
out=$(mkdir -p "${2:-$here/bench/behaviour}" && cd "${2:-$here/bench/behaviour}" && pwd)
python=${PYTHON:-$here/.venv/bin/python}
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
if [ ! -d "$out/before" ]; then
  git -C "$here" worktree add --detach "$out/before" "$rev" > /dev/null
fi
git -C "$out/before" checkout --quiet --detach "$rev"
gzip -dc "$S2S_DATA/multi30k/test_2016_flickr.en.gz" | sed -n '1,200p' > "$out/test200.en"  # sed reads it all: no SIGPIPE
cd "$out"  # not a checkout: python puts the working folder first on its path
for side in before after; do
  code=$here
  [ "$side" = before ] && code=$out/before
  rm -rf "$out/$side-smoke" "$out/$side-charlm"
  PYTHONPATH=$code "$python" -c "import s2s, sys; sys.exit(not s2s.__file__.startswith('$code/'))" \
    || { echo "$side: the code that imports is not $code" >&2; exit 1; }
  PYTHONPATH=$code "$python" -m s2s -q train "$here/configs/smoke.yaml" --out "$out/$side-smoke"
  PYTHONPATH=$code "$python" -m s2s -q charlm train "$here/configs/charlm_smoke.yaml" \
    --out "$out/$side-charlm"
  PYTHONPATH=$code "$python" -m s2s -q translate "$out/$side-smoke/last.pt" \
    --input "$out/test200.en" --output "$out/$side-smoke/test200.de" --device cpu
done
# a checkpoint written by REV: this checkout translates it and resumes its run
rm -rf "$out/resumed-smoke"
cp -r "$out/before-smoke" "$out/resumed-smoke"
PYTHONPATH=$here "$python" -m s2s -q translate "$out/before-smoke/last.pt" --input "$out/test200.en" \
  --output "$out/resumed-smoke/old-checkpoint.de" --device cpu
PYTHONPATH=$here "$python" -m s2s -q train "$here/configs/smoke.yaml" --out "$out/resumed-smoke" \
  train.max_steps=70
"$python" - "$out" <<'PY'
import hashlib, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
for run in ("smoke", "charlm"):
    a = torch.load(out / f"before-{run}" / "last.pt", weights_only=True)["model"]
    b = torch.load(out / f"after-{run}" / "last.pt", weights_only=True)["model"]
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    digest = lambda m: hashlib.sha256(b"".join(m[k].numpy().tobytes() for k in sorted(m))).hexdigest()[:16]
    print(f"{run}: last.pt weights {'identical' if same else 'DIFFER'} "
          f"(sha256 before {digest(a)}, after {digest(b)}, {len(a)} tensors)")
before = (out / "before-smoke" / "test200.de").read_text().splitlines()
after = (out / "after-smoke" / "test200.de").read_text().splitlines()
same = sum(x == y for x, y in zip(before, after))
print(f"smoke: {same} of {len(before)} translations identical")
old = (out / "resumed-smoke" / "old-checkpoint.de").read_text().splitlines()
step = torch.load(out / "resumed-smoke" / "last.pt", weights_only=True)["progress"]["step"]
print(f"REV's smoke last.pt: {sum(x == y for x, y in zip(before, old))} of {len(before)} "
      f"translations as REV's own; its run resumed from step 60 to {step}")
PY
