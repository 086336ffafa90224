# Two commands on a fresh clone: `make demo` and `make test`. Both (re)create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# pip byte-compiles every module it installs (torch, ray, milvus-lite …: two thirds of a fresh
# install's time); with --no-compile below, Python compiles only the modules that are imported, once,
# on first import. That needs bytecode writing, which PYTHONDONTWRITEBYTECODE would turn off.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo serve browser test lint format clean device-wheels

install: $(STAMP)

# Re-runs only when the dependency list or the pins change. torch and torchvision are pinned
# together through constraints.txt (torchvision loads only with the torch it was built for).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev,ray,milvus]'
	touch $(STAMP)

# Real weights, offline: EfficientNet-Lite0 over the sample photos, MiniLM over their captions.
demo: install
	$(PY) -m img_search.pipeline.embed models=efficientnet_lite0 datasets=image_folder \
		datasets.image_folder.path=img_search/samples/photos output_path=$(DEMO_OUT)/images.parquet
	$(PY) -m img_search.pipeline.embed_text models=minilm text_dataset=captions_jsonl \
		text_dataset.path=img_search/samples/captions.jsonl text_dataset.name=sample_captions \
		output_path=$(DEMO_OUT)/captions.parquet

# The search page and API over the demo tables, on http://127.0.0.1:8000/ (PORT=... to change).
PORT ?= 8000
serve: demo
	$(PY) -m img_search.serve tables.images.table=$(DEMO_OUT)/images.parquet \
		tables.captions.table=$(DEMO_OUT)/captions.parquet port=$(PORT)

# Debian's headless Chromium for the browser test (never a browser download); where it cannot be
# installed (no root, no apt) the test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } || \
		echo "chromium could not be installed: the browser test will be skipped"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Three pytest workers on two cores keep both busy. A CLI run without a launcher is a forked child of
# its test (tests/forked_cli.py: no second import of torch); tests that start launchers (torchrun,
# accelerate) share the group "launch", so they run one at a time.
test: lint browser
	$(PY) -m pytest -q -n 3 --dist loadgroup

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache

# The wheels benchmarks/gpu.py needs beyond what the GPU machine has (Python 3.12, manylinux x86_64),
# for a machine that can fetch nothing: docs/benchmarks.md gives the command that installs them there.
DEVICE_WHEELS ?= device-wheels
device-wheels: install
	$(PY) benchmarks/device_wheels.py download $(DEVICE_WHEELS)
