# Two entry points that set everything up on a fresh machine:
#   make train   -- install, train the default Multi30k en->de model, score it on the test set
#   make test    -- install, lint, run the test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/base
# Local Multi30k copy when this checkout sits next to ../shared/data; otherwise the
# configs fall back to the Hugging Face hub dataset.
S2S_DATA ?= $(if $(wildcard ../shared/data/multi30k),$(abspath ../shared/data),)
export S2S_DATA

.PHONY: install train test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned first: an open-ended requirement would fetch the newest build. Where the
	# index serves PyTorch's default (CUDA-bundled) Linux wheel, as PyPI does, pass
	# TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build.
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/s2s train configs/multi30k_en_de.yaml --out $(RUN)
	$(if $(S2S_DATA),scripts/test_bleu.sh $(RUN)/best.pt,@echo "no local Multi30k (S2S_DATA): test-set scoring skipped")
	$(if $(S2S_DATA),scripts/test_bleu.sh $(RUN)/best.pt --beam 5 --length-penalty 1.0,)

lint: install
	$(VENV)/bin/ruff check s2s tests scripts

test: install lint
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q
