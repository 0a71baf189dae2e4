#!/usr/bin/env bash
# Mutation check of the test suite (not in CI; about half an hour on 2 cores):
# breaks one feature at a time in a scratch copy and runs the tests. See
# scripts/mutation_check.py and docs/testing.md. Resumable: results in
# runs/mutation/results.jsonl. Usage: scripts/mutation_check.sh [--only ID ...] [--fresh]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
export S2S_DATA=${S2S_DATA:-$here/../shared/data}
exec "${PYTHON:-$here/.venv/bin/python}" "$here/scripts/mutation_check.py" "$@"
