"""Events and alerts to syslog, received by a real rsyslog (Debian's ``rsyslog`` and
``rsyslog-openssl``) that the test starts on 127.0.0.1: over UDP, over TCP with octet-
counting framing, and over TLS (mutual: a CA, a server and a client certificate made here
with the ``openssl`` command). rsyslog's own RFC 5424 parser splits each message into its
header fields, structured data and MSG, and writes them to a file; the MSGs parse back to
exactly the events and alerts the same run wrote to its files.

Also the pieces on their own: the message format, the framing, the options.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_metrics import free_port

from detector.cli import main
from detector.sinks.syslog import (FACILITIES, SD_ID, SyslogSender, SyslogTarget, format_message, octet_counted,
                                   sd_escape, syslog_target)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
POLICY = ROOT / "examples" / "policy.toml"
RSYSLOGD = shutil.which("rsyslogd")
OPENSSL = shutil.which("openssl")
#: Bound on every wait (rsyslog's start, the messages' arrival); normally well under a second.
WAIT = 30.0
#: rsyslog writes each message as these tab-separated properties (the template below).
FIELDS = ("inputname", "pri", "protocol-version", "hostname", "app-name", "procid", "msgid", "structured-data", "msg")


# -- the format --------------------------------------------------------------------------------


def test_message_is_rfc5424_with_the_sensor_in_structured_data():
    record = {"name": "www.tiktok.com", "n": 1}
    message = format_message(record, "event", sensor='hq "A"] \\ 2', format_name="native",
                             facility=FACILITIES["local0"], severity=4, hostname="sensor host\x01", procid=42,
                             now=1_772_442_000.25).decode()
    header, sd, msg = re.fullmatch(r"(<\d+>1 \S+ \S+ \S+ \S+ \S+) (\[.*?(?<!\\)\]) (.*)", message).groups()
    assert header == "<132>1 2026-03-02T09:00:00.250000Z sensorhost tiktok-detector 42 event"
    assert sd == f'[{SD_ID} sensor="hq \\"A\\"\\] \\\\ 2" format="native"]'
    assert json.loads(msg) == record


def test_non_ascii_is_escaped_so_the_message_needs_no_bom():
    message = format_message({"hostname": "Lenas-iPhone-ü"}, "event", sensor="büro", format_name="ecs",
                             facility=16, severity=5, hostname="h", procid=1, now=0.0)
    msg = message.split(b"] ", 1)[1]
    assert msg.isascii() and json.loads(msg) == {"hostname": "Lenas-iPhone-ü"}
    assert 'sensor="büro"'.encode() in message  # PARAM-VALUE is UTF-8


def test_octet_counting_frames_by_length():
    assert octet_counted(b"<1>1 - - - - - - x y") == b"20 <1>1 - - - - - - x y"
    assert octet_counted("ü".encode()) == b"2 \xc3\xbc"  # octets, not characters


def test_sd_escape():
    assert sd_escape('a"b]c\\d') == 'a\\"b\\]c\\\\d'


@pytest.mark.parametrize(("text", "target"), [
    ("udp://collector", SyslogTarget("udp", "collector", 514)),
    ("tcp://10.0.0.1", SyslogTarget("tcp", "10.0.0.1", 601)),
    ("tls://siem.example:6515", SyslogTarget("tls", "siem.example", 6515)),
    ("udp://[fd00::1]:5514", SyslogTarget("udp", "fd00::1", 5514)),
])
def test_syslog_target(text, target):
    assert syslog_target(text) == target


@pytest.mark.parametrize("text", ["collector:514", "http://x", "udp://", "tcp://x:99999", "tls://x/path"])
def test_bad_syslog_target_is_one_line_and_status_2(text, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "--syslog", text, str(SAMPLE)])
    assert exit_.value.code == 2
    assert "is not udp://HOST[:PORT]" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--syslog-ca", "ca.pem"], "need --syslog tls://HOST"),
    (["--syslog", "udp://127.0.0.1", "--syslog-ca", "ca.pem"], "need --syslog tls://HOST"),
    (["--syslog", "tls://127.0.0.1", "--syslog-cert", "c.pem"], "go together"),
    (["--syslog", "tls://127.0.0.1", "--syslog-ca", "/nonexistent/ca.pem"], "/nonexistent/ca.pem: cannot be used"),
])
def test_bad_syslog_tls_options_are_one_line(args, message, capsys):
    assert main(["replay", "--no-progress", *args, str(SAMPLE)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unreachable_collector_is_counted_never_fatal():
    """Nothing listens: each message fails (one connection try, then the back-off) and the
    sender closes without hanging."""
    sender = SyslogSender(SyslogTarget("tcp", "127.0.0.1", free_port()), sensor="s", format_name="native")
    for n in range(3):
        sender.send({"n": n}, "event", 4)
    sender.close(timeout=10)
    assert sender.counts() == {"sent": 0, "failed": 3, "dropped": 0}
    assert sender.last_error


# -- a real rsyslog ----------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by ``openssl``."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test syslog CA",
            "-days", "2", cwd=tmp)
    for name, extensions in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                             ("client", "extendedKeyUsage=clientAuth\n")):
        (tmp / f"{name}.ext").write_text(extensions)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=test {name}", cwd=tmp)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=tmp)
    return {name: tmp / name for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def rsyslog_config(tmp: Path, ports: dict[str, int], pki: dict[str, Path], out: Path) -> Path:
    """UDP, TCP and TLS (client certificate required) inputs on 127.0.0.1, one file out."""
    props = ' constant(value="\\t") '.join(f'property(name="{field}")' for field in FIELDS)
    config = f"""
