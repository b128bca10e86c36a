# The two set-up commands of the README: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests drive for real: tshark as the differential oracle; tcpdump, iproute2,
# ethtool, openssl, curl, kdig (knot-dnsutils) and chromium for captures made by real clients in network namespaces;
# prometheus (promtool) and prometheus-alertmanager for the rules, scrapes and alert routing;
# clang with its sanitizer and libFuzzer runtimes, and llvm's coverage tools, for fuzz/.
TEST_SYSTEM_PACKAGES := tshark tcpdump iproute2 ethtool openssl curl knot-dnsutils chromium prometheus prometheus-alertmanager tcpreplay \
	dnsmasq-base dhcpcd-base \
	clang libclang-rt-14-dev llvm

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
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
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
