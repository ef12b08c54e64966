# Two commands on a fresh machine with Python >= 3.11 (README "Quickstart"):
#   make demo   set up .venv if needed, then fine-tune the packaged model on the ICD-10 demo
#   make test   set up .venv if needed (and, as root on Debian, the browser the judge page's test
#               drives: chromium + chromium-driver), then the fast test suite
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

CHROMEDRIVER ?= /usr/bin/chromedriver

.PHONY: demo test venv browser

demo: $(STAMP)
	$(VENV)/bin/embedforge train

test: $(STAMP) browser
	$(VENV)/bin/pytest

# tests/judge/test_browser.py drives Debian's headless Chromium (nothing is downloaded at test
# time). Installed when missing where apt-get and root are at hand; else the test fails saying how.
browser:
	@test -x $(CHROMEDRIVER) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
		echo "note: no $(CHROMEDRIVER): tests/judge/test_browser.py will fail (apt-get install chromium chromium-driver)" >&2

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: embedforge needs Python >= 3.11 (make PYTHON=python3.11 ...)" >&2; exit 2; }
	@$(VENV)/bin/python -c '' 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VENV)/bin/pip install -c constraints.txt -e ".[all,dev]"
	touch $@
