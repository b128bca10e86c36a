"""The sensor as an operator runs it: installed by `make install`, or from a private checkout.

``installed`` runs `make install` once for this module into a temporary prefix (its own
virtual environment, configuration and unit directories, and a system user made for the
run), the way deploy/install.sh installs into /opt/tiktok-detector; the tests then run that
copy as that user, who can read nothing of the checkout, and `make uninstall` removes it
at the end (the user is deleted too, which `make uninstall` leaves to the operator). The
module's tests share one worker (``xdist_group``, with ``--dist loadgroup`` in the
Makefile), so the install is built once per run.

The clone test copies the repository into a 0700 directory, as a checkout in root's home or
in a ``mktemp -d`` folder is, and runs the privilege drop from there: once the sensor has
become ``nobody`` it can import nothing more from the clone (nor, where the interpreter
lives in such a directory too, from the standard library), so it passes only if every
module it will use was imported before the drop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import netns
from netns import VethPair
from test_live import (
    LOG_TIMEOUT, POLICY, REPLAY_TIMEOUT, ROOT, SAMPLE, START_TIMEOUT, Live, comparable, ethernet_fixtures, proc_status,
    replay_events, send,
)

pytestmark = pytest.mark.xdist_group("install")

#: Bound on `make install` and `make uninstall`: a venv, a wheel build and the dependencies
#: (from pip's cache or the package index); about 20 s here.
INSTALL_TIMEOUT = 600.0
#: Bound on a command of the installed copy that is no capture (--version, a replay).
RUN_TIMEOUT = 60.0
CAP_NET_RAW = 1 << 13
#: Someone who exists on every Debian system and owns nothing: who a Python must work for.
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]


@dataclass(frozen=True)
class Installed:
    """A copy installed by `make install` with these settings."""

    prefix: Path
    sysconfdir: Path
    unitdir: Path
    user: str
    python: str

    @property
    def command(self) -> list[str]:
        return [str(self.prefix / "bin" / "tiktok-detector")]

    @property
    def policy(self) -> Path:
        return self.sysconfdir / "policy.toml"

    @property
    def unit(self) -> Path:
        return self.unitdir / "tiktok-detector.service"

    def as_user(self, *caps: str) -> list[str]:
        """setpriv arguments that run a command as the service user, with ``caps`` (e.g.
        "+net_raw") as its only inheritable and ambient capabilities, as systemd does."""
        argv = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups"]
        if caps:
            argv += [f"--inh-caps=-all,{','.join(caps)}", f"--ambient-caps={','.join(caps)}"]
        else:
            argv += ["--inh-caps=-all"]
        return argv

    def make_vars(self) -> list[str]:
        return [f"PYTHON={self.python}", f"PREFIX={self.prefix}", f"SYSCONFDIR={self.sysconfdir}",
                f"UNITDIR={self.unitdir}", f"SERVICE_USER={self.user}"]


def python_for_everyone() -> str | None:
    """A Python that an unprivileged user runs exactly as root does: this run's own base
    interpreter, unless it lives where only root can enter (pyenv in /root), then the
    system's. None when there is neither."""
    probe = ["-c", "import sys; print(sys.version)"]
    for candidate in (getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3"):
        if not os.path.exists(candidate):
            continue
        mine = subprocess.run([candidate, *probe], capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd="/")
        theirs = subprocess.run([*NOBODY, candidate, *probe], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                                cwd="/")
        if mine.returncode == 0 and mine.stdout == theirs.stdout:
            return candidate
    return None


def make(target: str, *variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target, *variables], cwd=ROOT, capture_output=True,
                          text=True, timeout=INSTALL_TIMEOUT)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    if os.geteuid() != 0:
        pytest.skip("needs root: make install creates a system user")
    for tool in ("setpriv", "useradd", "userdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed (Debian: util-linux, passwd)")
    python = python_for_everyone()
    if python is None:
        pytest.skip("no Python here that an unprivileged user can run (this one's directory is private, "
                    "and /usr/bin/python3 is missing)")
    # Outside pytest's own temporary directory, which only root may enter.
    base = Path(tempfile.mkdtemp(prefix="tkd-install-"))
    base.chmod(0o755)
    copy = Installed(base / "opt", base / "etc", base / "units", f"tkd-{os.getpid():x}", python)
    try:
        done = make("install", *copy.make_vars())
        assert done.returncode == 0, done.stdout + done.stderr
        yield copy
        removed = make("uninstall", *copy.make_vars())
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert not copy.prefix.exists() and not copy.unit.exists()
        assert copy.policy.exists()  # the operator's policy outlives the program
    finally:
        subprocess.run(["userdel", copy.user], capture_output=True, timeout=RUN_TIMEOUT)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pair() -> Iterator[VethPair]:
    reason = netns.unavailable("tcpreplay")
    if reason:
        pytest.skip(reason)
    with VethPair() as made:
        yield made


