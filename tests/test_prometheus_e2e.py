"""End to end with the real tools: Prometheus (Debian's ``prometheus``) scrapes two replays
of the sample office capture with the shipped rules and scrape configs, and sends its alerts
to a real Alertmanager (``prometheus-alertmanager``) routed by the shipped example config to a
webhook receiver in this test.

- sensor A replays the capture from stdin, fed in chunks over a few seconds, so scrapes see
  the counts grow (rates are real), and serves plain HTTP;
- sensor B replays the capture shifted to the present (as live capture would see it), serves
  over TLS with basic auth from a web-config file (scraped by the shipped TLS job), and pushes
  its alerts to Alertmanager itself with ``--alertmanager``.

Through the HTTP APIs it checks that the counters equal the events written, that the shipped
violation rule fires (and every rule evaluates cleanly), that Alertmanager holds and routes
both kinds of alert, and that every PromQL expression of the dashboard is valid and returns
data. Everything listens on 127.0.0.1, every wait is bounded, every process is killed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dpkt
import pytest
import yaml
from test_metrics import bcrypt_hash, free_port, tls_files

from detector.sources.pcapfile import CaptureFile

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
POLICY = ROOT / "examples" / "policy.toml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
#: Upper bound of every wait in this test (seconds); the whole test takes about 15.
WAIT = 30.0
LINGER = "60"  # the sensors outlive the test; the test kills them

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package prometheus)"),
    pytest.mark.skipif(ALERTMANAGER is None,
                       reason="alertmanager not installed (Debian package prometheus-alertmanager)"),
]


class Webhook(BaseHTTPRequestHandler):
    """Alertmanager's receivers post here; the notifications are kept in ``received``."""

    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format, *args) -> None:
        return


def get_json(url: str) -> dict | list:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, probe, logs: dict[str, Path]):
    """Poll ``probe`` until it returns something truthy; fail with the processes' logs."""
    deadline = time.monotonic() + WAIT
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    tails = "\n".join(f"--- {name}\n{path.read_text()[-2000:]}" for name, path in logs.items() if path.exists())
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{tails}")


def shifted_capture(path: Path) -> None:
    """The sample capture with its clock moved so that its last packet is two seconds ago."""
    capture = CaptureFile(str(SAMPLE))
    frames = [(ts, data) for ts, linktype, data, frame in capture]
    capture.close()
    offset = time.time() - 2 - frames[-1][0]
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, data in frames:
            writer.writepkt(data, ts + offset)


def prometheus_config(tmp: Path, ports: dict[str, int], files: dict[str, Path]) -> Path:
    """The shipped example configs, pointed at this test's processes and 1 s intervals."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.example.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]
    plain = config["scrape_configs"][0]
    plain["static_configs"] = [{"targets": [f"127.0.0.1:{ports['a']}"]}]
    tls = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-tls.example.yml").read_text())["scrape_configs"][0]
    tls["tls_config"]["ca_file"] = str(files["ca"])
    tls["basic_auth"]["password_file"] = str(files["password"])
    tls["static_configs"] = [{"targets": [f"127.0.0.1:{ports['b']}"]}]
    config["scrape_configs"] = [plain, tls]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(tmp: Path, webhook: int) -> Path:
    """The shipped example route, with its receivers pointed at the test's webhook and short waits."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.example.yml").read_text())
    for route in config["route"]["routes"]:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook}/{receiver['name']}"
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
        return response.status == 200


