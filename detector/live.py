"""Live capture on a tap: capture workers in a PACKET_FANOUT group, one writer process.

Each worker opens every interface, joins the interface's fanout group (the kernel hashes
each flow, both directions alike, to one worker, so a flow's reassembly state stays in
one process) and runs the extraction stages. Only observations whose name matches a
signature leave a worker — the others are counted there and never written — together
with the DHCP/ARP bindings and, once a second, a snapshot of the worker's counters.

The parent process is the one writer: it owns the device table (bindings from every
worker meet there), the policy, alert deduplication, the events and alerts files, the
summary and the sums of the workers' counters that metrics read. Workers are a
``detector.workers.WorkerPool``, as replay's are: one pipe each, one message protocol; a
worker that waits on a writer fallen behind stops reading, and the kernel's ring buffer
then absorbs the burst (what it cannot hold is counted as drops).

Signals: SIGHUP reloads signatures, policy and device inventory (a bad file is refused,
logged and counted; the old ones stay); SIGTERM and SIGINT stop the workers, which read what the
kernel still holds, and the parent writes what is pending and the summary. Workers ignore
all three: a signal sent to the whole process group (a shell's kill of the job, systemd's
default KillMode) must not end a worker before it has drained its socket, so only the
parent decides, and tells them through their pipes. A worker whose parent dies
is killed by the kernel (PR_SET_PDEATHSIG) instead of capturing on, unread, for ever.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pwd
import select
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from detector.coverage import CoverageTable
from detector.counters import (
    CAPTURE_INTERFACE_DROPS, CAPTURE_KERNEL_DROPS, CAPTURE_RECEIVED, SIGNATURE_RELOADS,
    SIGNATURE_RELOAD_FAILURES,
)
from detector.decode import udp_tunnels
from detector.inventory import InventoryError, load_inventory
from detector.match import SignatureError, SignatureSet, load_signatures
from detector.pipeline import Extractor, Settings, preload, signature_of
from detector.records import UNNAMED
from detector.skim import CORRUPT, FRAME, KEPT, count_drops
from detector.policy import Policy, PolicyError, default_policy, load_policy
from detector.sources.live import READ_TIMEOUT_MS, LiveCapture, LiveCaptureError
from detector.workers import DONE, ERROR, LOG, READY, RECORDS, TimedMerge, WorkerCounts, WorkerPool

#: Seconds a worker waits for packets before it looks at its control pipe again.
READ_WAIT = 0.1
#: Seconds the writer holds workers' messages to put them in packet-time order.
REORDER_DELAY = 0.5
#: Seconds between the counter snapshots a worker sends.
SNAPSHOT_INTERVAL = 1.0
#: Seconds a stopping worker keeps reading what the kernel holds: on a busy link packets
#: keep arriving, and a stop must end; what arrives after the limit stays unread.
STOP_DRAIN_LIMIT = 2.0
#: Seconds without a packet after which a stopping worker knows the kernel holds none: the
#: kernel hands a block of packets over when it is full or READ_TIMEOUT_MS after it was
#: opened, so packets can wait that long unseen (twice it, for the timer's granularity).
DRAIN_IDLE = 2 * READ_TIMEOUT_MS / 1000
#: Fanout group ids are per network namespace; these are ours, one per interface.
FANOUT_GROUP_BASE = 0x7D00
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LiveOptions:
    interfaces: tuple[str, ...]
    workers: int
    settings: Settings
    snaplen: int
    buffer_bytes: int
    user: str | None
    signatures_path: str
    policy_path: str | None
    inventory_path: str | None = None


def load_config(options: LiveOptions) -> tuple[SignatureSet, Policy]:
    signatures = load_signatures(options.signatures_path)
    policy = load_policy(options.policy_path) if options.policy_path else default_policy()
    if options.inventory_path:
        policy = dataclasses.replace(policy, inventory=load_inventory(options.inventory_path))
    return signatures, policy


def drop_privileges(user: str | None) -> None:
    """Become ``user`` once the capture sockets are open (they stay usable).

    Only root changes user; a sensor started unprivileged with CAP_NET_RAW (the systemd
    unit) has nothing to drop. setuid from root to another user also clears every
    capability, so the process cannot open another capture socket afterwards.
    """
    if user is None or os.getuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def user_error(user: str | None) -> str | None:
    """A one-line reason when ``--user`` names no account (checked before forking)."""
    if user is None:
        return None
    try:
        pwd.getpwnam(user)
    except KeyError:
        return f"{user}: no such user"
    return None


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (it is no use alone: only
    the parent reads its results). Set after any change of user, which clears it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def worker_main(index: int, pipe: Connection, parent: int, options: LiveOptions, signatures: SignatureSet) -> None:
    """One capture worker: read, extract, send matches, bindings and counter snapshots."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the parent decides (module docstring)
        signal.signal(signum, signal.SIG_IGN)
    try:
        captures = []
        for n, interface in enumerate(options.interfaces):
            group = FANOUT_GROUP_BASE + n if options.workers > 1 else None
            captures.append(LiveCapture(interface, options.settings.dns_ports, options.settings.quic_ports,
                                        options.snaplen, options.buffer_bytes, group,
                                        udp_tunnels(options.settings.tunnel_ports)))
        preload()
        drop_privileges(options.user)
    except (LiveCaptureError, KeyError, PermissionError) as exc:
        pipe.send((ERROR, str(exc) if not isinstance(exc, KeyError) else f"no such user {options.user}"))
        return
    die_with_parent(parent)
    if index == 0:  # every worker opened the same interfaces: one says what libpcap warned of
        for capture in captures:
            if capture.warning:
                pipe.send((LOG, capture.warning))

    out: list[tuple] = []  # (packet time, record): the key the writer orders by
    current = [signatures]

    def on_observation(obs) -> None:
        if obs.evidence == UNNAMED:  # the writer, which sees every flow's DNS answers, infers it
            out.append((obs.ts, (obs, None)))
            return
        signature = signature_of(current[0], obs)
        if signature is not None:
            out.append((obs.ts, (obs, signature)))

    stats: Counter[str] = Counter()
    packet_ts = [0.0]
    extractor = Extractor(options.settings, on_observation, lambda binding: out.append((packet_ts[0], binding)),
                          stats, wanted=signatures)
    skimmer = extractor.skimmer  # one share of the flows already: the kernel's fanout split them
    names = [f"live:{capture.interface}" for capture in captures]

    def snapshot() -> dict[str, float]:
        """The extractor's counters and the capture's. Received and kernel drops are per
        socket, so the writer's sum over workers is right; the interface's drop count is
        one per device, the same in every worker, so only worker 0 reports it."""
        snap = extractor.snapshot()
        for capture in captures:
            counts = capture.stats()
            snap[CAPTURE_RECEIVED] = snap.get(CAPTURE_RECEIVED, 0) + counts.received
            snap[CAPTURE_KERNEL_DROPS] = snap.get(CAPTURE_KERNEL_DROPS, 0) + counts.kernel_drops
            if index == 0:
                snap[CAPTURE_INTERFACE_DROPS] = snap.get(CAPTURE_INTERFACE_DROPS, 0) + counts.interface_drops
        return snap

    by_fd = {capture.fileno(): (capture, name) for capture, name in zip(captures, names)}

    def feed(ts: float, linktype: int, frame: bytes, name: str, hint: int = 0) -> None:
        packet_ts[0] = ts
        extractor.feed(ts, linktype, frame, name, None, hint)

    def read_batch(capture: LiveCapture, name: str) -> int:
        """Walk one batch through the skim (the kernel's BPF was the first stage): the
        bulk it drops is counted there, the rest fed to the extractor."""
        data, meta = capture.read()
        pos, frames = 0, len(meta) // FRAME.size
        while pos < frames:
            skimmer.until = extractor.next_housekeeping
            status, pos, _, kept, last_ts, _, _, drops = skimmer.walk_frames(data, meta, pos, capture.linktype)
            for _, ts, offset, caplen, linktype, hint in KEPT.iter_unpack(kept):
                feed(ts, linktype, data[offset : offset + caplen], name, hint)
            count_drops(stats, drops)
            if last_ts is not None:
                extractor.clock(last_ts)
            if status == CORRUPT:  # libpcap never describes a frame outside its buffer; read what there is
                sec, usec, offset, caplen = FRAME.unpack_from(meta, pos * FRAME.size)
                feed(sec + usec * 1e-6, capture.linktype, data[offset : offset + caplen], name)
                pos += 1
        return frames

    def read_once(wait: float) -> int:
        read = 0
        ready, _, _ = select.select(list(by_fd), [], [], wait)
        for fd in ready:
            read += read_batch(*by_fd[fd])
        return read

    next_snapshot = time.monotonic() + SNAPSHOT_INTERVAL
    pipe.send((READY,))
    while True:
        read_once(READ_WAIT)
        due = time.monotonic() >= next_snapshot
        if out or due:
            pipe.send((RECORDS, out, snapshot() if due else None))
            out = []
            if due:
                next_snapshot = time.monotonic() + SNAPSHOT_INTERVAL
        if pipe.poll():
            message = pipe.recv()
            if message[0] == "reload":
                current[0] = message[1]
                extractor.want(message[1])
            elif message[0] == "stop":
                deadline = time.monotonic() + STOP_DRAIN_LIMIT
                while read_once(DRAIN_IDLE) and time.monotonic() < deadline:  # what the kernel still holds
                    pass
                pipe.send((RECORDS, out, None))
                pipe.send((DONE, {"snapshot": snapshot(), "coverage": extractor.coverage.export()}))
                for capture in captures:
                    capture.close()
                return


