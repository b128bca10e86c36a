"""A fleet end to end, with the shipped files of ``deploy/fleet/`` and real binaries:

- two live sensors (``tiktok-detector live --sensor NAME``), each in a network namespace of
  its own capturing on a veth link (``netns.VethPair``) on which a client asks for a TikTok
  name;
- a building Prometheus (``deploy/fleet/prometheus-building.yml``, with the shipped rules)
  scraping both, and a central Prometheus (``prometheus-central.yml``) federating from it;
- two Alertmanagers clustered over gossip on 127.0.0.1 (the flags of
  ``prometheus-alertmanager.default``) with the shipped route; both sensors push to both
  peers (``--alertmanager`` twice), and so does Prometheus;
- a webhook receiver in this test counting the notifications.

It checks that each (sensor, device) is notified once, not once per peer, though both
peers hold the alert; that the rule's alerts are notified once per sensor too; and that
every PromQL expression of the dashboard returns data for each sensor on the building
Prometheus and on the central one.

The Prometheus and Alertmanager processes listen on 127.0.0.1; the sensors' metrics and
pushes cross into the namespaces through ``netns.Forward`` relays (the sensors' addresses
are the same in both namespaces, the relays' ports differ). Every wait is bounded, every
process and namespace is removed at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from test_metrics import free_port
from test_prometheus_e2e import Webhook, alertmanager_config, dashboard_exprs, get_json, promql, ready, wait_for

import netns
from netns import Forward, VethPair

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FLEET = DEPLOY / "fleet"
POLICY = ROOT / "examples" / "policy.toml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
SENSORS = ("hq-floor1", "annex-lobby")
METRICS_PORT, AM_PORTS = 9100, (9093, 9094)
#: A peer that is not first in the cluster waits this long for the first one's notification
#: to reach it by gossip before sending its own (Alertmanager's default is 15 s).
PEER_TIMEOUT = 3
#: After the expected notifications, how long to keep listening for duplicates: past the
#: second peer's wait and one more group interval.
SETTLE = 3 * PEER_TIMEOUT
#: The TikTok name the clients ask for (a "web" entry: a violation on the default segment).
NAME = "www.tiktok.com"

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package prometheus)"),
    pytest.mark.skipif(ALERTMANAGER is None,
                       reason="alertmanager not installed (Debian package prometheus-alertmanager)"),
]


PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")


# -- the shipped files, checked by the tools ----------------------------------------------------


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
@pytest.mark.parametrize("name", ["prometheus-building.yml", "prometheus-central.yml"])
def test_fleet_prometheus_configs_pass_promtool(tmp_path, name):
    """As deployed: the rules file copied next to the building's config."""
    shutil.copy(FLEET / name, tmp_path / name)
    shutil.copy(DEPLOY / "prometheus" / "tiktok-detector.rules.yml", tmp_path)
    check = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / name)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian package prometheus-alertmanager)")
def test_pushed_alerts_are_grouped_per_sensor_and_device():
    config = str(DEPLOY / "alertmanager" / "alertmanager.example.yml")
    route = next(r for r in yaml.safe_load(Path(config).read_text())["route"]["routes"]
                 if 'alertname=~"TikTokUse|ByteDanceAppUse"' in r["matchers"])
    assert {"sensor", "device"} <= set(route["group_by"])  # the live test below shows it at work
    test = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={config}", "service=tiktok-detector",
                           "alertname=TikTokUse", "sensor=hq-floor1", "device=02:00:c6:12:0a:22"],
                          capture_output=True, text=True, timeout=60)
    assert test.stdout.strip() == "security-office", test.stdout + test.stderr


# -- the fleet, live ---------------------------------------------------------------------------


def building_config(tmp: Path, scrape: dict[str, int], alertmanagers: list[int]) -> Path:
    config = yaml.safe_load((FLEET / "prometheus-building.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "tiktok-detector.rules.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{port}" for port in alertmanagers]}]
    job = config["scrape_configs"][0]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"], "labels": {"sensor": name}}
                             for name, port in scrape.items()]
    path = tmp / "prometheus-building.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def central_config(tmp: Path, building: int) -> Path:
    config = yaml.safe_load((FLEET / "prometheus-central.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{building}"]}]
    path = tmp / "prometheus-central.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def cluster_args(listen: int, peer: int) -> list[str]:
    """The shipped default file's cluster flags, on 127.0.0.1 and with a short peer timeout."""
    text = (FLEET / "prometheus-alertmanager.default").read_text()
    args = re.search(r'^ARGS="(.*)"$', text, re.M).group(1).split()
    assert {a.split("=")[0] for a in args} == {"--cluster.listen-address", "--cluster.peer"}
    return [f"--cluster.listen-address=127.0.0.1:{listen}", f"--cluster.peer=127.0.0.1:{peer}",
            f"--cluster.peer-timeout={PEER_TIMEOUT}s"]


