# The front door: `make run` and `make test` on a fresh Debian machine. CMake does the building.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
# make fuzz: seconds per target; new inputs and crash files go to FUZZ_SCRATCH, never into the
# committed corpus (tests/fuzz/corpus).
FUZZ_SECONDS ?= 60
FUZZ_SCRATCH ?= /tmp/ebb-fuzz
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.cpp,%,$(wildcard tests/fuzz/fuzz_*.cpp))
CTEST_ARGS ?=
# Extra CMake options, e.g. -DEBB_COMMIT=<sha> where there is no .git (the image build).
CMAKE_ARGS ?=

# "file:package" pairs: a package is installed only when its file is missing, so what the machine
# already has (e.g. a Node.js from another source, whose npm conflicts with Debian's) is left alone.
# prometheus is there for promtool (the metrics test runs `promtool check metrics`); its postinst
# starts no server in a container: Docker's policy-rc.d denies it, and without one invoke-rc.d
# finds no runlevel and starts nothing.
DEPS := /usr/bin/g++:g++ /usr/bin/cmake:cmake /usr/bin/make:make /usr/bin/pkg-config:pkg-config \
        /usr/include/uv.h:libuv1-dev /usr/share/llhttp/llhttp.c:node-llhttp \
        /usr/include/yaml-cpp/yaml.h:libyaml-cpp-dev /usr/include/catch2/catch.hpp:catch2 \
        /usr/bin/python3:python3 /usr/bin/curl:curl /usr/bin/wrk:wrk /usr/sbin/nginx:nginx \
        /usr/sbin/haproxy:haproxy /usr/bin/go:golang-go /usr/bin/node:nodejs /usr/bin/npm:npm \
        /usr/bin/pgrep:procps /usr/bin/readelf:binutils /usr/bin/promtool:prometheus \
        /usr/bin/clang++-14:clang-14 /usr/lib/llvm-14/lib/libFuzzer.a:libfuzzer-14-dev \
        /usr/include/nghttp2/nghttp2.h:libnghttp2-dev /usr/bin/h2load:nghttp2-client \
        /usr/lib/python3/dist-packages/h2/__init__.py:python3-h2 \
        /usr/lib/python3/dist-packages/grpc/__init__.py:python3-grpcio \
        /usr/bin/slowhttptest:slowhttptest \
        /usr/bin/setarch:util-linux /usr/sbin/ip:iproute2
DEPS_CHECK ?= $(foreach d,$(DEPS),$(firstword $(subst :, ,$(d))))

.PHONY: all deps npm-deps build asan tsan fuzz static run test test-unit zero-downtime k8s-proof k8s-proof-clean bench slow-clients clean

all: build

deps:
	@missing=""; for d in $(DEPS); do f=$${d%%:*}; p=$${d#*:}; \
	  case " $(DEPS_CHECK) " in *" $$f "*) [ -e $$f ] || missing="$$missing $$p";; esac; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(MAKE) --no-print-directory -s npm-deps

# kubernetes-models carries the Kubernetes API schema used to validate deploy/ strictly, and
# @kubernetes-models/prometheus-operator the PodMonitor's; a checkout that lacks either installs.
npm-deps:
	@if [ -f tests/k8s/package.json ] && { [ ! -d tests/k8s/node_modules/kubernetes-models ] || \
	  [ ! -d tests/k8s/node_modules/@kubernetes-models/prometheus-operator ]; }; then \
	  echo "make deps: npm install in tests/k8s"; \
	  (cd tests/k8s && npm install --no-audit --no-fund --silent); fi

# The release build links libuv, yaml-cpp and the C++ runtime statically: the binary the tests
# run is the binary the image ships (only glibc stays dynamic).
build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DEBB_STATIC=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# ASan+UBSan, built with clang: ebb, the unit tests and the libFuzzer targets of tests/fuzz in one
# build dir (everything carries the fuzzer's coverage hooks; CMakeLists.txt, EBB_SANITIZE).
asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DCMAKE_C_FLAGS="-O1 -g1" \
	  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 -DEBB_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