class LiveRun:
    """The writer side: starts the workers and routes their messages to the stages."""

    def __init__(self, options: LiveOptions, signatures: SignatureSet, policy: Policy,
                 on_match: Callable, on_binding: Callable, on_reload: Callable[[SignatureSet, Policy], None],
                 log: Callable[[str], None], counts: WorkerCounts) -> None:
        """``counts``: the workers' snapshots go there, and this side's reload counts;
        ``coverage`` gathers the workers' coverage tables as they stop."""
        self.options = options
        self.signatures = signatures
        self.policy = policy
        self.on_match = on_match
        self.on_binding = on_binding
        self.on_reload = on_reload
        self.log = log
        self.counts = counts
        self.coverage = CoverageTable(counts.own)
        self._stop = False
        self._reload = False
        self._merge = TimedMerge(REORDER_DELAY)
        self.pool = WorkerPool(options.workers, worker_main, (os.getpid(), options, signatures),
                               "tiktok-detector-worker")

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def request_reload(self, *_: object) -> None:
        self._reload = True

    def run(self, tick: Callable[[float], None], ready: Callable[[], None] = lambda: None) -> int:
        """Route messages until every worker is done; 2 if a worker could not start or died."""
        workers = set(range(len(self.pool)))
        pending_ready = set(workers)
        done: set[int] = set()
        failed = False
        stopping = False
        errors: set[str] = set()  # each worker fails alike on the same interface: say it once
        while done != workers:
            if self._reload:
                self._reload = False
                self._do_reload()
            if self._stop and not stopping:
                stopping = True
                for index in workers - done:
                    self.pool.send(index, ("stop",))
            ready_now = self.pool.waiting(workers - done, 0.2)
            now = time.monotonic()
            if not ready_now:
                self._release(now, tick)
                tick(time.time())
                continue
            for index in sorted(ready_now):
                for message in self.pool.pending(index):
                    kind = message[0]
                    if kind == RECORDS:
                        self._merge.add(message[1], now)
                        if message[2] is not None:
                            self.counts.update(index, message[2])
                    elif kind == READY:
                        pending_ready.discard(index)
                        if not pending_ready:
                            ready()
                    elif kind == LOG:
                        self.log(message[1])
                    elif kind == ERROR:
                        if message[1] not in errors:
                            errors.add(message[1])
                            self.log(message[1])
                        failed = True
                        done.add(index)
                        self._stop = True
                    elif kind == DONE:
                        self.counts.update(index, message[1]["snapshot"])
                        self.coverage.merge(message[1]["coverage"])
                        done.add(index)
                if index not in done and self.pool.ended(index):
                    self.log(f"capture worker {index} died (exit status {self.pool.processes[index].exitcode})"
                             + ("" if stopping else "; stopping"))
                    self._stop = True
                    failed = True
                    done.add(index)
            self._release(now, tick)
        self._release(float("inf"), tick)
        for process in self.pool.processes:
            process.join(timeout=5)
        return 2 if failed else 0

    def _release(self, now: float, tick: Callable[[float], None]) -> None:
        """Hand on, in packet-time order, what has waited REORDER_DELAY (workers' records
        interleave; see ``TimedMerge``)."""
        for record in self._merge.due(now):
            if isinstance(record, tuple):  # (observation, signature)
                self.on_match(*record)
                tick(record[0].ts)
            else:
                self.on_binding(record)

    def _do_reload(self) -> None:
        try:
            signatures, policy = load_config(self.options)
        except (SignatureError, PolicyError, InventoryError, OSError) as exc:
            self.counts.own[SIGNATURE_RELOAD_FAILURES] += 1
            self.log(f"reload refused, keeping the loaded set: {exc}")
            return
        self.signatures, self.policy = signatures, policy
        self.on_reload(signatures, policy)
        for index in range(len(self.pool)):
            self.pool.send(index, ("reload", signatures))
        self.counts.own[SIGNATURE_RELOADS] += 1
        self.log(f"reloaded {len(signatures.entries)} signatures (version {signatures.version}, "
                 f"sha256 {signatures.sha256[:16]}) and the policy ({policy.source}, "
                 f"sha256 {(policy.sha256 or 'built-in')[:16]})"
                 + (f" and the inventory ({len(policy.inventory.entries)} devices, sha256 "
                    f"{(policy.inventory.sha256 or '')[:16]})" if policy.inventory is not None else ""))


def install_signal_handlers(run: LiveRun) -> None:
    signal.signal(signal.SIGTERM, run.request_stop)
    signal.signal(signal.SIGINT, run.request_stop)
    signal.signal(signal.SIGHUP, run.request_reload)


def interface_error(interfaces: tuple[str, ...]) -> str | None:
    """A one-line reason when an interface does not exist (checked before forking)."""
    for interface in interfaces:
        if interface != "any" and not os.path.exists(f"/sys/class/net/{interface}"):
            return f"{interface}: no such network interface"
    return None


def log_line(message: str) -> None:
    print(f"tiktok-detector: {message}", file=sys.stderr, flush=True)
