# The two set-up commands of the README: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests drive for real: tshark as the differential oracle; tcpdump, iproute2,
# ethtool, openssl, curl, kdig (knot-dnsutils) and chromium for captures made by real clients in network namespaces;
# prometheus (promtool) and prometheus-alertmanager for the rules, scrapes and alert routing;
# clang with its sanitizer and libFuzzer runtimes, and llvm's coverage tools, for fuzz/;
# wireguard-go, wireguard-tools, strongSwan's charon and swanctl, and ping for VPNs between namespaces.
TEST_SYSTEM_PACKAGES := tshark tcpdump iproute2 ethtool openssl curl knot-dnsutils chromium prometheus prometheus-alertmanager tcpreplay \
	clang libclang-rt-14-dev llvm wireguard-go wireguard-tools strongswan-charon strongswan-swanctl iputils-ping
# Installed without what they recommend: wireguard-tools recommends a kernel image (for its
# WireGuard module); the tests run wireguard-go instead.
NO_RECOMMENDS := wireguard-tools

.PHONY: demo test bench bench-live fuzz fuzz-smoke system-deps clean

# The skim is compiled by pip install: a change to its C source rebuilds it.
$(VENV)/.runtime: pyproject.toml setup.py detector/_skim.c $(wildcard detector/skim_c/*.[ch])
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/tiktok-detector replay --policy examples/policy.toml \
		--events $(VENV)/demo-events.jsonl --alerts - pcaps/sample-office.pcapng
	@echo "events written to $(VENV)/demo-events.jsonl"

# Installs what the tests drive for real, when root and missing; tests that need a tool
# that is still missing skip with the reason.
system-deps:
	@missing=""; for pkg in $(TEST_SYSTEM_PACKAGES); do \
		dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing$$missing"; \
			full=""; bare=""; for pkg in $$missing; do case " $(NO_RECOMMENDS) " in \
				*" $$pkg "*) bare="$$bare $$pkg";; *) full="$$full $$pkg";; esac; done; \
			apt-get update -qq && export DEBIAN_FRONTEND=noninteractive \
			&& { [ -z "$$full" ] || apt-get install -y -qq $$full >/dev/null; } \
			&& { [ -z "$$bare" ] || apt-get install -y -qq --no-install-recommends $$bare >/dev/null; }; \
		else echo "not root: cannot install$$missing; tests that need them will skip"; fi; \
	fi

test: $(VENV)/.test system-deps
	$(BIN)/python -m pytest -q -n 2

# Fuzz every parser (fuzz/README.md): FUZZ_SECONDS each, two at a time; the results table
# in fuzz/README.md is rewritten. fuzz-smoke runs each briefly and records nothing (make test
# runs the same through tests/test_fuzz.py).
FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.test system-deps
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)
fuzz-smoke: $(VENV)/.test system-deps
	$(BIN)/python fuzz/run.py --smoke

# The speed benchmark (issue 7): a seeded 1 M-packet tap corpus, then the detector against
# tcpdump+BPF, tshark and ndpiReader on the same file, median of 3 rounds. Not a test.
# (The generator builds its packet templates with the fixture scripts, hence the test extras.)
BENCH_PACKAGES := tshark tcpdump libndpi-bin time
BENCH_CORPUS := benchmarks/corpus/tap-1m.pcap
$(BENCH_CORPUS): benchmarks/generate.py pcaps/make_fixtures.py pcaps/make_quic_fixtures.py signatures/tiktok.toml | $(VENV)/.test
	$(BIN)/python benchmarks/generate.py --out $@
bench: $(VENV)/.test $(BENCH_CORPUS)
	@$(MAKE) --no-print-directory system-deps TEST_SYSTEM_PACKAGES="$(BENCH_PACKAGES)"
	$(BIN)/python benchmarks/run.py --corpus $(BENCH_CORPUS)

# Live capture at tcpreplay's top speed into a veth (root): kernel drops and names found,
# for an upload-heavy mix and the tap corpus (benchmarks/live.py). Not a test.
bench-live: $(VENV)/.test $(BENCH_CORPUS)
	@$(MAKE) --no-print-directory system-deps TEST_SYSTEM_PACKAGES="tcpreplay iproute2 ethtool"
	$(BIN)/python benchmarks/live.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis fuzz/build fuzz/findings
