# mosvm: build, images, tests, benchmarks and the demo.
#
#   make demo    every image in a micro-VM beside its native run; a job moved across three hosts
#   make test    unit and end-to-end tests (needs /dev/kvm)
#   make bench   measure and write BENCHMARKS.md
#   make man     man pages into target/man
#
# Every target installs what it needs (musl-tools, the static glibc, the
# Rust dependencies) on a fresh Debian machine.

SHELL := /bin/bash
CARGO ?= cargo
BUILD := images/build
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo)

IMAGES := hello cpu mem files crash
GUESTS := $(basename $(notdir $(wildcard tests/guest/*.c)))
BENCH_GUESTS := $(basename $(notdir $(wildcard bench/guest/*.c)))
# Dynamically linked glibc builds (gcc's default), and Go programs.
DYN_GUESTS := $(basename $(notdir $(wildcard tests/guest/dyn/*.c)))
GO_GUESTS := $(basename $(notdir $(wildcard tests/go/*.go)))
MUSL_CFLAGS := -static -O2 -Wall -Wno-array-bounds -Wno-infinite-recursion

IMAGE_BINS := $(IMAGES:%=$(BUILD)/%) $(GUESTS:%=$(BUILD)/tests/%) $(BENCH_GUESTS:%=$(BUILD)/bench/%) \
	$(BUILD)/tests/hello-glibc $(BUILD)/tests/hello-glibc-pie $(BUILD)/tests/hello-dynamic \
	$(BUILD)/tests/signals-glibc $(BUILD)/tests/threads-glibc $(BUILD)/tests/procs-glibc $(BUILD)/tests/clocks-glibc \
	$(BUILD)/tests/not-elf $(BUILD)/tests/script.sh \
	$(DYN_GUESTS:%=$(BUILD)/tests/dyn/%) $(GO_GUESTS:%=$(BUILD)/tests/go/%)

.PHONY: fuzz faults load all deps build images test bench demo man clean fmt lint

all: build images

deps: .deps-stamp
.deps-stamp:
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first"; exit 1; }
	@need=""; \
	command -v musl-gcc >/dev/null || need="$$need musl-tools"; \
	[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need="$$need libc6-dev"; \
	command -v gcc >/dev/null || need="$$need gcc"; \
	[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically' || need="$$need busybox-static"; \
	command -v file >/dev/null || need="$$need file"; \
	[ -x /usr/bin/python3 ] || need="$$need python3"; \
	command -v go >/dev/null || need="$$need golang-go"; \
	for t in bash perl gzip tar find md5sum bzip2 make file sqlite3 jq; do command -v $$t >/dev/null || need="$$need $$t"; done; \
	command -v xz >/dev/null || need="$$need xz-utils"; \
	command -v ip >/dev/null || need="$$need iproute2"; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$need; \
	fi
	$(CARGO) fetch --locked 2>/dev/null || $(CARGO) fetch
	@touch $@

build: deps
	$(CARGO) build --release --workspace

images: deps $(IMAGE_BINS)

$(BUILD)/%: images/src/%.c
	@mkdir -p $(@D)
	musl-gcc $(MUSL_CFLAGS) -o $@ $<

$(BUILD)/tests/%: tests/guest/%.c
	@mkdir -p $(@D)
	musl-gcc $(MUSL_CFLAGS) -o $@ $<

$(BUILD)/bench/%: bench/guest/%.c
	@mkdir -p $(@D)
	musl-gcc $(MUSL_CFLAGS) -o $@ $<

$(BUILD)/tests/dyn/%: tests/guest/dyn/%.c
	@mkdir -p $(@D)
	gcc -O2 -Wall -pthread -o $@ $<

# Go builds its own runtime in: static unless cgo is asked for.
$(BUILD)/tests/go/%: tests/go/%.go
	@mkdir -p $(@D)
	cd tests/go && GOCACHE=$(CURDIR)/target/go-cache GOPATH=$(CURDIR)/target/go GO111MODULE=off GOFLAGS=-mod=mod \
		go build -o $(CURDIR)/$@ $(notdir $<)

# glibc builds: static, static-pie, and a dynamic one that must be refused.
$(BUILD)/tests/hello-glibc: images/src/hello.c
	@mkdir -p $(@D)
	gcc -static -O2 -o $@ $<
$(BUILD)/tests/hello-glibc-pie: images/src/hello.c
	@mkdir -p $(@D)
	gcc -static-pie -fPIE -O2 -o $@ $<
$(BUILD)/tests/hello-dynamic: images/src/hello.c
	@mkdir -p $(@D)
	gcc -O2 -o $@ $<
$(BUILD)/tests/signals-glibc: tests/guest/signals.c
	@mkdir -p $(@D)
	gcc -static -O2 -o $@ $<
$(BUILD)/tests/threads-glibc: tests/guest/threads.c
	@mkdir -p $(@D)
	gcc -static -O2 -pthread -o $@ $<
$(BUILD)/tests/procs-glibc: tests/guest/procs.c
	@mkdir -p $(@D)
	gcc -static -O2 -o $@ $<
$(BUILD)/tests/clocks-glibc: tests/guest/clocks.c
	@mkdir -p $(@D)
	gcc -static -O2 -o $@ $<
$(BUILD)/tests/not-elf:
	@mkdir -p $(@D)
	printf 'this is not a program\n' > $@ && chmod +x $@
$(BUILD)/tests/script.sh:
	@mkdir -p $(@D)
	printf '#!/bin/sh\necho hi\n' > $@ && chmod +x $@

test: build images
	$(CARGO) test --release --workspace

bench: build images
	@# QEMU is the anchor the migration figures are measured against.
	@command -v qemu-system-x86_64 >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-system-x86; }
	$(CARGO) run --release -p mosvm-bench --bin bench -- --out BENCHMARKS.md
	@{ echo; echo "## Balancer: MOSIX table 1 reproduced (simulated)"; echo; \
	  echo '`cargo run --release -p balancer --example table1`'; echo; echo '```'; \
	  $(CARGO) run --release -q -p balancer --example table1; echo '```'; echo; \
	  echo "## Balancer at scale (simulated)"; echo; \
	  echo '`cargo run --release -p balancer --example scale`'; echo; echo '```'; \
	  $(CARGO) run --release -q -p balancer --example scale; echo '```'; } >> BENCHMARKS.md

# Fuzzing (README, "Fuzzing"): every parser target under libFuzzer for
# FUZZ_SECONDS each, from the project's seeds and the corpus kept so far;
# a finding stops the run and is kept in fuzz/regressions/TARGET/, which
# the stable runs of make test replay every time. Then the system-call
# fuzzer (a real job making random calls) for as long.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := migration_stream deputy_proto peer_wire balancer_wire elf_loader
fuzz: build images
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	MOSVM_FUZZ_CORPUS=$(CURDIR)/target/fuzz-corpus $(CARGO) test --release -q -p mosvm-tests --test fuzz write_corpus -- --ignored
	cd fuzz && cargo +nightly fuzz build --release
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/regressions/$$t fuzz/target/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s (log: target/fuzz-$$t.log)"; \
	  status=0; (cd fuzz && cargo +nightly fuzz run --release $$t target/corpus/$$t ../target/fuzz-corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=regressions/$$t/ -print_final_stats=1) \
	    > target/fuzz-$$t.log 2>&1 || status=$$?; \
	  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)' target/fuzz-$$t.log || true; \
	  [ $$status = 0 ] || { echo "fuzz $$t found something: see target/fuzz-$$t.log and fuzz/regressions/$$t/"; exit 1; }; \
	done
	MOSVM_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --release -p mosvm-tests --test fuzz system_calls -- --nocapture

# The fault matrix (tests/faults.rs): every phase of a move x every
# fault; the table goes into RELIABILITY.md. make test runs a subset.
faults: build images
	MOSVM_FAULTS_REPORT=$(CURDIR)/RELIABILITY.md $(CARGO) test --release -p mosvm-tests --test faults fault_matrix -- --ignored --exact --nocapture

# 200 jobs at once across three emulated hosts (tests/load.rs); the
# figures go into RELIABILITY.md. make test runs 30.
load: build images
	MOSVM_LOAD_REPORT=$(CURDIR)/RELIABILITY.md $(CARGO) test --release -p mosvm-tests --test load two_hundred_jobs_at_once -- --ignored --exact --nocapture

demo: build images
	./scripts/demo.sh

# Man pages for mosvm and each of its commands, from the CLI definition.
man: build
	target/release/mosvm man --dir target/man
	@echo "man pages in target/man: man -l target/man/mosvm.1"

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

clean:
	rm -rf $(BUILD) .deps-stamp
	$(CARGO) clean
