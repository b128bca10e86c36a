"""The Prometheus exporter, the web-config (TLS, basic auth), the Alertmanager push and the
shipped rules, checked with the real tools: promtool (Debian's ``prometheus`` package) and
amtool (``prometheus-alertmanager``). Tests that need a tool that is missing skip with the
reason."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detector.devices import DeviceTable
from detector.match import load_signatures
from detector.pipeline import Detector, Extractor, Settings
from detector.policy import load_policy
from detector.records import Observation, Signature, Verdict
from detector.sinks.alertmanager import AlertmanagerPush, _endpoint, alert_payload
from detector.sinks.alerts import AlertTable
from detector.sinks.metrics import DetectorCollector, ReplayExporter, SignatureInfo
from detector.cli import listen_address
from detector.sinks.metrics_server import MetricsError, MetricsServer, load_web_config
from detector.records import CATEGORIES
from detector.sources.pcapfile import CaptureFile
from detector.timing import PROCESSING_BUCKETS, BatchTimer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
POLICY = ROOT / "examples" / "policy.toml"
SIGNATURES = ROOT / "signatures"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
needs_amtool = pytest.mark.skipif(AMTOOL is None,
                                  reason="amtool not installed (Debian package prometheus-alertmanager)")
INFO = SignatureInfo("2026-11-29", "ab" * 32, 110, CATEGORIES, 1.7e9)
SEGMENTS = ("staff", "guest", "lab.b2", "default")


def samples(snapshot: dict, segments=SEGMENTS, info=INFO) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from a collector over ``snapshot``."""
    registry = CollectorRegistry()
    registry.register(DetectorCollector(lambda: snapshot, lambda: segments, lambda: info))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the collector ---------------------------------------------------------------------------


