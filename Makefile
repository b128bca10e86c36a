# The two set-up commands of the README: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests drive for real: tshark as the differential oracle; tcpdump, iproute2,
# ethtool, openssl, curl, kdig (knot-dnsutils) and chromium for captures made by real clients in network namespaces;
# prometheus (promtool) and prometheus-alertmanager for the rules, scrapes and alert routing;
# clang with its sanitizer and libFuzzer runtimes, and llvm's coverage tools, for fuzz/;
# systemd (systemd-analyze), git and python3-venv for the installed copy (tests/test_install.py);
# rsyslog (with its OpenSSL driver) receives the syslog output over UDP, TCP and TLS;
# bind9-utils (named-checkzone) and unbound for the exported RPZ zone (the test starts its own
# Unbound on 127.0.0.1; on a host with systemd the package also enables a system resolver);
# wireguard-go, wireguard-tools, strongSwan's charon and swanctl, and ping for VPNs between namespaces;
# dnsmasq-base and dhcpcd-base for real DHCPv4/DHCPv6 clients and leases (tests/test_identity_real_clients.py).
TEST_SYSTEM_PACKAGES := tshark tcpdump iproute2 ethtool openssl curl knot-dnsutils chromium prometheus prometheus-alertmanager tcpreplay \
	rsyslog rsyslog-openssl bind9-utils unbound dnsmasq-base dhcpcd-base \
	clang libclang-rt-14-dev llvm systemd git python3-venv \
	wireguard-go wireguard-tools strongswan-charon strongswan-swanctl iputils-ping
# Installed without what they recommend: wireguard-tools recommends a kernel image (for its
# WireGuard module); the tests run wireguard-go instead.
NO_RECOMMENDS := wireguard-tools

.PHONY: demo test bench bench-live fuzz fuzz-smoke system-deps clean install uninstall signatures

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

# Refresh the signatures from local copies of the lists they cite (docs/signature-update.md):
# shows the review; ACCEPT adds reviewed additions, VERSION writes the files with that version.
signatures: $(VENV)/.runtime
	@test -n "$(UPSTREAM)" || { echo "make signatures UPSTREAM=DIR [ACCEPT=review.toml VERSION=YYYY-MM-DD]"; exit 2; }
	$(BIN)/tiktok-detector signatures update "$(UPSTREAM)" $(if $(ACCEPT),--accept "$(ACCEPT)") \
		$(if $(VERSION),--set-version "$(VERSION)" --write)

# Installs what the tests drive for real, when root and missing; tests that need a tool
# that is still missing skip with the reason.
system-deps:
	@missing=""; for pkg in $(TEST_SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; done; \
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

# loadgroup: the tests of one xdist_group share a worker (tests/test_install.py: one install).
test: $(VENV)/.test system-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

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

# The installed sensor (README, "Operating a sensor"; deploy/install.sh says what each step
# does): a wheel of this checkout in a virtual environment of its own at PREFIX, a system
# user, the policy in SYSCONFDIR, the systemd unit in UNITDIR. Run again to upgrade.
PREFIX ?= /opt/tiktok-detector
SYSCONFDIR ?= /etc/tiktok-detector
UNITDIR ?= /etc/systemd/system
SERVICE_USER ?= tiktok-detector
INSTALL_VARS = PYTHON="$(PYTHON)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" UNITDIR="$(UNITDIR)" \
	SERVICE_USER="$(SERVICE_USER)"
install:
	$(INSTALL_VARS) sh deploy/install.sh install
uninstall:
	$(INSTALL_VARS) sh deploy/install.sh uninstall

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis fuzz/build fuzz/findings
