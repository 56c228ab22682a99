# The two set-up commands: `make run` and `make test`. Both install what they need first.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
# The sanitizer build (clang, ASan + UBSan, -Werror=thread-safety, the fuzz targets):
# docs/testing.md. `make test` runs its tests and each fuzz target for TEST_FUZZ_SECONDS;
# `make fuzz` runs each target for FUZZ_SECONDS.
SAN_BUILD_DIR ?= build-san
FUZZ_SECONDS ?= 60
TEST_FUZZ_SECONDS ?= 20
SAN_ENV := ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:detect_odr_violation=0 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/testing/lsan.supp \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The Debian packages the server alone builds with (the Dockerfile: `make build DEPS=deps-build`
# with tests and benchmarks configured off), then those the tests and benchmarks add.
DEB_BUILD_PACKAGES := build-essential cmake ninja-build pkg-config git ca-certificates \
  libabsl-dev libyaml-dev libcli11-dev libssl-dev libgrpc++-dev libprotobuf-dev \
  protobuf-compiler protobuf-compiler-grpc libboost-dev libnghttp2-dev libc-ares-dev \
  libspdlog-dev libfmt-dev
DEB_TEST_PACKAGES := libgtest-dev libgmock-dev libbenchmark-dev openssl clang libclang-rt-14-dev \
  etcd-server etcd-client dnsmasq-base nginx redis-server redis-tools wrk curl python3 \
  python3-matplotlib python3-yaml procps iproute2 chromium prometheus
DEB_PACKAGES := $(DEB_BUILD_PACKAGES) $(DEB_TEST_PACKAGES)
# What `configure` installs first: every package (deps), or the server's only (deps-build).
DEPS ?= deps

.PHONY: all deps deps-build console-deps configure build test test-unit test-integration run bench clean \
  format configure-san build-san test-san fuzz

all: build

deps deps-build: PACKAGES = $(if $(filter deps-build,$@),$(DEB_BUILD_PACKAGES),$(DEB_PACKAGES))
deps deps-build:
	@missing=$$(for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The browser test's npm package (playwright-core, pinned by tests/console/package-lock.json),
# with Node.js and npm from Debian when the machine has none. Chromium is a Debian package above.
console-deps:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends nodejs npm; }
	@[ -f tests/console/node_modules/playwright-core/package.json ] || \
	  (cd tests/console && npm ci --no-audit --no-fund)

configure: $(DEPS)
	@[ -f $(BUILD_DIR)/build.ninja ] || cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build console-deps
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) test-san
	./fuzz/run.sh $(SAN_BUILD_DIR) $(TEST_FUZZ_SECONDS)

test-unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

test-integration: build
	cd $(BUILD_DIR) && ctest --output-on-failure -L integration

configure-san: deps
	@[ -f $(SAN_BUILD_DIR)/build.ninja ] || cmake -S . -B $(SAN_BUILD_DIR) -G Ninja \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOODGATE_SANITIZE=ON -DFG_BUILD_BENCHMARKS=OFF \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++

build-san: configure-san
	cmake --build $(SAN_BUILD_DIR) -j $(JOBS)

# The unit and integration tests under ASan + UBSan (the bench smoke runs are left to the gcc
# build; tests labelled no-sanitizer say why in their CMakeLists.txt).
test-san: build-san
	cd $(SAN_BUILD_DIR) && $(SAN_ENV) ctest --output-on-failure -j $(JOBS) --timeout 900 \
	  -LE 'bench-smoke|no-sanitizer'

fuzz: build-san
	./fuzz/run.sh $(SAN_BUILD_DIR) $(FUZZ_SECONDS)

run: build
	./tools/run.sh $(BUILD_DIR)

bench: build
	@command -v npm >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q nodejs npm; }
	./bench/run_benchmarks.sh $(BUILD_DIR)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD_DIR) $(SAN_BUILD_DIR)
