"""The exported RPZ zone in the real DNS servers: BIND's ``named-checkzone`` (bind9-utils)
accepts it, and a real Unbound started here on 127.0.0.1 loads it as a response policy zone
and answers NXDOMAIN for TikTok names while answering other names normally.

Unbound answers from two authoritative zones of its own (``auth-zone`` with
``for-upstream``, so the answers go through the iterator, where RPZ applies): tiktok.com,
tiktokv.com and quad9.net with names of each kind, and nottiktok.com, a name the suffix entry
``tiktok.com`` must not cover. No packet leaves the host; Unbound is stopped at the end.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from detector.match import load_signatures
from detector.sigformats import export_signatures

ROOT = Path(__file__).resolve().parent.parent
NAMED_CHECKZONE = shutil.which("named-checkzone")
UNBOUND = shutil.which("unbound") or ("/usr/sbin/unbound" if Path("/usr/sbin/unbound").exists() else None)
CHECKCONF = shutil.which("unbound-checkconf") or (
    "/usr/sbin/unbound-checkconf" if Path("/usr/sbin/unbound-checkconf").exists() else None)

#: Zones Unbound serves itself, standing in for the Internet: name -> (label, address) records.
UPSTREAM = {
    "tiktok.com": {"@": "198.18.0.12", "www": "198.18.0.11"},
    "tiktokv.com": {"api16-normal-c-useast1a": "198.18.0.21"},
    "quad9.net": {"dns": "198.18.0.31", "www": "198.18.0.32", "x.dns": "198.18.0.33"},
    "nottiktok.com": {"@": "198.18.0.10", "www": "198.18.0.13"},
}


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rpz")
    exported = export_signatures(load_signatures(ROOT / "signatures"), "rpz", zone="tiktok.rpz")
    path = directory / "tiktok.rpz.zone"
    path.write_text(exported.files["tiktok.rpz.zone"], encoding="utf-8")
    return path


@pytest.mark.skipif(NAMED_CHECKZONE is None, reason="named-checkzone is not installed (Debian package bind9-utils)")
def test_named_checkzone_accepts_the_exported_zone(zone):
    done = subprocess.run([NAMED_CHECKZONE, "-i", "full", "tiktok.rpz", str(zone)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded serial 1" in done.stdout and done.stdout.rstrip().endswith("OK")


@pytest.mark.skipif(NAMED_CHECKZONE is None, reason="named-checkzone is not installed (Debian package bind9-utils)")
def test_named_checkzone_rejects_a_broken_zone_so_the_check_above_means_something(zone, tmp_path):
    broken = tmp_path / "broken.zone"
    broken.write_text(zone.read_text() + "tiktok.com A 198.18.0.1\n")  # CNAME and other data
    done = subprocess.run([NAMED_CHECKZONE, "tiktok.rpz", str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def _free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 at this moment (Unbound listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _config(directory: Path, port: int, rpz_zone: Path) -> Path:
    lines = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        "  do-daemonize: no", '  username: ""', '  chroot: ""', f'  directory: "{directory}"',
        f'  pidfile: "{directory}/unbound.pid"', "  use-syslog: no", '  logfile: ""', "  do-ip6: no",
        "  verbosity: 1", '  module-config: "respip iterator"', "  access-control: 127.0.0.0/8 allow",
        "remote-control:", "  control-enable: no",
    ]
    for name, records in UPSTREAM.items():
        zone_file = directory / f"{name}.zone"
        body = [f"$ORIGIN {name}.", "$TTL 300", f"@ SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 300",
                "@ NS ns", "ns A 198.18.0.2", *(f"{label} A {address}" for label, address in records.items())]
        zone_file.write_text("\n".join(body) + "\n")
        lines += ["auth-zone:", f'  name: "{name}."', f'  zonefile: "{zone_file}"', "  for-downstream: no",
                  "  for-upstream: yes", "  fallback-enabled: no"]
    lines += ["rpz:", '  name: "tiktok.rpz."', f'  zonefile: "{rpz_zone}"', "  rpz-log: yes"]
    config = directory / "unbound.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


def _ask(name: str, port: int) -> dns.message.Message:
    query = dns.message.make_query(name, dns.rdatatype.A)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=2)


@pytest.mark.skipif(UNBOUND is None or CHECKCONF is None, reason="unbound is not installed (Debian package unbound)")
def test_unbound_loads_the_zone_and_answers_nxdomain_for_tiktok_names_only(zone, tmp_path):
    port = _free_port()
    config = _config(tmp_path, port, zone)
    checked = subprocess.run([CHECKCONF, str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = tmp_path / "unbound.log"
    with log.open("w") as out:
        server = subprocess.Popen([UNBOUND, "-d", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # until Unbound answers (a bounded wait, not a timed assertion)
            try:
                _ask("www.nottiktok.com", port)
                break
            except (OSError, dns.exception.Timeout):
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"unbound did not answer within 30 s:\n{log.read_text()}"
                time.sleep(0.2)
        blocked = ["tiktok.com", "www.tiktok.com", "api16-normal-c-useast1a.tiktokv.com", "dns.quad9.net"]
        for name in blocked:
            answer = _ask(name, port)
            assert answer.rcode() == dns.rcode.NXDOMAIN, f"{name}: {answer}"
        normal = {"nottiktok.com": "198.18.0.10", "www.nottiktok.com": "198.18.0.13",
                  "www.quad9.net": "198.18.0.32",  # dns.quad9.net is an exact entry: its zone stays open
                  "x.dns.quad9.net": "198.18.0.33"}  # and so do the names under it
        for name, address in normal.items():
            answer = _ask(name, port)
            assert answer.rcode() == dns.rcode.NOERROR, f"{name}: {answer}"
            assert [rr.address for rrset in answer.answer for rr in rrset] == [address], name
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    text = log.read_text()
    assert "rpz: applied *.tiktok.com. rpz-nxdomain" in text and "rpz: applied dns.quad9.net. rpz-nxdomain" in text