def test_the_installed_copy_runs_as_its_user_with_its_own_data(installed):
    """`tiktok-detector --version` says the same as the service user as it does as root
    (same Python, so nothing in the copy is out of the user's reach), and the signatures
    and example policy it names are the ones installed with it, not the checkout's."""
    as_root = subprocess.run(installed.command + ["--version"], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT, cwd="/", check=True)
    as_user = subprocess.run(installed.as_user() + installed.command + ["--version"], capture_output=True,
                             text=True, timeout=RUN_TIMEOUT, cwd="/")
    assert as_user.returncode == 0 and as_user.stdout == as_root.stdout, as_user.stderr
    facts = dict(line.split(" ", 1) for line in as_user.stdout.splitlines())
    assert facts["tiktok-detector"] == "0.1.0"
    signatures, examples = Path(facts["signatures"]), Path(facts["examples"])
    assert signatures.is_relative_to(installed.prefix) and examples.is_relative_to(installed.prefix)
    assert sorted(p.name for p in signatures.glob("*.toml")) == sorted(p.name for p in (ROOT / "signatures").glob("*.toml"))
    assert (examples / "policy.toml").read_bytes() == POLICY.read_bytes() == installed.policy.read_bytes()


def test_replay_as_the_service_user_gives_the_checkouts_events(installed, tmp_path):
    """The service user replays a capture (read from stdin: it may not open the test's
    files) with the installed policy and the shipped signatures: the events are the ones
    the checkout writes."""
    with open(SAMPLE, "rb") as capture:
        done = subprocess.run(installed.as_user() + installed.command + [
            "replay", "--no-progress", "--policy", str(installed.policy), "--events", "-", "-"],
            stdin=capture, capture_output=True, text=True, timeout=REPLAY_TIMEOUT, cwd="/")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events and comparable(events) == comparable(replay_events(tmp_path, [SAMPLE], "--policy", str(POLICY)))


def test_the_service_user_with_only_cap_net_raw_captures(installed, pair, tmp_path):
    """What the installed unit does: the installed copy started as the service user with
    CAP_NET_RAW as its only (ambient) capability opens its sockets, puts the interface in
    promiscuous mode (no CAP_NET_ADMIN needed for a packet socket's membership) and
    captures what replay finds; without the capability it says why in one line and exits
    with status 2."""
    uid = int(subprocess.run(["id", "-u", installed.user], capture_output=True, text=True, check=True).stdout)
    live = Live(pair, tmp_path, "--workers", "2", "--policy", str(installed.policy), stdout_events=True,
                prefix=installed.as_user("+net_raw"), command=installed.command, cwd=Path("/"))
    link = pair.run(pair.server, ["ip", "-d", "link", "show", pair.server.ifname], timeout=LOG_TIMEOUT, text=True)
    assert int(re.search(r"promiscuity (\d+)", link.stdout).group(1)) >= 1, link.stdout
    for pid in (live.proc.pid, *live.children()):
        status = proc_status(pid)
        assert int(status["Uid"].split()[1]) == uid and int(status["CapEff"], 16) == CAP_NET_RAW, status
    send(pair, [SAMPLE], "--pps", "5000")
    live.stop()
    assert comparable(live.events()) == comparable(replay_events(tmp_path, [SAMPLE], "--policy", str(POLICY)))
    refused = pair.run(pair.server, installed.as_user() + installed.command + [
        "live", "-i", pair.server.ifname, "--workers", "2"], timeout=START_TIMEOUT, check=False, text=True, cwd="/")
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if "permission" in line]
    assert errors == [f"tiktok-detector: {pair.server.ifname}: you don't have permission to capture on that "
                      "device (run as root or with CAP_NET_RAW)"], refused.stderr


