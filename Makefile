# Thin wrapper around meson: every target does its own set-up first.
#
#   make run     install what is missing, build, run the default demo
#   make test    install what is missing, build, run every test suite
#   make help    list the targets
#
# Knobs: BUILD=<dir> (default build), MESON_ARGS=<extra meson setup args>.

BUILD ?= build
MESON_ARGS ?=
SANITIZE_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 45
FUZZ_RP_SECONDS ?= 15
FUZZ_MULTIFD_SECONDS ?= 15
FUZZ_SMALL_SECONDS ?= 10
TORTURE_RUNS ?= 12
TORTURE_SEED ?=
TORTURE_JOBS ?= 1
TORTURE_ARGS ?=

.PHONY: all help setup build run test bench bench-vs-qemu bench-channels test-asan test-tsan valgrind clean
.PHONY: fuzz fuzz-build embed-check torture model-agreement

all: build

help:
	@echo "make run        set up, build, run a live migration (migram-sim) and print its report"
	@echo "make test       set up, build, run every test suite but model-agreement (meson test)"
	@echo "make bench      set up, build, run the benchmarks (meson test --benchmark)"
	@echo "make bench-vs-qemu  QEMU 7.2 and migram-sim interleaved on the same guest (VS_QEMU_ARGS=...)"
	@echo "make bench-channels data channels 1/2/4 against raw loopback TCP, interleaved (CHANNELS_ARGS=...)"
	@echo "make model-agreement  model mode against real mode (own step in CI)"
	@echo "make test-asan  the suites again under AddressSanitizer + UBSan ($(SANITIZE_BUILD)/)"
	@echo "make test-tsan  the concurrency suites under ThreadSanitizer ($(TSAN_BUILD)/)"
	@echo "make valgrind   the concurrency suites under valgrind (memcheck)"
	@echo "make embed-check install into $(BUILD)/stage, build an embedder's program and examples/vmm.c with only pkg-config's flags, run them"
	@echo "make fuzz       build, run the receiver fuzzer for FUZZ_SECONDS (45), the return-path one for FUZZ_RP_SECONDS (15), the data-channel one for FUZZ_MULTIFD_SECONDS (15), verify, handshake, snapshot and checkpoint for FUZZ_SMALL_SECONDS (10) each"
	@echo "make fuzz-build only build the fuzzer and its seed corpus ($(FUZZ_BUILD)/)"
	@echo "make torture    TORTURE_RUNS (12) random migrations with injected faults, from TORTURE_SEED (random; printed)"
	@echo "make setup      only install missing Debian packages"
	@echo "make clean      remove the build directories"

setup:
	@./scripts/setup.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_ARGS)

build: setup $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	@echo "migram-sim: a 2 GiB guest, hot-set writes at 200 MB/s, precopy with"
	@echo "postponed clear over loopback TCP between two processes"
	./$(BUILD)/sim/migram-sim --ram 2G --workload hotset --dirty-rate 200M/s \
		--transport tcp:127.0.0.1:47700 \
		--json $(BUILD)/run.json --plot $(BUILD)/run.svg
	@echo "statistics and timeline: $(BUILD)/run.json"

test: build
	meson test -C $(BUILD) --print-errorlogs --no-suite model-agreement

# Model mode against real mode (docs/simulator-model.md): real migrations
# timed against the model, so run apart from the unit suites.
model-agreement: build
	meson test -C $(BUILD) --print-errorlogs --suite model-agreement \
		--logbase testlog-model-agreement

bench: build
	meson test -C $(BUILD) --benchmark --verbose

# QEMU 7.2 against migram-sim, interleaved, same guest (docs/performance.md).
# Nothing else may run meanwhile.  Skips with the reason without QEMU,
# /dev/kvm or the peer harness (../shared/peers/qemu, $$MIGRAM_QEMU_PEERS).
VS_QEMU_ARGS ?=
bench-vs-qemu: build
	python3 bench/vs-qemu.py --sim $(BUILD)/sim/migram-sim $(VS_QEMU_ARGS)

# Multi-channel transfer against raw loopback TCP (docs/performance.md).
bench-channels: build
	python3 bench/channels.py --sim $(BUILD)/sim/migram-sim \
		--raw $(BUILD)/bench/raw-tcp $(CHANNELS_ARGS)

test-asan: setup
	@[ -f $(SANITIZE_BUILD)/build.ninja ] || meson setup $(SANITIZE_BUILD) \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fno-sanitize-recover=all $(MESON_ARGS)
	ninja -C $(SANITIZE_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(SANITIZE_BUILD) --print-errorlogs --no-suite gates \
			--no-suite model-agreement \
			--no-suite examples

test-tsan: setup
	@[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) \
		-Db_sanitize=thread -Db_lundef=false $(MESON_ARGS)
	ninja -C $(TSAN_BUILD)
	G_SLICE=always-malloc TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:history_size=7:suppressions=$(CURDIR)/tests/tsan.supp \
		meson test -C $(TSAN_BUILD) --print-errorlogs --suite concurrency

valgrind: build
	meson test -C $(BUILD) --print-errorlogs --suite concurrency \
		--timeout-multiplier 10 \
		--wrap='valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite'

# An embedder's program against the installed library, with nothing but
# `pkg-config --cflags --libs migram` (scripts/embed-check.sh).
# Then examples/vmm.c, the example KVM VMM, the same way (skipped without
# /dev/kvm).
embed-check: build
	./scripts/embed-check.sh $(BUILD) examples/vmm.c

# libFuzzer + ASan + UBSan with clang, outside meson (docs/fuzzing.md).
fuzz-build: setup
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/build.sh

fuzz: fuzz-build
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_SECONDS) receiver
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_RP_SECONDS) return-path
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_MULTIFD_SECONDS) multifd
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_SMALL_SECONDS) verify
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_SMALL_SECONDS) handshake
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_SMALL_SECONDS) snapshot
	BUILD_FUZZ=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_SMALL_SECONDS) checkpoint

# Random migrations with injected faults, each judged by an oracle
# (docs/reliability.md).  One printed seed replays one scenario:
# make torture TORTURE_RUNS=1 TORTURE_SEED=S.
torture: build
	python3 tests/torture/torture.py --sim $(BUILD)/sim/migram-sim \
		--runs $(TORTURE_RUNS) $(if $(TORTURE_SEED),--seed $(TORTURE_SEED)) \
		--jobs $(TORTURE_JOBS) $(TORTURE_ARGS)

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD) $(TSAN_BUILD)