def promql(prometheus: str, expr: str) -> list[dict]:
    answer = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def by_label(result: list[dict], label: str) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in result}


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "tiktok-detector.json").read_text())
    exprs = [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]
    variables = [(f"${v['name']}", v["query"]["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs, variables


def substitute(expr: str) -> str:
    """What Grafana sends for "All" of every variable and a 5-minute dashboard range."""
    for name, value in (("$__rate_interval", "1m"), ("$__range", "5m"), ("$job", ".+"), ("$instance", ".+"),
                        ("$segment", ".+")):
        expr = expr.replace(name, value)
    return expr


def test_prometheus_and_alertmanager_end_to_end(tmp_path):
    ports = {name: free_port() for name in ("prometheus", "alertmanager", "webhook", "a", "b")}
    files = tls_files(tmp_path)
    files["password"] = tmp_path / "password"
    files["password"].write_text("e2e-secret\n")
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {files['cert']}\n  key_file: {files['key']}\n"
        f"basic_auth_users:\n  prometheus: {bcrypt_hash('e2e-secret')}\n")
    shifted = tmp_path / "office-now.pcap"
    shifted_capture(shifted)
    out = {name: tmp_path / f"{name}.jsonl" for name in ("events-a", "alerts-a", "events-b", "alerts-b")}
    logs = {name: tmp_path / f"{name}.log" for name in ("prometheus", "alertmanager", "sensor-a", "sensor-b")}
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    alertmanager = f"http://127.0.0.1:{ports['alertmanager']}"

    Webhook.received = []
    hooks = ThreadingHTTPServer(("127.0.0.1", ports["webhook"]), Webhook)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    procs: list[subprocess.Popen] = []

    def start(name: str, *argv: str, stdin=None) -> subprocess.Popen:
        log = logs[name].open("w")
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=stdin, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        start("alertmanager", ALERTMANAGER, f"--config.file={alertmanager_config(tmp_path, ports['webhook'])}",
              f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
              "--cluster.listen-address=")
        start("prometheus", PROMETHEUS, f"--config.file={prometheus_config(tmp_path, ports, files)}",
              f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{ports['prometheus']}")
        for name, url in (("Prometheus", prometheus), ("Alertmanager", alertmanager)):
            wait_for(f"{name} to be ready", lambda url=url: ready(url), logs)

        detector = [sys.executable, "-m", "detector", "replay", "--policy", str(POLICY)]
        sensor_a = start("sensor-a", *detector, "--events", str(out["events-a"]), "--alerts", str(out["alerts-a"]),
                         "--metrics-addr", f"127.0.0.1:{ports['a']}", "--linger", LINGER, "-", stdin=subprocess.PIPE)
        start("sensor-b", *detector, "--events", str(out["events-b"]), "--alerts", str(out["alerts-b"]),
              "--metrics-addr", f"127.0.0.1:{ports['b']}", "--linger", LINGER,
              "--web-config", str(tmp_path / "web.yml"), "--alertmanager", alertmanager, str(shifted))

        def feed() -> None:  # the capture arrives over about three seconds, as a live one would
            data = SAMPLE.read_bytes()
            step = len(data) // 4 + 1
            for start_at in range(0, len(data), step):
                sensor_a.stdin.write(data[start_at:start_at + step])
                sensor_a.stdin.flush()
                time.sleep(0.8)
            sensor_a.stdin.close()

        # Prometheus's service discovery hands over the targets after about five seconds;
        # sensor A gets its capture only once they are scraped, so scrapes see it grow.
        def scraped() -> bool:
            targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        wait_for("Prometheus to scrape both targets", scraped, logs)
        threading.Thread(target=feed, daemon=True).start()

        # -- the counters equal what the sensors wrote ---------------------------------------
        # Both runs are over when their last publication (after the final alert flush) is
        # scraped: the alert count then equals the lines of the alerts file.
        def final(job: str, alerts_file: Path):
            def probe():
                if not alerts_file.exists():
                    return None
                written = len(alerts_file.read_text().splitlines())
                emitted = promql(prometheus, f'tiktok_detector_alerts_emitted_total{{job="{job}"}}')
                return written and emitted and float(emitted[0]["value"][1]) == written
            return probe

        wait_for("sensor A's final counts", final("tiktok-detector", out["alerts-a"]), logs)
        wait_for("sensor B's final counts over TLS", final("tiktok-detector-tls", out["alerts-b"]), logs)
        assert by_label(promql(prometheus, "up"), "job") == {"tiktok-detector": 1, "tiktok-detector-tls": 1}
        for job, events_file in (("tiktok-detector", out["events-a"]), ("tiktok-detector-tls", out["events-b"])):
            events = [json.loads(line) for line in events_file.read_text().splitlines()]
            sel = f'{{job="{job}"}}'
            written = Counter((e["segment"], e["decision"]) for e in events)
            violations = by_label(promql(prometheus, f"tiktok_detector_violations_total{sel}"), "segment")
            exempt = by_label(promql(prometheus, f"tiktok_detector_exempt_matches_total{sel}"), "segment")
            assert violations == {s: written[(s, "violation")] for s in ("staff", "guest", "default")}, job
            assert exempt == {s: written[(s, "exempt")] for s in ("staff", "guest", "default")}, job
            assert violations["staff"] > 0 and violations["guest"] > 0 and exempt["staff"] > 0
            matches = {(m["metric"]["segment"], m["metric"]["proto"], m["metric"]["category"]): float(m["value"][1])
                       for m in promql(prometheus, f"tiktok_detector_matches_total{sel}")}
            for key, count in Counter((e["segment"], e["proto"], e["category"]) for e in events).items():
                assert matches[key] == count, (job, key)
            allowed = promql(prometheus, f"sum(tiktok_detector_allowed_matches_total{sel})")
            assert sum(matches.values()) - float(allowed[0]["value"][1]) == len(events)
            assert by_label(promql(prometheus, f"tiktok_detector_packets_total{sel}"), "job") == {job: 125}
            # The last window of each device is still open at the capture's end.
            devices = by_label(promql(prometheus, f"tiktok_detector_devices_in_violation{sel}"), "segment")
            open_devices = {(e["segment"], e["device"]) for e in events if e["decision"] == "violation"}
            assert devices == {s: sum(1 for seg, _ in open_devices if seg == s) for s in ("staff", "guest", "default")}

        # Sensor A's scrapes saw its counts grow while the capture was fed in.
        growth = promql(prometheus, 'increase(tiktok_detector_packets_total{job="tiktok-detector"}[1m])')
        assert float(growth[0]["value"][1]) > 0
        history = promql(prometheus, 'count_over_time(tiktok_detector_packets_total{job="tiktok-detector"}[1m])')
        assert float(history[0]["value"][1]) >= 3

        # -- the shipped violation rule fires; every shipped rule evaluates cleanly ------------
        def firing():
            alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
            hits = {(a["labels"]["job"], a["labels"]["segment"]) for a in alerts
                    if a["labels"]["alertname"] == "TikTokDeviceInViolation" and a["state"] == "firing"}
            return hits if len(hits) == 2 else None

        assert wait_for("TikTokDeviceInViolation to fire", firing, logs) == {
            ("tiktok-detector", "staff"), ("tiktok-detector-tls", "staff")}  # the guest segment is not paged
        groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == 8 and all(rule["health"] == "ok" for rule in rules), rules

        # -- Alertmanager holds both kinds of alert and routes them to the security office -----
        pushed = [json.loads(line) for line in out["alerts-b"].read_text().splitlines()]

        def in_alertmanager():
            alerts = get_json(f"{alertmanager}/api/v2/alerts")
            names = Counter(a["labels"]["alertname"] for a in alerts)
            return alerts if names["TikTokUse"] == len(pushed) and names["TikTokDeviceInViolation"] == 2 else None

        alerts = wait_for("both kinds of alert in Alertmanager", in_alertmanager, logs)
        uses = [a for a in alerts if a["labels"]["alertname"] == "TikTokUse"]
        assert {(a["labels"]["segment"], a["labels"]["category"], a["labels"]["device"]) for a in uses} == {
            (p["segment"], p["category"], p["device"]) for p in pushed}
        for alert in uses:
            starts, ends = (datetime.fromisoformat(alert[k].replace("Z", "+00:00")) for k in ("startsAt", "endsAt"))
            assert abs((ends - starts).total_seconds() - 900) < 0.01  # the policy's dedup window
            assert alert["status"]["state"] == "active"
        sensor_b_metrics = promql(prometheus, 'tiktok_detector_alertmanager_alerts_total{job="tiktok-detector-tls"}')
        assert by_label(sensor_b_metrics, "result") == {"sent": len(pushed), "failed": 0, "dropped": 0}

        def notified():
            names = {(path, a["labels"]["alertname"]) for path, body in Webhook.received for a in body["alerts"]}
            wanted = {("/security-office", "TikTokUse"), ("/security-office", "TikTokDeviceInViolation")}
            return names if wanted <= names else None

        notifications = wait_for("the security-office receiver to be notified", notified, logs)
        assert not {path for path, _ in notifications} - {"/security-office", "/sensor-operations"}

        # -- every PromQL expression of the dashboard is valid and returns data ---------------
        exprs, variables = dashboard_exprs()
        empty = [(title, expr) for title, expr in exprs if not promql(prometheus, substitute(expr))]
        assert not empty, empty
        for name, query in variables:
            selector, label = query[len("label_values("):-1].rsplit(",", 1)
            match = urllib.parse.urlencode({"match[]": substitute(selector)})
            series = get_json(f"{prometheus}/api/v1/series?{match}")
            assert {s.get(label.strip()) for s in series["data"]} - {None}, name
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
        hooks.shutdown()
        hooks.server_close()