def test_collector_maps_each_snapshot_key_to_its_metric():
    snap = {
        "packets": 1000, "bytes": 123456, "skim.udp": 700, "skim.tcp": 100,
        "skip.short_frame": 3, "file.truncated_record": 1,
        "parse_error.dns": 2, "observations.dns-query": 40, "observations.tls-sni": 7,
        "matches.staff.tls-sni.app": 5, "matches.lab.b2.dns-query.cdn": 2,
        "verdicts.staff.violation": 4, "verdicts.staff.exempt": 1, "verdicts.lab.b2.allowed": 2,
        "verdicts.violation": 4, "verdicts.exempt": 1, "verdicts.allowed": 2,
        "verdicts.blind-spot": 3, "matches.guest.tls-sni.encrypted-dns": 3, "blind_spots.guest.encrypted-dns": 3,
        "devices_in_violation.staff": 2, "alerts.emitted": 3, "alerts.suppressed": 9,
        "tcp_flight.evicted_full": 6, "quic_initial.expired": 4, "devices.evicted": 1,
        "tcp_flight.flows": 12, "devices.entries": 30, "capture.kernel_drops": 17,
        "capture.interface_drops": 2, "capture.received": 1100, "signatures.reload_failures": 1,
        "processing.bucket.0": 10, "processing.bucket.3": 5, "processing.bucket.11": 1,
        "processing.seconds": 0.25, "processing.packets": 16, "alertmanager.sent": 3,
    }
    got = samples(snap)
    p = "tiktok_detector_"
    expect = {
        (p + "packets_total", ()): 1000,
        (p + "bytes_total", ()): 123456,
        (p + "skimmed_packets_total", (("transport", "udp"),)): 700,
        (p + "skipped_packets_total", (("reason", "short_frame"),)): 3,
        (p + "skipped_packets_total", (("reason", "bad_tcp"),)): 0,  # known before it happens
        (p + "capture_file_skipped_records_total", (("reason", "truncated_record"),)): 1,
        (p + "parse_errors_total", (("parser", "dns"),)): 2,
        (p + "parse_errors_total", (("parser", "tls"),)): 0,
        (p + "observations_total", (("proto", "dns-query"),)): 40,
        (p + "observations_total", (("proto", "quic-sni"),)): 0,
        (p + "matches_total", (("category", "app"), ("proto", "tls-sni"), ("segment", "staff"))): 5,
        (p + "matches_total", (("category", "cdn"), ("proto", "dns-query"), ("segment", "lab.b2"))): 2,
        (p + "violations_total", (("segment", "staff"),)): 4,
        (p + "violations_total", (("segment", "default"),)): 0,
        (p + "exempt_matches_total", (("segment", "staff"),)): 1,
        (p + "allowed_matches_total", (("segment", "lab.b2"),)): 2,
        (p + "blind_spots_total", (("kind", "encrypted-dns"), ("segment", "guest"))): 3,
        (p + "blind_spots_total", (("kind", "vpn"), ("segment", "guest"))): 0,
        (p + "blind_spots_total", (("kind", "relay"), ("segment", "staff"))): 0,
        (p + "matches_total", (("category", "encrypted-dns"), ("proto", "tls-sni"), ("segment", "guest"))): 3,
        (p + "devices_in_violation", (("segment", "staff"),)): 2,
        (p + "devices_in_violation", (("segment", "guest"),)): 0,
        (p + "alerts_emitted_total", ()): 3,
        (p + "alerts_suppressed_total", ()): 9,
        (p + "table_evictions_total", (("reason", "capacity"), ("table", "tcp_flight"))): 6,
        (p + "table_evictions_total", (("reason", "timeout"), ("table", "quic_initial"))): 4,
        (p + "table_evictions_total", (("reason", "capacity"), ("table", "devices"))): 1,
        (p + "table_evictions_total", (("reason", "capacity"), ("table", "alert_windows"))): 0,
        (p + "table_entries", (("table", "tcp_flight"),)): 12,
        (p + "table_entries", (("table", "devices"),)): 30,
        (p + "capture_dropped_packets_total", (("stage", "kernel"),)): 17,
        (p + "capture_dropped_packets_total", (("stage", "interface"),)): 2,
        (p + "capture_received_packets_total", ()): 1100,
        (p + "signature_reload_failures_total", ()): 1,
        (p + "signature_set_info", (("sha256", "ab" * 32), ("version", "2026-11-29"))): 1,
        (p + "signature_set_entries", ()): 110,
        (p + "signature_set_loaded_timestamp_seconds", ()): 1.7e9,
        (p + "packet_processing_seconds_bucket", (("le", "1e-06"),)): 10,
        (p + "packet_processing_seconds_bucket", (("le", "5e-06"),)): 10,
        (p + "packet_processing_seconds_bucket", (("le", "1e-05"),)): 15,
        (p + "packet_processing_seconds_bucket", (("le", "0.01"),)): 15,
        (p + "packet_processing_seconds_bucket", (("le", "+Inf"),)): 16,
        (p + "packet_processing_seconds_count", ()): 16,
        (p + "packet_processing_seconds_sum", ()): 0.25,
        (p + "alertmanager_alerts_total", (("result", "sent"),)): 3,
        (p + "alertmanager_alerts_total", (("result", "failed"),)): 0,
    }
    for key, value in expect.items():
        assert got.get(key) == value, key
    build = [k for k in got if k[0] == p + "build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"] == "0.1.0"


def test_label_values_stay_within_the_configuration():
    """A segment not in the policy, a category not in the set or an unknown protocol is not
    exported: label cardinality is set by the configuration, never by traffic."""
    snap = {"matches.intruder.tls-sni.app": 1, "matches.staff.gopher.app": 1, "matches.staff.tls-sni.games": 1,
            "matches.staff.tls-sni.app": 1, "verdicts.intruder.violation": 1, "devices_in_violation.intruder": 1,
            "observations.gopher": 1, "verdicts.staff.maybe": 1, "matches.app": 1}
    got = samples(snap, info=INFO._replace(categories=("app",)))
    labels = {dict(k[1]).get(name) for k in got for name in ("segment", "proto", "category")}
    assert not {"intruder", "gopher", "games", "maybe"} & labels
    staff_app = (("category", "app"), ("proto", "tls-sni"), ("segment", "staff"))
    assert got[("tiktok_detector_matches_total", staff_app)] == 1
    collector = DetectorCollector(lambda: snap, lambda: SEGMENTS, lambda: INFO._replace(categories=("app",)))
    assert collector.families(snap)[1] == set(snap) - {"matches.staff.tls-sni.app"}
    # No label anywhere can hold a device or a name: these are all the label names there are.
    names = {label for key in samples({}) for label, _ in key[1]}
    assert names == {"version", "python", "transport", "reason", "parser", "proto", "segment", "stage",
                     "table", "kind", "result", "sha256", "le", "outcome", "device_class", "decision"}