global(workDirectory="{tmp}" maxMessageSize="64k"
       DefaultNetstreamDriverCAFile="{pki['ca.crt']}"
       DefaultNetstreamDriverCertFile="{pki['server.crt']}"
       DefaultNetstreamDriverKeyFile="{pki['server.key']}")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="list") {{ {props} constant(value="\\n") }}
ruleset(name="sensor") {{ action(type="omfile" file="{out}" template="fields") }}
input(type="imudp" address="127.0.0.1" port="{ports['udp']}" name="udp" ruleset="sensor")
input(type="imtcp" address="127.0.0.1" port="{ports['tcp']}" name="tcp" ruleset="sensor")
input(type="imtcp" address="127.0.0.1" port="{ports['tls']}" name="tls" ruleset="sensor"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"""
    path = tmp / "rsyslog.conf"
    path.write_text(config)
    return path


def listening(ports: dict[str, int]) -> bool:
    found = subprocess.run(["ss", "-H", "-lnut"], capture_output=True, text=True, timeout=10).stdout
    return all(re.search(rf"\s127\.0\.0\.1:{port}\s", found) for port in ports.values())


@pytest.fixture
def rsyslog(tmp_path):
    """A running rsyslogd; yields (ports, pki, the file it writes); killed at the end."""
    if RSYSLOGD is None:
        pytest.skip("rsyslogd not installed (Debian packages rsyslog and rsyslog-openssl)")
    if not Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so").exists() and not list(
            Path("/usr/lib").glob("*/rsyslog/lmnsd_ossl.so")):
        pytest.skip("rsyslog's OpenSSL driver is not installed (Debian package rsyslog-openssl)")
    if OPENSSL is None or shutil.which("ss") is None:
        pytest.skip("openssl and ss (Debian packages openssl, iproute2) are needed")
    ports = {name: free_port() for name in ("udp", "tcp", "tls")}
    pki = make_pki(tmp_path)
    out = tmp_path / "received.tsv"
    config = rsyslog_config(tmp_path, ports, pki, out)
    log = tmp_path / "rsyslogd.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(config), "-i", str(tmp_path / "rsyslogd.pid")],
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT
        while not listening(ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"rsyslogd did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield ports, pki, out
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def received(out: Path, inputname: str, count: int) -> list[dict[str, str]]:
    """The messages rsyslog wrote from ``inputname``, once there are ``count`` (bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        lines = out.read_text().splitlines() if out.exists() else []
        rows = [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in lines]
        mine = [row for row in rows if row["inputname"] == inputname]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


@pytest.mark.parametrize("events_format", ["native", "ecs"])
def test_rsyslog_receives_the_same_events_over_udp_tcp_and_tls(rsyslog, tmp_path, events_format):
    ports, pki, out = rsyslog
    for transport in ("udp", "tcp", "tls"):
        events, alerts = tmp_path / f"events-{transport}.jsonl", tmp_path / f"alerts-{transport}.jsonl"
        tls = (["--syslog-ca", str(pki["ca.crt"]), "--syslog-cert", str(pki["client.crt"]),
                "--syslog-key", str(pki["client.key"])] if transport == "tls" else [])
        done = subprocess.run(
            [sys.executable, "-m", "detector", "replay", "--no-progress", "--policy", str(POLICY),
             "--sensor", f"hq-{transport}", "--events-format", events_format,
             "--events", str(events), "--alerts", str(alerts),
             "--syslog", f"{transport}://127.0.0.1:{ports[transport]}", "--syslog-facility", "local3", *tls,
             str(SAMPLE)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        written = {"event": [json.loads(line) for line in events.read_text().splitlines()],
                   "alert": [json.loads(line) for line in alerts.read_text().splitlines()]}
        assert len(written["event"]) > 10 and len(written["alert"]) > 1
        rows = received(out, transport, len(written["event"]) + len(written["alert"]))
        for kind, records in written.items():
            mine = [row for row in rows if row["msgid"] == kind]
            assert [json.loads(row["msg"]) for row in mine] == records, (transport, kind)
            for row in mine:
                assert row["structured-data"] == f'[{SD_ID} sensor="hq-{transport}" format="{events_format}"]'
                assert (row["protocol-version"], row["app-name"]) == ("1", "tiktok-detector")
                severity = 4 if kind == "alert" or json.loads(row["msg"]).get(
                    "decision", json.loads(row["msg"]).get("event", {}).get("action")) == "violation" else 5
                assert row["pri"] == str(19 * 8 + severity)
        assert len(rows) == len(written["event"]) + len(written["alert"]), transport
        sensors = {r.get("sensor") or r["observer"]["name"] for records in written.values() for r in records}
        assert sensors == {f"hq-{transport}"}


def test_syslog_counts_are_exported_only_when_sending():
    from test_metrics import samples

    got = samples({"syslog.sent": 7, "syslog.failed": 1, "syslog.dropped": 0})
    assert {result: got[("tiktok_detector_syslog_messages_total", (("result", result),))]
            for result in ("sent", "failed", "dropped")} == {"sent": 7, "failed": 1, "dropped": 0}
    assert not [key for key in samples({}) if key[0] == "tiktok_detector_syslog_messages_total"]


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_collector_that_closed_is_reconnected_before_the_next_message(tmp_path, transport):
    """A collector restarts between two messages: the sender sees the connection ended
    before it writes (a write into a closed connection vanishes without an error) and sends
    the second message on a new one. The collector here reads one framed message per
    connection, then closes."""
    import socket
    import ssl
    import threading

    if transport == "tls" and OPENSSL is None:
        pytest.skip("openssl (Debian package openssl) is needed to make the certificates")
    pki = make_pki(tmp_path) if transport == "tls" else None
    server = socket.create_server(("127.0.0.1", 0))
    context = None
    if pki is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki["server.crt"], pki["server.key"])
    got: list[bytes] = []
    closed = [threading.Event(), threading.Event()]

    def collector() -> None:
        for done in closed:
            conn, _ = server.accept()
            conn.settimeout(WAIT)
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            data = b""
            while b" " not in data or len(data) < int(data.split(b" ", 1)[0]) + len(data.split(b" ", 1)[0]) + 1:
                data += conn.recv(65536)
            got.append(data.split(b" ", 1)[1])
            conn.close()
            done.set()

    threading.Thread(target=collector, daemon=True).start()
    sender = SyslogSender(SyslogTarget(transport, "127.0.0.1", server.getsockname()[1]), sensor="s",
                          format_name="native", ca_file=str(pki["ca.crt"]) if pki else None)
    sender.send({"n": 1}, "event", 4)
    assert closed[0].wait(WAIT)
    sender.send({"n": 2}, "event", 4)
    assert closed[1].wait(WAIT)
    sender.close()
    server.close()
    assert [json.loads(message.split(b"] ", 1)[1]) for message in got] == [{"n": 1}, {"n": 2}]
    assert sender.counts() == {"sent": 2, "failed": 0, "dropped": 0}
