# The README's two commands are `make demo` and `make test`; both create .venv on first use.
# The venv has the dev extra (pytest, py360convert) and the sweep extra (Ray Tune): CI runs a
# tiny reward sweep on local Ray.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast typecheck demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,sweep]"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q

# The quick loop while editing: everything but the end-to-end runs marked `slow` (under 60 s on
# 2 cores). `make test` still runs the whole suite.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

# mypy on the installed package's import names: build/typecheck/rl_scaniqa/{envs,agents,assessor}
# link to the top-level folders, so `rl_scaniqa.*` imports resolve to this checkout's files.
TYPECHECK := build/typecheck
typecheck: venv
	mkdir -p $(TYPECHECK)/rl_scaniqa
	for layer in envs agents assessor; do ln -sfn ../../../$$layer $(TYPECHECK)/rl_scaniqa/$$layer; done
	cd $(TYPECHECK) && ../../$(BIN)/python -m mypy --config-file ../../pyproject.toml -p rl_scaniqa

demo: venv
	$(BIN)/python experiments/run_ppo.py --out runs/demo

bench: venv
	$(BIN)/python experiments/bench.py projection --json

clean:
	rm -rf $(VENV) build *.egg-info