def test_families_of_optional_sources_only_when_present():
    """Alertmanager pushes and live capture's received count exist only where they happen."""
    names = {k[0] for k in samples({})}
    assert not {n for n in names if n.startswith(("tiktok_detector_alertmanager", "tiktok_detector_capture_received"))}
    assert ("tiktok_detector_capture_dropped_packets_total", (("stage", "kernel"),)) in samples({})


@needs_promtool
def test_exposition_passes_promtool_check_metrics():
    registry = CollectorRegistry()
    registry.register(DetectorCollector(lambda: {"packets": 5, "matches.staff.tls-sni.app": 1}, lambda: SEGMENTS, lambda: INFO))
    result = promtool("check", "metrics", stdin=generate_latest(registry).decode())
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def _replay_in_process(paths: list[Path]) -> tuple[ReplayExporter, dict]:
    signatures = load_signatures(SIGNATURES)
    policy = load_policy(POLICY)
    stats: Counter[str] = Counter()
    devices = DeviceTable()
    alerts = AlertTable(policy.dedup_window, lambda record: None)
    detector = Detector(signatures, policy, devices, alerts.add, stats)
    extractor = Extractor(Settings(), detector.observe, devices.learn, stats)
    exporter = ReplayExporter(extractor, alerts, devices, policy, SignatureInfo.of(signatures, 0.0))
    def tick(now: float) -> None:
        alerts.tick(now)
        exporter.tick()

    for path in paths:
        capture = CaptureFile(str(path))
        try:
            for ts, linktype, data, frame in capture:
                extractor.feed(ts, linktype, data, capture.name, frame)
                tick(ts)
        except Exception:  # a damaged fixture ends its file, as in the replay
            pass
        for reason, count in capture.skipped.items():
            stats[f"file.{reason}"] += count
        capture.close()
    exporter.capture_ended()
    alerts.flush()
    exporter.publish()
    return exporter, exporter._published


def test_every_counter_of_every_fixture_is_exported():
    """Replaying every fixture capture produces only snapshot keys the collector exports,
    so no counter the pipeline keeps is silently missing from /metrics."""
    pcaps = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
    exporter, snap = _replay_in_process(pcaps)
    collector = DetectorCollector(lambda: snap, lambda: exporter.segments,
                                  lambda: SignatureInfo.of(load_signatures(SIGNATURES), 0.0))
    _, unused = collector.families(snap)
    assert unused == set()
    assert snap["packets"] > 400 and snap["processing.packets"] > 0 and snap["parse_error.tls"] > 0


def test_batch_timer_counts_each_packet_at_its_batch_mean():
    clock = iter([10.0, 10.001, 10.0011, 10.0011, 12.0]).__next__
    timer = BatchTimer(clock)
    timer.batch(5)  # the first call only sets the baseline
    timer.batch(105)  # 100 packets in 1 ms: 10 us each
    timer.batch(115)  # 10 packets in 0.1 ms: 10 us each
    timer.batch(115)  # no packet: nothing recorded
    timer.batch(116)  # 1 packet, 2 s: the +Inf bucket
    snap = timer.snapshot()
    ten_us = PROCESSING_BUCKETS.index(1e-5)
    assert snap[f"processing.bucket.{ten_us}"] == 110
    assert snap[f"processing.bucket.{len(PROCESSING_BUCKETS)}"] == 1
    assert snap["processing.packets"] == 111
    assert snap["processing.seconds"] == pytest.approx(12.0 - 10.0)


def test_replay_exporter_keeps_windows_open_at_the_end_of_the_capture():
    """After the last packet, windows still open in capture time count as devices in
    violation while the run lingers, though the final flush writes their alerts."""
    exporter, snap = _replay_in_process([SAMPLE])
    assert snap["devices_in_violation.staff"] == 1 and snap["devices_in_violation.guest"] == 1
    assert snap["alerts.emitted"] == 3 and snap["verdicts.staff.violation"] == 16
    assert "devices_in_violation.default" not in snap  # exported as 0 by the collector


# -- serving, the command line, web-config ---------------------------------------------------


