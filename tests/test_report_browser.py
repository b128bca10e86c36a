"""The HTML report in a real browser: headless Chromium opens it from the file, runs its
script, and must send no request beyond the file itself and raise no error.

Chromium runs with background networking off and is watched through the DevTools protocol
(``--remote-debugging-port``, on loopback): every request the page makes
(``Network.requestWillBeSent``), every uncaught exception (``Runtime.exceptionThrown``) and
every console or browser error (``Runtime.consoleAPICalled``, ``Log.entryAdded``: a blocked
load or a Content-Security-Policy violation shows there) is collected. The screenshot of the
sample report is ``docs/report-sample.png``; set ``REPORT_SCREENSHOT=docs/report-sample.png``
to write it again.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
POLICY = ROOT / "examples" / "policy.toml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT = 60.0
WIDTH, HEIGHT = 1280, 2000
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
    f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars",
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium; make test installs it as root)")


class DevTools:
    """A minimal DevTools-protocol client over one page's websocket: calls, and events kept."""

    def __init__(self, socket) -> None:  # noqa: ANN001 - a websockets ClientConnection
        self.socket = socket
        self.events: list[dict] = []
        self._id = 0

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            self.events.append(message)
            if message.get("method") == method:
                return message

    def drain(self, seconds: float) -> None:
        """Collect what arrives in the next ``seconds`` (late requests, late errors)."""
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.socket.recv(timeout=left)))
            except TimeoutError:
                return
            except ConnectionClosed:
                return

    def of(self, method: str) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == method]


@pytest.fixture()
def browser(tmp_path):
    pytest.importorskip("websockets", reason="the DevTools client needs the websockets package (a test dependency)")
    from websockets.sync.client import connect

    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert process.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT) as response:
            pages = [t for t in json.load(response) if t["type"] == "page"]
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=TIMEOUT) as socket:
            yield DevTools(socket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_sample_report_loads_offline_without_errors(browser, tmp_path):
    events = tmp_path / "events.jsonl"
    report = tmp_path / "report.html"
    replay = subprocess.run([sys.executable, "-m", "detector", "replay", "--policy", str(POLICY), "--events", str(events),
                             "--report", str(report), "--verify", str(SAMPLE)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert replay.returncode == 0, replay.stderr
    url = report.as_uri()
    for domain in ("Network", "Runtime", "Log", "Page"):
        browser.call(f"{domain}.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired")
    browser.drain(0.5)

    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    assert _png_size(shot) == (WIDTH, HEIGHT)
    (tmp_path / "report.png").write_bytes(shot)
    if os.environ.get("REPORT_SCREENSHOT"):
        Path(os.environ["REPORT_SCREENSHOT"]).write_bytes(shot)

    # The script works: the evidence filter and a column sort, as a reader would use them.
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    result = browser.call("Runtime.evaluate", returnByValue=True, expression="""(() => {
        const input = document.querySelector('input[data-filter="evidence-scope"]');
        input.value = 'tls-sni';
        input.dispatchEvent(new Event('input'));
        const rows = [...document.querySelectorAll('#evidence-scope tbody tr')];
        const shown = rows.filter(r => !r.hidden).length;
        const count = document.getElementById('evidence-count').textContent;
        const violations = [...document.querySelectorAll('#devices-table thead th')]
            .findIndex(th => th.textContent === 'Violations');
        document.querySelectorAll('#devices-table thead th')[violations].click();
        const first = document.querySelector('#devices-table tbody tr').cells[violations].textContent;
        return {shown, count, first, title: document.title};
    })()""")["result"]["value"]
    assert result["shown"] == sum(e["proto"] == "tls-sni" for e in lines)
    assert result["count"] == f"{result['shown']} matching row(s)"
    assert result["first"] == "3"  # ascending: galaxy-s23 before bob-iphone's 12
    assert result["title"].startswith("TikTok use audit report")
    browser.drain(0.3)

    requests = [r["request"]["url"] for r in browser.of("Network.requestWillBeSent")]
    assert requests == [url], f"requests beyond the file: {requests}"
    assert browser.of("Runtime.exceptionThrown") == []
    assert [c for c in browser.of("Runtime.consoleAPICalled") if c["type"] in ("error", "assert", "warning")] == []
    assert [e["entry"] for e in browser.of("Log.entryAdded") if e["entry"]["level"] in ("error", "warning")] == []
