"""Direct push of violations to Alertmanager's API v2, for sites that run no rule evaluation.

The Prometheus rules page on "devices in violation on a segment"; they cannot say which
device, because no metric label may hold one. This push can: one Alertmanager alert per
device and category, labelled ``segment``, ``category`` and ``device``, posted when the
device's first violation in that category opens a dedup window, with ``startsAt`` the
violation and ``endsAt`` the end of the window, so Alertmanager resolves it by itself.

Times are capture times, as everywhere in the sensor: live they are now; in a replay of an
old capture the windows ended long ago and Alertmanager records the alerts as resolved
(an audit does not page anyone).

Sending happens on a thread of its own behind a bounded queue: the packet loop never waits
on the network. A full queue drops the alert, a failed POST is retried a few times and then
given up; both are counted (the ``tiktok_detector_alertmanager_alerts_total`` metric), never
fatal.
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable

from detector.records import Verdict, rfc3339

API_PATH = "/api/v2/alerts"
ALERT_NAME = "TikTokUse"
#: Alerts waiting to be sent; past this many, new ones are dropped (and counted).
MAX_QUEUED = 4096
#: Alerts per POST.
MAX_BATCH = 64
#: Waits before the retries of a failed POST (seconds).
RETRY_DELAYS = (1.0, 2.0)


def alert_payload(verdict: Verdict, window: float) -> dict:
    """The API v2 ``postableAlert`` for the window ``verdict`` opens.

    Labels identify the alert (Alertmanager deduplicates on them); what varies between
    occurrences (hostname, address, the name, the evidence) goes in annotations.
    """
    obs = verdict.observation
    labels = {
        "alertname": ALERT_NAME,
        "service": "tiktok-detector",
        "severity": "warning",
        "segment": verdict.segment,
        "category": verdict.signature.category,
        "device": verdict.device,
    }
    who = verdict.hostname or obs.client_ip
    annotations = {
        "summary": f"{who} on segment {verdict.segment} reached TikTok ({verdict.signature.category})",
        "description": (f"{obs.proto} {obs.name} from {obs.client_ip} (device {verdict.device}); "
                        f"further use in the next {window:g} s is folded into this alert"),
        "client_ip": obs.client_ip,
        "name": obs.name,
        "evidence": f"{obs.pcap}#{obs.frame}",
    }
    if verdict.hostname:
        annotations["hostname"] = verdict.hostname
    info = verdict.info
    if info is not None:
        # The class routes (official devices page someone, say); who it is varies by device.
        labels["device_class"] = info.device_class
        annotations["device_id"] = info.id
        for key, value in (("owner", info.owner), ("department", info.department)):
            if value:
                annotations[key] = value
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(obs.ts),
        "endsAt": rfc3339(obs.ts + window),
    }


class AlertmanagerPush:
    """Posts one alert per (device, category) and dedup window to Alertmanager.

    ``opened`` runs on the packet loop's thread (the alert table calls it when a window
    opens) and only appends to a queue; a daemon thread posts.
    """

    def __init__(self, url: str, window: float, timeout: float = 5.0,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 opener: Callable[..., object] | None = None) -> None:
        """``opener``: urllib.request.urlopen unless given (a test's). urllib.request, with
        http.client and ssl, is imported here: only a sensor that pushes loads it."""
        import urllib.request

        self.endpoint, self._auth = _endpoint(url)
        self.window = window
        self.timeout = timeout
        self.retry_delays = retry_delays
        self._open = opener or urllib.request.urlopen
        self._queue: queue.Queue[dict | None] = queue.Queue(MAX_QUEUED)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error = ""
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def opened(self, verdict: Verdict) -> None:
        """Queue the alert of a dedup window that just opened (``AlertTable.on_open``).

        The posting thread starts with the first alert, not before: a sensor forks its
        workers first, and a thread running at a fork is copied half-way into the child."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alertmanager", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(alert_payload(verdict, self.window))
        except queue.Full:
            self.dropped += 1

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, without retries, and give up after about ``timeout`` seconds:
        what is still queued then counts as dropped."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._closing.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.dropped += 1

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first] if first is not None else []
            while first is not None and len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    first = None
                else:
                    batch.append(item)
            if batch:
                self._send(batch)
            if first is None:
                return

    def _send(self, batch: list[dict]) -> None:
        import urllib.error
        import urllib.request

        body = json.dumps(batch).encode()
        headers = {"Content-Type": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        for delay in (0.0, *self.retry_delays):
            if delay and self._closing.wait(delay):
                break  # closing: no more waiting
            try:
                request = urllib.request.Request(self.endpoint, body, headers, method="POST")
                with self._open(request, timeout=self.timeout) as response:
                    response.read()
                self.sent += len(batch)
                return
            except urllib.error.HTTPError as exc:
                self.last_error = f"HTTP {exc.code}"
                if 400 <= exc.code < 500:
                    break  # Alertmanager refused the alerts: sending them again will not help
            except (OSError, ValueError) as exc:
                self.last_error = str(exc)
        self.failed += len(batch)


def _endpoint(url: str) -> tuple[str, str | None]:
    """The API v2 alerts URL and the basic-auth header from ``http(s)://[user:pass@]host[:port][/prefix]``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    auth = None
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode()
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", "")), auth


def alertmanager_url(text: str) -> str:
    """argparse type: an Alertmanager base URL."""
    try:
        _endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text