def detector_cli(*args: str, timeout: float = 60) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "detector", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def fetch(url: str, context: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None,
          deadline: float = 10.0) -> tuple[int, str]:
    """GET ``url`` once the server listens (retrying a refused connection until ``deadline``)."""
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5, context=context) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (ConnectionRefusedError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if not isinstance(reason, ConnectionRefusedError) or time.monotonic() > end:
                raise
            time.sleep(0.05)


@needs_promtool
def test_replay_serves_final_counts_while_lingering_then_exits(tmp_path):
    """A real scrape of a finished replay: final counts equal the events written, promtool
    accepts the exposition, and the process exits 0 when the linger time is over."""
    port = free_port()
    events = tmp_path / "events.jsonl"
    proc = detector_cli("replay", "--policy", str(POLICY), "--events", str(events), "--metrics-addr",
                        f"127.0.0.1:{port}", "--linger", "3", str(SAMPLE))
    try:
        deadline = time.monotonic() + 10
        while True:  # wait for the final publication (the run takes milliseconds)
            status, body = fetch(f"http://127.0.0.1:{port}/metrics")
            if events.exists() and "tiktok_detector_alerts_emitted_total 3.0" in body:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert status == 200
        check = promtool("check", "metrics", stdin=body)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
        written = Counter((e["segment"], e["decision"]) for e in map(json.loads, events.read_text().splitlines()))
        got = {(f.name, s.labels.get("segment")): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
        for segment in ("staff", "guest", "default"):
            assert got[("tiktok_detector_violations", segment)] == written[(segment, "violation")]
            assert got[("tiktok_detector_exempt_matches", segment)] == written[(segment, "exempt")]
        assert got[("tiktok_detector_packets", None)] == 125
        assert proc.wait(timeout=15) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--linger", "5"], "--linger and --web-config need --metrics-addr"),
        (["--metrics-addr", "127.0.0.1:PORT", "--web-config", "/nonexistent/web.yml"],
         "/nonexistent/web.yml: No such file"),
        (["--metrics-addr", "127.0.0.1:BUSY"], "cannot serve metrics on 127.0.0.1:"),
    ],
)
def test_bad_metrics_options_are_one_line_and_exit_2(args, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("BUSY", str(busy.getsockname()[1])).replace("PORT", str(free_port())) for a in args]
        result = subprocess.run([sys.executable, "-m", "detector", "replay", *args, str(SAMPLE)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_listen_address_forms():
    import argparse

    assert listen_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert listen_address(":9100") == ("0.0.0.0", 9100)
    assert listen_address("[::1]:9100") == ("::1", 9100)
    for bad in ("9100", "host:", "host:99999", "::1:9100", "a:b"):
        with pytest.raises(argparse.ArgumentTypeError):
            listen_address(bad)


def tls_files(directory: Path, *, client: bool = False) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 (and a client one) it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(name, key, issuer_name, issuer_key, ca=False, usage=None, san=None):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name, obj):
        path = directory / name
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = cert("test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = cert("sensor", key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                  san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    files = {"ca": write("ca.crt", ca), "cert": write("sensor.crt", server), "key": write("sensor.key", key)}
    if client:
        client_key = ec.generate_private_key(ec.SECP256R1())
        files["client_cert"] = write("client.crt", cert("prometheus", client_key, ca_name, ca_key,
                                                        usage=ExtendedKeyUsageOID.CLIENT_AUTH))
        files["client_key"] = write("client.key", client_key)
    return files


def bcrypt_hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def serve(registry_snapshot: dict, web_config) -> MetricsServer:
    registry = CollectorRegistry()
    registry.register(DetectorCollector(lambda: registry_snapshot, lambda: SEGMENTS, lambda: INFO))
    return MetricsServer(registry, ("127.0.0.1", 0), web_config)


def test_tls_and_basic_auth_from_a_web_config(tmp_path):
    files = tls_files(tmp_path)
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: sensor.crt\n  key_file: sensor.key\n"
        f"basic_auth_users:\n  prometheus: {bcrypt_hash('s3cret')}\n  other: {bcrypt_hash('x')}\n")
    server = serve({"packets": 7}, load_web_config(tmp_path / "web.yml"))
    url = f"https://127.0.0.1:{server.port}/metrics"
    trusted = ssl.create_default_context(cafile=str(files["ca"]))
    try:
        status, body = fetch(url, trusted, ("prometheus", "s3cret"))
        assert status == 200 and "tiktok_detector_packets_total 7.0" in body
        assert fetch(url, trusted, ("prometheus", "s3cret"))[0] == 200  # the cached verification
        assert fetch(url, trusted)[0] == 401
        assert fetch(url, trusted, ("prometheus", "wrong"))[0] == 401
        assert fetch(url, trusted, ("nobody", "s3cret"))[0] == 401
        assert fetch(url, trusted, ("other", "s3cret"))[0] == 401
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the CA
            fetch(url, ssl.create_default_context(), ("prometheus", "s3cret"))
        # Plain HTTP to the TLS port fails for that client only; the server goes on serving.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            fetch(f"http://127.0.0.1:{server.port}/metrics")
        assert fetch(url, trusted, ("prometheus", "s3cret"))[0] == 200
    finally:
        server.close()


def test_mutual_tls(tmp_path):
    files = tls_files(tmp_path, client=True)
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: sensor.crt\n  key_file: sensor.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n")
    server = serve({}, load_web_config(tmp_path / "web.yml"))
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        with_cert = ssl.create_default_context(cafile=str(files["ca"]))
        with_cert.load_cert_chain(files["client_cert"], files["client_key"])
        assert fetch(url, with_cert)[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            fetch(url, ssl.create_default_context(cafile=str(files["ca"])))
    finally:
        server.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: sensor.crt\n", "needs both cert_file and key_file"),
        ("tls_server_config:\n  cert_file: sensor.crt\n  key_file: sensor.key\n  cipher_suites: [x]\n",
         "unsupported key(s) cipher_suites"),
        ("tls_server_config:\n  cert_file: sensor.crt\n  key_file: sensor.key\n"
         "  client_auth_type: RequireAndVerifyClientCert\n",
         "needs client_ca_file"),
        ("tls_server_config:\n  cert_file: sensor.crt\n  key_file: sensor.key\n  min_version: SSL3\n",
         "min_version 'SSL3'"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: sensor.key\n", "missing.crt: no such file"),
        ("basic_auth_users:\n  prometheus: $2b$10$tooshort\n", "needs a bcrypt hash"),
        ("tls_server_config:\n  cert_file: sensor.crt\n  key_file: sensor.key\n  client_auth_type: RequestClientCert\n",
         "RequestClientCert' is not supported"),
        ("basic_auth_users:\n  prometheus: plaintext\n", "needs a bcrypt hash"),
        ("http_server_config:\n  http2: true\n", "unsupported key(s) http_server_config"),
        ("basic_auth_users: [a, b]\n", "must map user names"),
        ("tls_server_config: {\n", "not valid YAML"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_web_config_errors_name_the_file(tmp_path, text, message):
    tls_files(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(MetricsError) as caught:
        load_web_config(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


@needs_promtool
def test_shipped_web_config_example_is_valid_for_promtool_and_for_us(tmp_path):
    tls_files(tmp_path)
    example = tmp_path / "web.yml"
    shutil.copy(DEPLOY / "prometheus" / "sensor-web-config.example.yml", example)
    result = promtool("check", "web-config", str(example))
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_web_config(example)
    assert config.tls is not None and set(config.users) == {"prometheus"}
    import bcrypt

    assert bcrypt.checkpw(b"change-me", config.users["prometheus"])  # as its comment says


# -- the Alertmanager push -------------------------------------------------------------------


def verdict(ts: float, device: str = "02:00:c6:12:0a:22", category: str = "app", decision: str = "violation",
            hostname: str | None = "bob-iphone") -> Verdict:
    obs = Observation(ts, "tls-sni", "www.tiktok.com", "198.18.10.34", device, 10, "198.19.0.1", 443,
                      "office.pcap", 42, False, ("h2",))
    return Verdict(obs, Signature("tiktok.com", "suffix", category, "x"), "staff", device, hostname, decision)


def test_alert_payload_is_an_api_v2_postable_alert():
    payload = alert_payload(verdict(1772442018.0288), 900)
    assert payload["labels"] == {"alertname": "TikTokUse", "service": "tiktok-detector", "severity": "warning",
                                 "segment": "staff", "category": "app", "device": "02:00:c6:12:0a:22"}
    assert payload["startsAt"] == "2026-03-02T09:00:18.028800Z"
    assert payload["endsAt"] == "2026-03-02T09:15:18.028800Z"  # the end of the dedup window
    notes = payload["annotations"]
    assert notes["hostname"] == "bob-iphone" and notes["evidence"] == "office.pcap#42"
    assert notes["name"] == "www.tiktok.com" and notes["client_ip"] == "198.18.10.34"
    assert "bob-iphone on segment staff" in notes["summary"]
    assert all(isinstance(v, str) for v in (*payload["labels"].values(), *notes.values()))
    assert "hostname" not in alert_payload(verdict(0.0, hostname=None), 900)["annotations"]


class FakeAlertmanager:
    """Stands in for urlopen: records requests, fails as told."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.requests: list[urllib.request.Request] = []
        self.failures = list(failures or [])

    def __call__(self, request, timeout):
        self.requests.append(request)
        if self.failures:
            raise self.failures.pop(0)
        return _Response()

    def alerts(self) -> list[dict]:
        return [alert for request in self.requests for alert in json.loads(request.data)]


class _Response:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self):
        return b""


def test_push_once_per_device_category_and_window():
    fake = FakeAlertmanager()
    push = AlertmanagerPush("http://127.0.0.1:9093", 900, opener=fake)
    table = AlertTable(900, lambda record: None)
    table.on_open = push.opened  # as the CLI wires it: one push as each window opens
    table.add(verdict(1000.0))
    table.add(verdict(1100.0))  # same window: Alertmanager already has it
    table.add(verdict(1200.0, category="cdn"))  # another category: its own alert
    table.add(verdict(1300.0, device="02:00:00:00:00:02"))
    table.add(verdict(1400.0, device="02:00:00:00:00:03", decision="exempt"))  # never alerted
    table.add(verdict(1900.0))  # the first window ended at 1900: a new one opens
    push.close()
    sent = fake.alerts()
    assert [(a["labels"]["device"], a["labels"]["category"], a["startsAt"][11:19]) for a in sent] == [
        ("02:00:c6:12:0a:22", "app", "00:16:40"), ("02:00:c6:12:0a:22", "cdn", "00:20:00"),
        ("02:00:00:00:00:02", "app", "00:21:40"), ("02:00:c6:12:0a:22", "app", "00:31:40")]
    assert push.counts() == {"sent": 4, "failed": 0, "dropped": 0}
    assert {r.full_url for r in fake.requests} == {"http://127.0.0.1:9093/api/v2/alerts"}
    assert all(r.get_method() == "POST" and r.get_header("Content-type") == "application/json" for r in fake.requests)


def test_push_failures_are_retried_counted_and_never_fatal():
    down = ConnectionRefusedError(111, "Connection refused")
    fake = FakeAlertmanager([urllib.error.URLError(down), urllib.error.URLError(down)])
    push = AlertmanagerPush("http://127.0.0.1:9093", 900, retry_delays=(0.01, 0.01), opener=fake)
    push.opened(verdict(0.0))
    deadline = time.monotonic() + 5
    while push.sent == 0 and time.monotonic() < deadline:  # retried while the run goes on
        time.sleep(0.01)
    push.close()
    assert push.counts() == {"sent": 1, "failed": 0, "dropped": 0} and len(fake.requests) == 3

    refused = urllib.error.HTTPError("http://x", 400, "bad alert", {}, None)
    fake = FakeAlertmanager([refused, refused])
    push = AlertmanagerPush("http://127.0.0.1:9093", 900, retry_delays=(0.01, 0.01), opener=fake)
    push.opened(verdict(0.0))
    push.close()
    assert push.counts() == {"sent": 0, "failed": 1, "dropped": 0}
    assert len(fake.requests) == 1 and push.last_error == "HTTP 400"  # a 4xx is not retried

    # Nothing listens: the real urlopen fails, the run goes on; closing does not wait for retries.
    push = AlertmanagerPush(f"http://127.0.0.1:{free_port()}", 900, retry_delays=(0.01,))
    push.opened(verdict(0.0))
    push.close()
    assert push.counts() == {"sent": 0, "failed": 1, "dropped": 0}


def test_push_queue_full_drops_and_counts(monkeypatch):
    from detector.sinks import alertmanager

    monkeypatch.setattr(alertmanager, "MAX_QUEUED", 2)
    import threading

    gate = threading.Event()

    def blocked(request, timeout):
        gate.wait(5)
        return _Response()

    push = AlertmanagerPush("http://127.0.0.1:9093", 900, opener=blocked)
    for i in range(10):
        push.opened(verdict(0.0, device=f"02:00:00:00:00:{i:02x}"))
    gate.set()
    push.close()
    counts = push.counts()
    assert counts["dropped"] >= 7 and counts["sent"] + counts["dropped"] == 10


def test_endpoint_url_forms():
    assert _endpoint("http://am:9093") == ("http://am:9093/api/v2/alerts", None)
    assert _endpoint("https://am.example/prefix/") == ("https://am.example/prefix/api/v2/alerts", None)
    assert _endpoint("http://[::1]:9093/api/v2/alerts")[0] == "http://[::1]:9093/api/v2/alerts"
    url, auth = _endpoint("http://sensor:p%40ss@am:9093")
    assert url == "http://am:9093/api/v2/alerts" and base64.b64decode(auth[6:]) == b"sensor:p@ss"
    for bad in ("am:9093", "ftp://am", "http://"):
        with pytest.raises(ValueError):
            _endpoint(bad)


# -- the shipped Prometheus, Alertmanager and Grafana files ----------------------------------


@needs_promtool
def test_rules_pass_promtool_check_and_unit_tests():
    check = promtool("check", "rules", str(DEPLOY / "prometheus" / "tiktok-detector.rules.yml"))
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    unit = promtool("test", "rules", str(DEPLOY / "prometheus" / "tests" / "tiktok-detector.rules.test.yml"))
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


@needs_promtool
@pytest.mark.parametrize("name", ["prometheus.example.yml", "prometheus-tls.example.yml"])
def test_scrape_config_examples_pass_promtool(name):
    result = promtool("check", "config", str(DEPLOY / "prometheus" / name))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_amtool
def test_alertmanager_example_routes_sensor_alerts():
    config = str(DEPLOY / "alertmanager" / "alertmanager.example.yml")
    check = subprocess.run([AMTOOL, "check-config", config], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    def route(*labels: str) -> str:
        result = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={config}", *labels],
                                capture_output=True, text=True, timeout=60)
        return result.stdout.strip()

    assert route("service=tiktok-detector", "alertname=TikTokDeviceInViolation", "segment=staff") == "security-office"
    assert route("service=tiktok-detector", "alertname=TikTokUse", "device=02:00:c6:12:0a:22") == "security-office"
    assert route("service=tiktok-detector", "alertname=ByteDanceAppUse", "device=02:00:c6:12:0a:22") == "security-office"
    assert route("service=tiktok-detector", "alertname=TikTokBlindSpot", "segment=staff") == "security-office"
    assert route("service=tiktok-detector", "alertname=TikTokDetectorDown") == "sensor-operations"
    assert route("alertname=SomethingElse") == "default"


def test_every_alert_of_the_rules_routes_somewhere_meaningful():
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus" / "tiktok-detector.rules.yml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"] if "alert" in r]
    assert len(alerts) == 8
    assert all(r["labels"]["service"] == "tiktok-detector" and r["labels"]["severity"] in ("info", "warning", "critical")
               for r in alerts)
    assert all(r["annotations"]["summary"] and r["annotations"]["description"] for r in alerts)


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "tiktok-detector.json").read_text())


def test_dashboard_is_well_formed():
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "job", "instance", "segment"}
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):  # no two panels overlap
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, (panel["title"], used)
            # A multi-value variable must be matched with =~ (Grafana joins values with |).
            assert not re.search(r'[^=!]=\s*"\$', target["expr"]), target["expr"]
    titles = {p["title"] for p in panels}
    for wanted in ("Violations by segment", "Devices in violation by segment", "Top categories", "Protocols",
                   "Packets per second", "Capture drops per second", "Parse errors per second",
                   "Table evictions per second", "Signature set in use"):
        assert wanted in titles


def test_grafana_provisioning_points_at_the_dashboard():
    import yaml

    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "tiktok-detector.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
    assert provider["providers"][0]["options"]["path"].endswith("tiktok-detector")
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"


def test_every_count_the_skim_makes_is_exported():
    """Each drop key the C skim reports (skim.DROP_KEYS) reaches a metric: skim.table_full
    used to be counted and summed but never exported."""
    from detector.skim import DROP_KEYS

    collector = DetectorCollector(lambda: {}, lambda: SEGMENTS, lambda: INFO)
    _, unused = collector.families({key: 1 for key in DROP_KEYS})
    assert not unused
