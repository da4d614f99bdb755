# The front door: `make run` and `make test` on a fresh Debian machine. CMake does the building.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
CTEST_ARGS ?=

APT_PACKAGES := g++ cmake make pkg-config libuv1-dev node-llhttp libyaml-cpp-dev catch2 \
                python3 curl wrk nginx haproxy golang-go nodejs npm procps
# Each entry is "command-or-file:package": only what is missing is installed.
DEPS_CHECK := /usr/bin/g++ /usr/bin/cmake /usr/bin/pkg-config /usr/include/uv.h \
              /usr/share/llhttp/llhttp.c /usr/include/yaml-cpp/yaml.h /usr/include/catch2/catch.hpp \
              /usr/bin/python3 /usr/bin/curl /usr/bin/wrk /usr/sbin/nginx /usr/sbin/haproxy \
              /usr/bin/go /usr/bin/node /usr/bin/npm /usr/bin/pgrep

.PHONY: all deps build asan static run test test-unit test-e2e test-asan zero-downtime bench clean

all: build

deps:
	@missing=0; for f in $(DEPS_CHECK); do [ -e $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "make deps: installing missing packages"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi
	@$(MAKE) --no-print-directory -s npm-deps

# kubernetes-models carries the Kubernetes API schema used to validate deploy/ strictly.
npm-deps:
	@if [ -f tests/k8s/package.json ] && [ ! -d tests/k8s/node_modules ]; then \
	  echo "make deps: npm install in tests/k8s"; \
	  (cd tests/k8s && npm install --no-audit --no-fund --silent); fi

# The release build links libuv, yaml-cpp and the C++ runtime statically: the binary the tests
# run is the binary the image ships (only glibc stays dynamic).
build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DEBB_STATIC=ON >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DCMAKE_C_FLAGS="-O1 -g1" \
	  -DEBB_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

static: build

run: build
	@python3 tests/demo/run_demo.py $(BUILD)/ebb config/ebb.demo.yaml

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit $(CTEST_ARGS)

# The whole suite, then the same suite under ASan+UBSan.
test: build asan
	cd $(BUILD) && ctest --output-on-failure -j2 -LE bench $(CTEST_ARGS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j2 -L 'unit|e2e' $(CTEST_ARGS)

zero-downtime: build
	cd $(BUILD) && EBB_ZD_RESTARTS=20 ctest --output-on-failure -L zero-downtime

bench: build
	python3 tests/bench/bench.py $(BUILD)/ebb

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
