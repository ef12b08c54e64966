# Two commands on a fresh machine with Python >= 3.11 (README "Quickstart"):
#   make demo   set up .venv if needed, then fine-tune the packaged model on the ICD-10 demo
#   make test   set up .venv if needed, then the fast test suite
# Both are idempotent: .venv is (re)built only when missing, broken, or older than pyproject.toml,
# constraints.txt or setup.py (the stamp file). TORCH_INDEX picks where torch comes from, e.g.
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu   (the CPU build; see README)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.embedforge-installed
TORCH := torch==2.13.0
TORCH_INDEX ?=

export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test venv

demo: $(STAMP)
	$(VENV)/bin/embedforge train

test: $(STAMP)
	$(VENV)/bin/pytest

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: embedforge needs Python >= 3.11 (make PYTHON=python3.11 ...)" >&2; exit 2; }
	@$(VENV)/bin/python -c '' 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VENV)/bin/pip install -c constraints.txt -e ".[all,dev]"
	touch $@