def test_the_installed_copy_started_as_root_drops_to_the_service_user(installed, pair, tmp_path):
    """The installed copy started as root with --user and two workers: once capturing,
    writer and workers run as the service user with no capability left, and capture what
    replay finds."""
    uid = int(subprocess.run(["id", "-u", installed.user], capture_output=True, text=True, check=True).stdout)
    live = Live(pair, tmp_path, "--workers", "2", "--user", installed.user, "--policy", str(installed.policy),
                command=installed.command, cwd=Path("/"))
    workers = live.children()
    assert len(workers) == 2
    for pid in (live.proc.pid, *workers):
        status = proc_status(pid)
        assert status["Uid"].split() == [str(uid)] * 4 and int(status["CapPrm"], 16) == 0, status
    send(pair, [SAMPLE], "--pps", "5000")
    live.stop()
    assert comparable(live.events()) == comparable(replay_events(tmp_path, [SAMPLE], "--policy", str(POLICY)))


def test_the_installed_unit_passes_systemd_analyze_verify(installed):
    """The unit as `make install` wrote it: systemd's own checker accepts it (it also
    checks that the command it names exists and is executable), and it runs the installed
    copy as the service user with CAP_NET_RAW as its only capability."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("`systemd-analyze` is not installed (Debian: systemd)")
    checked = subprocess.run(["systemd-analyze", "verify", str(installed.unit)], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    settings = [line for line in installed.unit.read_text().splitlines() if line and not line.startswith("#")]
    assert f"ExecStart={installed.command[0]} live $TIKTOK_DETECTOR_OPTS \\" in settings
    assert f"    --policy {installed.policy} \\" in settings
    for setting in (f"User={installed.user}", f"Group={installed.user}", "AmbientCapabilities=CAP_NET_RAW",
                    "CapabilityBoundingSet=CAP_NET_RAW", "NoNewPrivileges=yes"):
        assert setting in settings


def test_make_install_again_upgrades_and_keeps_the_operators_policy(installed):
    """The upgrade the README describes: `make install` over an installed copy builds the
    environment anew and leaves the policy the operator edited as it is."""
    edited = installed.policy.read_text() + "# edited by the operator\n"
    installed.policy.write_text(edited)
    before = installed.unit.read_text()
    done = make("install", *installed.make_vars())
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed.policy.read_text() == edited and installed.unit.read_text() == before
    again = subprocess.run(installed.as_user() + installed.command + ["signatures", "match", "www.tiktok.com"],
                           capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd="/")
    assert again.returncode == 0 and "www.tiktok.com" in again.stdout, again.stderr


def test_install_refuses_a_python_the_service_user_cannot_run(tmp_path):
    """A Python kept where only root can enter (here a link in a 0700 directory, as pyenv
    in /root is) cannot serve a system user: `make install` says so in one line before it
    builds anything."""
    if os.geteuid() != 0:
        pytest.skip("needs root: make install refuses to run without it")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python3").symlink_to(os.path.realpath(sys.executable))
    prefix = tmp_path / "opt"
    done = make("install", f"PYTHON={private / 'python3'}", f"PREFIX={prefix}", f"SYSCONFDIR={tmp_path}/etc",
                f"UNITDIR={tmp_path}/units", "SERVICE_USER=nobody")
    assert done.returncode != 0
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("install.sh:")]
    assert line.startswith(f"install.sh: nobody runs {private / 'python3'} as Python ")
    assert line.endswith("install with a Python every user can read, e.g. make install PYTHON=/usr/bin/python3")
    assert not prefix.exists()


def test_install_refuses_a_prefix_that_is_not_its_own(tmp_path):
    """`make install` into a directory that holds something else (PREFIX=/usr/local by
    mistake) stops with one line before touching it: it would be cleared."""
    if os.geteuid() != 0:
        pytest.skip("needs root: make install refuses to run without it")
    (tmp_path / "precious").write_text("keep me")
    done = make("install", f"PREFIX={tmp_path}", f"SYSCONFDIR={tmp_path}/etc", f"UNITDIR={tmp_path}/units")
    assert done.returncode != 0
    assert f"install.sh: {tmp_path} exists and is not a virtual environment: choose another PREFIX" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows one (instant; the file is then reached
    through the private directory), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def test_a_clone_in_a_private_directory_drops_privileges(pair, tmp_path):
    """The repository cloned into a 0700 directory (with a space in its path, as a home
    folder may have) and started there as root with --user nobody: the process runs the
    clone's code, and after the drop, when nothing of the clone is readable any more, its
    workers still capture every fixture and the writer still writes what replay finds,
    serves metrics, pushes alerts and refuses, in one line, a reload of files it can no
    longer read."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    if shutil.which("curl") is None:
        pytest.skip("`curl` is not installed (Debian: curl)")
    private = tmp_path / "private dir"
    private.mkdir(mode=0o700)
    clone = private / "tiktok-detector"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True,
                   capture_output=True, timeout=RUN_TIMEOUT)
    # What `make` would build there, without the minutes it takes: the compiled skim, and
    # this run's virtual environment (the libraries) linked into the private directory.
    import detector._skim

    skim = Path(detector._skim.__file__)
    shutil.copy2(skim, clone / "detector" / skim.name)
    python, venv = Path(sys.executable), Path(sys.prefix)
    if sys.prefix != sys.base_prefix:
        python = private / "venv" / python.relative_to(venv)
        venv = shutil.copytree(venv, private / "venv", symlinks=True, copy_function=link_or_copy)
    unreadable = subprocess.run([*NOBODY, "ls", str(clone)], capture_output=True, timeout=RUN_TIMEOUT)
    assert unreadable.returncode != 0  # the point: nobody cannot read the clone
    received = tmp_path / "alertmanager.jsonl"
    alertmanager = pair.spawn(pair.server, [sys.executable, "-c", RECEIVER, str(received), str(ALERTMANAGER_PORT)])
    wait_for_http(pair, f"http://127.0.0.1:{ALERTMANAGER_PORT}/")
    policy = clone / "examples" / "policy.toml"
    live = Live(pair, tmp_path, "--workers", "2", "--user", "nobody", "--policy", str(policy),
                "--metrics-addr", f"127.0.0.1:{METRICS_PORT}", "--alertmanager", f"http://127.0.0.1:{ALERTMANAGER_PORT}/",
                command=[str(python), "-m", "detector"], cwd=clone)
    workers = live.children()
    for pid in (live.proc.pid, *workers):
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert str(clone / "detector" / skim.name) in maps  # the clone's code, not the checkout's
        assert pid == live.proc.pid or f"{venv}/lib/" in maps  # and the private libraries (a worker's pcapy)
        assert proc_status(pid)["Uid"].split()[1] == "65534"
    files = ethernet_fixtures()  # every extractor: DNS over UDP and TCP, TLS, QUIC, HTTP, DHCP
    send(pair, files, "--pps", "5000")
    # The writer's side after the drop: the metrics endpoint, the push to Alertmanager, and
    # a reload, which the files' new owner can no longer read: refused, the set kept.
    metrics = wait_for_http(pair, f"http://127.0.0.1:{METRICS_PORT}/metrics",
                            until=re.compile(r'alertmanager_alerts_total\{result="sent"\} [1-9]'))
    assert re.search(r"^tiktok_detector_build_info\{", metrics, re.M), metrics
    live.signal(signal.SIGHUP)
    live.wait_log("reload refused, keeping the loaded set")
    log = live.stop()
    pair.stop(alertmanager)
    assert "Traceback" not in log, log
    assert "Permission denied" in log.split("reload refused", 1)[1].splitlines()[0]
    assert comparable(live.events()) == comparable(replay_events(tmp_path, files, "--policy", str(POLICY)))
    pushed = [alert for line in received.read_text().splitlines() for alert in json.loads(line)]
    assert pushed and all(alert["labels"]["device"] for alert in pushed)


#: A stand-in for Alertmanager's API v2: each POST body is one line of the file named by
#: argv[1]; it answers 200, as Alertmanager does to alerts it accepted.
RECEIVER = """
import http.server, sys
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[1], "ab") as out:
            out.write(body + b"\\n")
        self.send_response(200)
        self.end_headers()
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Receiver).serve_forever()
"""
ALERTMANAGER_PORT = 9093
METRICS_PORT = 9464


def wait_for_http(pair: VethPair, url: str, until: re.Pattern | None = None) -> str:
    """The body of a GET of ``url`` from the server namespace, once it answers (and its body
    matches ``until``); fails after START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        got = pair.run(pair.server, ["curl", "-sf", "--max-time", "2", url], timeout=LOG_TIMEOUT, check=False, text=True)
        if got.returncode == 0 and (until is None or until.search(got.stdout)):
            return got.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer{'' if until is None else ' with ' + until.pattern}: {got.stdout[-2000:]}")
        time.sleep(0.1)
