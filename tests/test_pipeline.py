"""The extractor's routing of TCP flows: first flights, later messages on the same flow,
and the skim that drops bulk data."""

from __future__ import annotations

from collections import Counter

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from detector.pipeline import Extractor, Settings

CLIENT, SERVER = "198.18.10.5", "198.19.0.80"


class Flow:
    """A client's side of one TCP connection, as frames."""

    def __init__(self, dport: int, isn: int = 1000) -> None:
        self.dport, self.seq = dport, isn + 1
        self.frames = [self._frame(isn, "S", b"")]

    def _frame(self, seq: int, flags: str, payload: bytes) -> bytes:
        return bytes(Ether(src="02:00:00:00:10:05") / IP(src=CLIENT, dst=SERVER)
                     / TCP(sport=40000, dport=self.dport, seq=seq, flags=flags) / payload)

    def send(self, payload: bytes) -> Flow:
        self.frames.append(self._frame(self.seq, "PA", payload))
        self.seq += len(payload)
        return self


def names(frames: list[bytes]) -> tuple[list[tuple[int, str, str]], Counter]:
    found: list[tuple[int, str, str]] = []
    stats: Counter = Counter()
    extractor = Extractor(Settings(), lambda o: found.append((o.frame, o.proto, o.name)), lambda b: None, stats)
    for number, frame in enumerate(frames, 1):
        extractor.feed(float(number), 1, frame, "t.pcap", number)
    return found, stats


def client_hello(name: bytes) -> bytes:
    sni = b"\x00" + len(name).to_bytes(2, "big") + name
    sni = len(sni).to_bytes(2, "big") + sni
    ext = b"\x00\x00" + len(sni).to_bytes(2, "big") + sni
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + len(ext).to_bytes(2, "big") + ext
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def test_every_request_of_a_keep_alive_connection():
    """Through an HTTP proxy one connection carries requests for many sites."""
    flow = Flow(3128).send(b"GET http://www.example.org/ HTTP/1.1\r\nHost: www.example.org\r\n\r\n")
    flow.send(b"body bytes that are no request")
    flow.send(b"GET http://www.tiktok.com/ HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n")
    found, stats = names(flow.frames)
    assert found == [(2, "http-host", "www.example.org"), (4, "http-host", "www.tiktok.com")]
    assert stats["skim.tcp"] == 1


def test_client_hello_after_hello_retry_request_and_after_starttls():
    flow = Flow(443).send(client_hello(b"www.tiktok.com"))
    flow.send(b"\x14\x03\x03\x00\x01\x01" + client_hello(b"www.tiktok.com"))  # after a HelloRetryRequest
    found, _ = names(flow.frames)
    assert found == [(2, "tls-sni", "www.tiktok.com"), (3, "tls-sni", "www.tiktok.com")]
    smtp = Flow(25).send(b"EHLO me\r\n").send(b"STARTTLS\r\n").send(client_hello(b"mail.example.org"))
    found, _ = names(smtp.frames)
    assert found == [(4, "tls-sni", "mail.example.org")]


def test_retransmitted_request_gives_no_second_event():
    flow = Flow(80).send(b"GET / HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n")
    flow.frames.append(flow.frames[-1])
    found, _ = names(flow.frames)
    assert found == [(2, "http-host", "www.tiktok.com")]


def test_bulk_data_without_a_flow_start_is_skimmed():
    flow = Flow(443)
    frames = [flow._frame(5000 + i * 100, "A", b"\x17\x03\x03" + bytes(97)) for i in range(5)]
    found, stats = names(frames)
    assert found == [] and stats["skim.tcp"] == 5 and stats["tcp.midstream"] == 0


def test_ech_and_alpn_reach_the_observation():
    from pathlib import Path

    from detector.sources.pcapfile import CaptureFile

    seen = []
    extractor = Extractor(Settings(), seen.append, lambda b: None)
    capture = CaptureFile(str(Path(__file__).resolve().parent.parent / "pcaps" / "tls-ech.pcap"))
    for ts, linktype, data, frame in capture:
        extractor.feed(ts, linktype, data, capture.name, frame)
    assert [(o.proto, o.name, o.ech) for o in seen] == [("tls-sni", "cloudflare-ech.com", True)]
