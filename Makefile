# `make demo` runs the main job, `make test` runs the tests; both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

VSCODE := editors/vscode
NODE_STAMP := $(VSCODE)/node_modules/.installed

.PHONY: install demo test vsix llama-src llama-server clean

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

# llama.cpp's source as the llama-cpp-python sdist on PyPI carries it: its vocabulary-only GGUFs of real
# tokenizers, around which the tests build tiny models (tests/tiny_models.py). Fetched once into a cache
# outside the clone, as pip caches the wheel (HINDSIGHT_BUILD_CACHE moves it).
LLAMA_VERSION := 0.3.36
BUILD_CACHE ?= $(or $(HINDSIGHT_BUILD_CACHE),$(HOME)/.cache/hindsight-build)
LLAMA_SRC := $(BUILD_CACHE)/llama-cpp-python-$(LLAMA_VERSION)

llama-src: $(LLAMA_SRC)/.fetched

$(LLAMA_SRC)/.fetched:
	mkdir -p $(BUILD_CACHE)/sdist
	test -f $(BUILD_CACHE)/sdist/llama_cpp_python-$(LLAMA_VERSION).tar.gz || python3 -m pip download -q \
		--no-binary :all: --no-deps llama-cpp-python==$(LLAMA_VERSION) -d $(BUILD_CACHE)/sdist
	rm -rf $(LLAMA_SRC) && mkdir -p $(LLAMA_SRC)
	tar xzf $(BUILD_CACHE)/sdist/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C $(LLAMA_SRC) --strip-components=3 \
		llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp
	touch $@

# llama.cpp's own server, from that source: one static binary (about 7 minutes on two cores, once), which
# the tests run hindsight's llama-server backend against. The same AMX flags as the wheel.
LLAMA_SERVER := $(BUILD_CACHE)/llama-server-$(LLAMA_VERSION)/llama-server

llama-server: $(LLAMA_SERVER)

$(LLAMA_SERVER): $(LLAMA_SRC)/.fetched
	cmake -S $(LLAMA_SRC) -B $(BUILD_CACHE)/llama-server-build -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release $(LLAMA_CMAKE_ARGS) > /dev/null
	cmake --build $(BUILD_CACHE)/llama-server-build --target llama-server -j $$(nproc) > /dev/null
	mkdir -p $(dir $@)
	cp $(BUILD_CACHE)/llama-server-build/bin/llama-server $@.part && mv $@.part $@

# The first acceptance gate (the first time only: it skips when one is promoted), then the demo.
demo: install
	-$(VENV)/bin/hindsight cold-start  # a failure here leaves the demo ungated, not undone
	$(VENV)/bin/hindsight demo

$(NODE_STAMP): $(VSCODE)/package-lock.json
	cd $(VSCODE) && npm ci --no-audit --no-fund
	touch $@

# The Python tests, then the VS Code extension's (under Node, one of them against the real server) and
# its packaging.
test: install $(NODE_STAMP) llama-src $(LLAMA_SERVER)
	HINDSIGHT_LLAMA_SRC=$(LLAMA_SRC) HINDSIGHT_LLAMA_SERVER=$(LLAMA_SERVER) $(PY) -m pytest -q
	cd $(VSCODE) && HINDSIGHT_PYTHON=$(abspath $(PY)) npm test --silent
	cd $(VSCODE) && npm run package --silent

# The VS Code extension as editors/vscode/hindsight-<version>.vsix (`code --install-extension` it).
vsix: $(NODE_STAMP)
	cd $(VSCODE) && npm run package --silent

clean:
	rm -rf $(VENV) build *.egg-info $(VSCODE)/node_modules $(VSCODE)/out $(VSCODE)/build $(VSCODE)/*.vsix
