# calico-rs — the two commands that matter are `make demo` and `make test` (see README.md).
# Every target installs what it needs first (Debian/apt), so a fresh clone works.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

# Debian packages the build, the tests and the demo use (g++: libFuzzer's sources for the
# fuzz step). Each is installed only if missing.
DEB_PACKAGES := \
	etcd-server etcd-client \
	iproute2 iptables nftables ipset conntrack \
	bird2 gobgpd frr \
	containernetworking-plugins \
	protobuf-compiler libprotobuf-dev \
	g++ \
	ca-certificates

.PHONY: all deps root-check build test lint fmt fuzz fuzz-deps demo bench bench-ipam bench-cni bench-felix bench-bgp clean help

all: build

help:
	@echo "make demo   - build and run the demo (installs what is missing)"
	@echo "make test   - install what is missing, build everything, run every test"
	@echo "make lint   - rustfmt check and clippy with warnings as errors"
	@echo "make fuzz   - coverage-guided fuzzing of the BGP decoders and session (FUZZ_SECONDS per target)"
	@echo "make bench  - benchmarks, each beside a reference measured in the same run (make bench-ipam: IPAM only)"
	@echo "make deps   - only install the Debian packages listed in DEB_PACKAGES"

# RUNLEVEL=1 below: packaged daemons (etcd, bird, frr) must not start on the host during
# installation; tests and the lab start their own, inside namespaces they create.
deps:
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install the Rust toolchain (https://rustup.rs) and retry" >&2; exit 1; }
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	command -v apt-get >/dev/null || { echo "error: missing packages:$$missing — this needs a Debian-based machine with apt-get; install them by other means and retry" >&2; exit 1; }; \
	sudo=""; if [ "$$(id -u)" != 0 ]; then command -v sudo >/dev/null || { echo "error: installing$$missing needs root (or sudo)" >&2; exit 1; }; sudo=sudo; fi; \
	echo "deps: installing$$missing"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	$$sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	echo "deps: done"

# Namespaces, veths, routes and kernel tables need root. As another user, cargo and the
# toolchain stay the user's, and only the programs that touch the kernel (the test binaries,
# the demo) run under sudo.
ifeq ($(shell id -u),0)
AS_ROOT :=
TEST_AS_ROOT :=
else
AS_ROOT := sudo -E
TEST_AS_ROOT := --config "target.'cfg(unix)'.runner = 'sudo -E'"
endif

root-check:
	@[ "$$(id -u)" = 0 ] || command -v sudo >/dev/null || { echo "error: the tests and the demo make network namespaces and need root: run as root, or install sudo" >&2; exit 1; }

build: deps
	$(CARGO) build --workspace --all-targets --locked

test: deps root-check
	$(CARGO) build --workspace --all-targets --locked
	$(CARGO) $(TEST_AS_ROOT) test --workspace --locked --no-fail-fast
	# felixd's policy suites again on the native nftables backend.
	FELIXD_TEST_NFTABLES=1 $(CARGO) $(TEST_AS_ROOT) test --locked -p felixd --test policy --test node --test netpol_conformance
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20

# libFuzzer on the BGP decoders and the session state machine (fuzz/, its own workspace). Each
# target starts from the seed conversations in fuzz/seeds and keeps what it finds in
# fuzz/corpus; a crash stops with the input saved under fuzz/artifacts. `-s none`: the code
# is safe Rust (unsafe is forbidden), so no sanitizer is needed, and stable rustc builds it.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := decode session
CARGO_FUZZ_VERSION := 0.13.2

fuzz-deps:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz@$(CARGO_FUZZ_VERSION)

fuzz: deps fuzz-deps
	cd fuzz && $(CARGO) fuzz build -s none
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t; log=target/fuzz-$$t.log; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: fuzz/$$log)"; \
		if ! $(CARGO) fuzz run -s none $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) >$$log 2>&1; then \
			tail -n 40 $$log; echo "fuzz: $$t failed; the input is under fuzz/artifacts/$$t" >&2; exit 1; \
		fi; \
		grep -E "^Done" $$log; \
	done

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

demo: deps root-check
	$(CARGO) build --locked -q -p calico-cni -p calico-ipam -p felixd -p birdd -p calicoctl -p calico-e2e --bins
	$(AS_ROOT) ./target/debug/demo

bench: bench-ipam bench-cni bench-felix bench-bgp

# IPAM: allocations through ipamd on a real etcd beside raw etcd compare-and-swap (README: figures).
bench-ipam: deps
	$(CARGO) build --release --locked -p calico-ipam -p calico-bench
	./target/release/bench-ipam

# CNI: ADD/DEL latency and churn of the calico plugin beside Debian's bridge + host-local chain.
bench-cni: deps
	$(CARGO) build --release --locked -p calico-cni -p calico-ipam -p calico-bench
	./target/release/bench-cni

# felixd: 1,000 policies over 1,000 endpoints beside raw iptables-restore / nft -f of the same
# rules, change latency through real traffic, memory, and pod throughput with and without.
bench-felix: deps
	$(CARGO) build --release --locked -p felixd -p calico-cni -p calico-ipam -p calico-bench
	./target/release/bench-felix

# birdd beside BIRD 2, FRR and GoBGP on one BGP feed from a Rust load generator, in network
# namespaces: 1->1 100k and 1M IPv4, 200k IPv6, 10 senders x the same 100k, 50 senders x 200,
# 200k into the kernel, churn. Convergence, withdrawal, CPU, memory, UPDATEs out (~5 min).
bench-bgp: deps
	$(CARGO) build --release --locked -p birdd -p calico-bench
	./target/release/bench-bgp

clean:
	$(CARGO) clean