# ThreadSanitizer: make test runs the e2e tests labelled tsan (data path, drains, metrics,
# reload) with workers: 4 against this binary (CMakeLists.txt, "ThreadSanitizer suite").
tsan: deps
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DCMAKE_C_FLAGS="-O1 -g1" \
	  -DEBB_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j$(JOBS) --target ebb

# Each target in turn for FUZZ_SECONDS over its corpus; the first crash stops the run and its
# reproducer's path is printed (replay: build-asan/fuzz_<target> <file>).
fuzz: asan
	@for t in $(FUZZ_TARGETS); do \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  python3 tests/fuzz/run_fuzz.py --seconds $(FUZZ_SECONDS) --scratch $(FUZZ_SCRATCH) \
	    $(ASAN_BUILD)/fuzz_$$t tests/fuzz/corpus/$$t || exit 1; done

static: build

run: build
	@python3 tests/demo/run_demo.py $(BUILD)/ebb config/ebb.demo.yaml

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit $(CTEST_ARGS)

# The whole suite, then the same suite and each fuzz target (its corpus, then a fixed number of
# executions from a fixed seed: repeatable, see tests/fuzz/README.md) under ASan+UBSan, then the
# threads under ThreadSanitizer (a subset at workers: 4, label tsan). The e2e tests spend most of
# their time waiting on the processes they drive, so six run at once on two cores; the
# zero-downtime proof, which loads both cores, runs alone (RUN_SERIAL).
CTEST_JOBS ?= 6
test: build asan tsan
	cd $(BUILD) && ctest --output-on-failure -j$(CTEST_JOBS) -LE bench $(CTEST_ARGS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(CTEST_JOBS) -L 'unit|e2e|fuzz' $(CTEST_ARGS)
	cd $(TSAN_BUILD) && ctest --output-on-failure -j$(CTEST_JOBS) -L tsan $(CTEST_ARGS)

# Run directly, not through CTest, so that every scenario's lines are printed as it ends.
zero-downtime: build
	EBB_BIN=$(abspath $(BUILD))/ebb EBB_ZD_RESTARTS=20 python3 -u tests/zero-downtime/test_rolling_deploy.py

# The same proof on a real single-node Kubernetes 1.20, built once from Debian's sources into
# /var/cache/ebb-k8s (13-19 min on 2 cores, then reused), inside a network namespace of its own;
# the script installs the Debian packages it needs. Root only. See tests/k8s-cluster/.
K8S_RESTARTS ?= 10
k8s-proof: build
	/usr/bin/python3 -u tests/k8s-cluster/k8s_proof.py --restarts $(K8S_RESTARTS)

# What a run killed outright (SIGKILL) left behind: processes, mounts, the namespace, state.
k8s-proof-clean:
	/usr/bin/python3 -u tests/k8s-cluster/k8s_proof.py --clean

# Not part of `make test`: ebb, nginx and HAProxy each pinned to CPU 0, the upstream and wrk on
# the rest, interleaved rounds; it exits 3 when the noise guard marked the run INVALID.
# Options: make bench BENCH_ARGS="--rounds 5 --seconds 10 --cells small-c50 --proxy-cpus 0-1 --other-cpus 2-3"
# (bench.py --help lists them all).
BENCH_ARGS ?=
bench: build
	python3 tests/bench/bench.py $(BUILD)/ebb --json $(BUILD)/bench.json $(BENCH_ARGS)

# Not part of `make test` either: slowhttptest's slow read, slow headers and slow body (1000
# connections each) against ebb in front of nginx, while a normal client times its requests; prints
# ebb's peak RSS and that client's p50/p99/failures per mode.
# Options: make slow-clients SLOW_ARGS="--conns 500 --seconds 20 --modes slow-read --max-memory N"
# (--mtu 1500: all of it in a network namespace of its own with a real network's MTU; root only).
SLOW_ARGS ?=
slow-clients: build
	python3 -u tests/bench/slow_clients.py $(abspath $(BUILD))/ebb $(SLOW_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
