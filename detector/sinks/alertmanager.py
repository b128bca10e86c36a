"""Direct push of violations to Alertmanager's API v2, for sites that run no rule evaluation.

The Prometheus rules page on "devices in violation on a segment"; they cannot say which
device, because no metric label may hold one. This push can: one Alertmanager alert per
device and category, labelled ``segment``, ``category``, ``device`` and ``sensor``, posted when the
device's first violation in that category opens a dedup window, with ``startsAt`` the
violation and ``endsAt`` the end of the window, so Alertmanager resolves it by itself.

Times are capture times, as everywhere in the sensor: live they are now; in a replay of an
old capture the windows ended long ago and Alertmanager records the alerts as resolved
(an audit does not page anyone).

Sending happens on a thread of its own behind a bounded queue: the packet loop never waits
on the network. A full queue drops the alert, a failed POST is retried a few times and then
given up; both are counted (the ``tiktok_detector_alertmanager_alerts_total`` metric), never
fatal.

An Alertmanager cluster wants every alert from every client (its peers deduplicate the
notifications, not the alerts): ``--alertmanager`` is repeatable, and each peer gets a
push of its own (``AlertmanagerPeers``), so one peer that is down or slow delays nothing
sent to the others.
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import time
import urllib.parse
from collections.abc import Callable

from detector.records import BYTEDANCE_APP_CATEGORIES, Verdict, product, rfc3339
from detector.sinks.sender import QueuedSender

API_PATH = "/api/v2/alerts"
ALERT_NAME = "TikTokUse"
#: The alert of another ByteDance app (CapCut, Lark …) a segment makes a violation: not TikTok.
APP_ALERT_NAME = "ByteDanceAppUse"
#: Alerts waiting to be sent; past this many, new ones are dropped (and counted).
MAX_QUEUED = 4096
#: Alerts per POST.
MAX_BATCH = 64
#: Waits before the retries of a failed POST (seconds).
RETRY_DELAYS = (1.0, 2.0)


def alert_payload(verdict: Verdict, window: float, sensor: str | None = None) -> dict:
    """The API v2 ``postableAlert`` for the window ``verdict`` opens.

    Labels identify the alert (Alertmanager deduplicates on them); what varies between
    occurrences (hostname, address, the name, the evidence) goes in annotations. The
    ``sensor`` label keeps apart what two sensors saw of one device (a laptop that moved
    between buildings): each sensor's alert is its own.
    """
    obs = verdict.observation
    labels = {
        "alertname": APP_ALERT_NAME if verdict.signature.category in BYTEDANCE_APP_CATEGORIES else ALERT_NAME,
        "service": "tiktok-detector",
        "severity": "warning",
        "segment": verdict.segment,
        "category": verdict.signature.category,
        "device": verdict.device,
    }
    if sensor:
        labels["sensor"] = sensor
    who = verdict.hostname or obs.client_ip
    annotations = {
        "summary": f"{who} on segment {verdict.segment} reached {product(verdict.signature.category)} "
                   f"({verdict.signature.category})",
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


class AlertmanagerPush(QueuedSender[dict]):
    """Posts one alert per (device, category) and dedup window to Alertmanager.

    ``opened`` runs on the packet loop's thread (the alert table calls it when a window
    opens) and only queues (``QueuedSender``); its thread posts, in batches.
    """

    def __init__(self, url: str, window: float, timeout: float = 5.0,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 opener: Callable[..., object] | None = None, sensor: str | None = None) -> None:
        """``opener``: urllib.request.urlopen unless given (a test's). urllib.request, with
        http.client and ssl, is imported here: only a sensor that pushes loads it."""
        import urllib.request

        super().__init__("alertmanager", MAX_QUEUED)
        self.endpoint, self._auth = _endpoint(url)
        self.window = window
        self.sensor = sensor
        self.timeout = timeout
        self.retry_delays = retry_delays
        self._open = opener or urllib.request.urlopen

    def opened(self, verdict: Verdict) -> None:
        """Queue the alert of a dedup window that just opened (``AlertTable.on_open``)."""
        self._enqueue(alert_payload(verdict, self.window, self.sensor))

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


class AlertmanagerPeers:
    """One push per Alertmanager of a cluster, used as one: what a session holds."""

    def __init__(self, urls: list[str], window: float, sensor: str | None = None) -> None:
        self.pushes = [AlertmanagerPush(url, window, sensor=sensor) for url in urls]

    @property
    def window(self) -> float:
        return self.pushes[0].window

    @window.setter
    def window(self, seconds: float) -> None:
        for push in self.pushes:
            push.window = seconds

    def opened(self, verdict: Verdict) -> None:
        for push in self.pushes:
            push.opened(verdict)

    def counts(self) -> dict[str, int]:
        """Pushes by result, summed over the peers (an alert sent to two peers counts twice)."""
        totals = {"sent": 0, "failed": 0, "dropped": 0}
        for push in self.pushes:
            for result, count in push.counts().items():
                totals[result] += count
        return totals

    def close(self, timeout: float = 10.0) -> None:
        """Close every push; together within about ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for push in self.pushes:
            push.close(max(deadline - time.monotonic(), 0.1))


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