def ask(pair: VethPair, name: str) -> None:
    """The client sends one DNS query for ``name`` across the link (nothing answers)."""
    script = ("import socket,struct,sys;q=b''.join(bytes([len(l)])+l.encode() for l in sys.argv[2].split('.'))"
              "+b'\\0';s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              "s.sendto(struct.pack('!6H',0x1234,0x0100,1,0,0,0)+q+struct.pack('!2H',1,1),(sys.argv[1],53))")
    pair.run(pair.client, [sys.executable, "-c", script, pair.server.ip4, name], timeout=10)


def test_two_sensors_one_prometheus_federated_and_a_clustered_alertmanager(tmp_path):
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    ports = {name: free_port() for name in ("building", "central", "webhook", "am1", "am2", "gossip1", "gossip2",
                                            *SENSORS)}
    logs = {name: tmp_path / f"{name}.log" for name in ("building", "central", "am1", "am2", *SENSORS)}
    alertmanagers = [f"http://127.0.0.1:{ports['am1']}", f"http://127.0.0.1:{ports['am2']}"]
    building, central = f"http://127.0.0.1:{ports['building']}", f"http://127.0.0.1:{ports['central']}"
    Webhook.received = []
    hooks = ThreadingHTTPServer(("127.0.0.1", ports["webhook"]), Webhook)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    procs: list[subprocess.Popen] = []
    forwards: list[Forward] = []

    def start(name: str, *argv: str) -> None:
        with logs[name].open("w") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    with VethPair() as pair_a, VethPair() as pair_b:
        pairs = dict(zip(SENSORS, (pair_a, pair_b), strict=True))
        try:
            am_config = alertmanager_config(tmp_path, ports["webhook"])
            for n, (listen, peer) in enumerate((("gossip1", "gossip2"), ("gossip2", "gossip1")), 1):
                start(f"am{n}", ALERTMANAGER, f"--config.file={am_config}", f"--storage.path={tmp_path / f'am{n}'}",
                      f"--web.listen-address=127.0.0.1:{ports[f'am{n}']}", *cluster_args(ports[listen], ports[peer]))
            building_yml = building_config(tmp_path, {s: ports[s] for s in SENSORS}, [ports["am1"], ports["am2"]])
            for name, config in (("building", building_yml), ("central", central_config(tmp_path, ports["building"]))):
                start(name, PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / f'{name}-data'}",
                      f"--web.listen-address=127.0.0.1:{ports[name]}")
            for url in (*alertmanagers, building, central):
                wait_for(f"{url} to be ready", lambda url=url: ready(url), logs)

            def clustered(url: str):
                status = get_json(f"{url}/api/v2/status")["cluster"]
                return status["status"] == "ready" and len(status["peers"]) == 2
            for url in alertmanagers:
                wait_for(f"{url} to join its peer", lambda url=url: clustered(url), logs)

            # -- the sensors, each in its namespace, reached through relays ----------------------
            events = {}
            for name, pair in pairs.items():
                ns, ip = pair.server.ns, pair.server.ip4
                forwards.append(Forward(("127.0.0.1", ports[name]), (ip, METRICS_PORT), target_ns=ns))
                for am_port, am in zip(AM_PORTS, ("am1", "am2"), strict=True):
                    forwards.append(Forward((ip, am_port), ("127.0.0.1", ports[am]), listen_ns=ns))
                events[name] = tmp_path / f"events-{name}.jsonl"
                with logs[name].open("w") as log:
                    pair.spawn(pair.server, [sys.executable, "-m", "detector", "live", "-i", pair.server.ifname,
                                             "--policy", str(POLICY), "--sensor", name, "--events", str(events[name]),
                                             "--metrics-addr", f"{ip}:{METRICS_PORT}",
                                             *(f"--alertmanager=http://{ip}:{port}" for port in AM_PORTS)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
                wait_for(f"sensor {name} to capture", lambda name=name: "capturing on" in logs[name].read_text(), logs)

            def scraped(url: str):
                targets = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
                return len(targets) == len(SENSORS) and all(t["health"] == "up" for t in targets)
            wait_for("the building Prometheus to scrape both sensors", lambda: scraped(building), logs)

            for pair in pairs.values():
                ask(pair, NAME)
            written = {}
            for name in SENSORS:
                def wrote(name=name):
                    text = events[name].read_text() if events[name].exists() else ""
                    return [json.loads(line) for line in text.splitlines() if json.loads(line)["name"] == NAME]
                written[name] = wait_for(f"sensor {name}'s event", wrote, logs)[0]
                assert written[name]["sensor"] == name and written[name]["decision"] == "violation"
            devices = {name: event["device"] for name, event in written.items()}

            # -- one notification per sensor and device, though both peers hold each alert -------
            def uses(url: str):
                alerts = get_json(f"{url}/api/v2/alerts?filter=alertname%3D%22TikTokUse%22")
                return {(a["labels"]["sensor"], a["labels"]["device"]) for a in alerts}
            wanted = set(devices.items())
            for url in alertmanagers:
                assert wait_for(f"both TikTokUse alerts in {url}", lambda url=url: uses(url) == wanted and wanted,
                                logs)

            def notifications() -> Counter:
                return Counter((a["labels"]["alertname"], a["labels"].get("sensor"), a["labels"].get("device"),
                                a["labels"].get("instance"))
                               for path, body in Webhook.received if path == "/security-office"
                               for a in body["alerts"] if a["status"] == "firing")

            def all_notified():
                got = notifications()
                use = {(s, d) for (alert, s, d, _) in got if alert == "TikTokUse"}
                rule = {i for (alert, _, _, i) in got if alert == "TikTokDeviceInViolation"}
                return got if use == wanted and len(rule) == len(SENSORS) else None
            wait_for("a notification for each sensor", all_notified, logs)
            time.sleep(SETTLE)  # the second peer's turn has come and gone: it must have stayed silent
            got = notifications()
            assert all(count == 1 for count in got.values()), got
            assert len(got) == 2 * len(SENSORS), got
            for name in SENSORS:  # each sensor pushed its one alert to both peers, as its metrics say
                def pushed(name=name):
                    series = promql(building, f'tiktok_detector_alertmanager_alerts_total{{sensor="{name}"}}')
                    return {s["metric"]["result"]: float(s["value"][1]) for s in series}
                assert wait_for(f"sensor {name}'s push counts", lambda name=name: pushed(name).get("sent") == 2,
                                logs)
                assert pushed(name) == {"sent": 2, "failed": 0, "dropped": 0}

            # -- per sensor and fleet-wide: every dashboard query returns data for both sensors ---
            instances = {name: f"127.0.0.1:{ports[name]}" for name in SENSORS}

            def both_scraped_enough(url: str):
                counts = promql(url, 'count_over_time(tiktok_detector_packets_total{job="tiktok-detector"}[1m])')
                return {s["metric"]["instance"] for s in counts if float(s["value"][1]) >= 3} == set(
                    instances.values())
            for url in (building, central):
                wait_for(f"three samples of each sensor in {url}", lambda url=url: both_scraped_enough(url), logs)
            federated = promql(central, "tiktok_detector_build_info")
            assert {(s["metric"]["sensor"], s["metric"]["instance"], s["metric"]["building"]) for s in federated} == {
                (name, instance, "headquarters") for name, instance in instances.items()}
            exprs, variables = dashboard_exprs()
            for url in (building, central):
                for name, instance in instances.items():
                    empty = [(title, expr) for title, expr in exprs
                             if not promql(url, substitute(expr, promql_regex(instance)))]
                    assert not empty, (url, name, empty)
                fleet = [(title, expr) for title, expr in exprs if not promql(url, substitute(expr, ".+"))]
                assert not fleet, (url, fleet)
                listed = promql(url, f"group by (instance) ({substitute(variables_selector(variables), '.+')})")
                assert {s["metric"]["instance"] for s in listed} == set(instances.values()), url
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait(timeout=10)
            for forward in forwards:
                forward.close()
            hooks.shutdown()
            hooks.server_close()


def substitute(expr: str, instance: str) -> str:
    """What Grafana sends for one sensor (or all of them, ``.+``) and a 5-minute range."""
    for name, value in (("$__rate_interval", "1m"), ("$__range", "5m"), ("$job", ".+"), ("$instance", instance),
                        ("$segment", ".+")):
        expr = expr.replace(name, value)
    return expr


def promql_regex(value: str) -> str:
    """``value`` as a regular expression inside a PromQL string, as Grafana escapes it."""
    return re.escape(value).replace("\\", "\\\\")


def variables_selector(variables: list[tuple[str, str]]) -> str:
    """The series selector of the dashboard's sensor variable (``label_values(SELECTOR, instance)``)."""
    query = dict(variables)["$instance"]
    return query[len("label_values("):query.rindex(",")]
