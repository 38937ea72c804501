# `make demo` runs the main job, `make test` runs the tests; both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

VSCODE := editors/vscode
NODE_STAMP := $(VSCODE)/node_modules/.installed

.PHONY: install demo test vsix clean

install: $(STAMP)

# llama.cpp's AMX kernels crash (SIGSEGV at ldtilecfg) on CPUs that report AMX inside a VM that does not
# let a process use it (this project's machines): the build leaves them out (the macro turns them on)
# and stays native otherwise. A wheel pip cached from a build without this needs `pip cache remove llama_cpp_python`.
LLAMA_CMAKE_ARGS := -DCMAKE_C_FLAGS=-U__AMX_INT8__ -DCMAKE_CXX_FLAGS=-U__AMX_INT8__

# Everything: the server, training and benchmarks (the extras), and the tests'.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -e ".[train,bench,test]"
	touch $(STAMP)

# The first acceptance gate (the first time only: it skips when one is promoted), then the demo.
demo: install
	-$(VENV)/bin/hindsight cold-start  # a failure here leaves the demo ungated, not undone
	$(VENV)/bin/hindsight demo

$(NODE_STAMP): $(VSCODE)/package-lock.json
	cd $(VSCODE) && npm ci --no-audit --no-fund
	touch $@

# The Python tests, then the VS Code extension's (under Node, one of them against the real server) and
# its packaging.
test: install $(NODE_STAMP)
	$(PY) -m pytest -q
	cd $(VSCODE) && HINDSIGHT_PYTHON=$(abspath $(PY)) npm test --silent
	cd $(VSCODE) && npm run package --silent

# The VS Code extension as editors/vscode/hindsight-<version>.vsix (`code --install-extension` it).
vsix: $(NODE_STAMP)
	cd $(VSCODE) && npm run package --silent

clean:
	rm -rf $(VENV) build *.egg-info $(VSCODE)/node_modules $(VSCODE)/out $(VSCODE)/build $(VSCODE)/*.vsix
