"""Chart geometry for the report: bars and axis ticks, computed here, drawn as inline SVG.

A plotting library would draw these too, but a report of a busy month has a timeline per
device — thousands of small charts — and each must stay a few hundred bytes of SVG that a
browser draws without a script or a font file. These functions are pure (numbers in,
rectangles out), so the template only places what they computed, and tests check them
without a browser.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

#: Bin widths a timeline may use, in seconds: round numbers a reader can take in.
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
              86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 364 * 86400)
#: Colour-blind safe (Okabe & Ito), cycled when there are more segments.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#8c7a00", "#555555")
DAY = 86400
#: Beyond this many days the segment chart counts per week.
MAX_DAY_COLUMNS = 120
#: A day's column is at most this wide: one day of data is not a wall of colour.
MAX_COLUMN_WIDTH = 90

LEFT, RIGHT, TOP, BOTTOM = 40.0, 8.0, 8.0, 18.0


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    value: int
    title: str
    color: str = PALETTE[0]


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: float
    height: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    y_max: int
    caption: str

    @property
    def plot_bottom(self) -> float:
        return self.height - BOTTOM

    @property
    def left(self) -> float:
        return LEFT

    @property
    def right(self) -> float:
        return self.width - RIGHT

    @property
    def top(self) -> float:
        return TOP


def nice_step(span: float, max_steps: int) -> int:
    """The smallest step of ``NICE_STEPS`` that cuts ``span`` seconds into at most ``max_steps``."""
    for step in NICE_STEPS:
        if span / step <= max_steps:
            return step
    return math.ceil(span / max_steps / NICE_STEPS[-1]) * NICE_STEPS[-1]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _tick_label(ts: float, step: int, previous: float | None) -> str:
    moment = _utc(ts)
    if step >= DAY:
        return moment.strftime("%Y-%m-%d")
    if previous is None or _utc(previous).date() != moment.date():
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%H:%M:%S" if step < 60 else "%H:%M")


def _span_label(start: float, width: int) -> str:
    end = start + width
    fmt = "%Y-%m-%d" if width >= DAY else "%Y-%m-%d %H:%M:%S"
    if width >= DAY:
        last = _utc(end - 1).strftime(fmt)
        first = _utc(start).strftime(fmt)
        return first if first == last else f"{first} to {last}"
    return f"{_utc(start).strftime(fmt)} to {_utc(end).strftime('%H:%M:%S')} UTC"


def _ticks(start: float, end: float, x_of, max_ticks: int = 6) -> tuple[Tick, ...]:
    step = nice_step(max(end - start, 1.0), max_ticks)
    first = math.ceil(start / step) * step
    ticks: list[Tick] = []
    previous = None
    t = first
    while t <= end and len(ticks) <= max_ticks + 1:
        ticks.append(Tick(x_of(t), _tick_label(t, step, previous)))
        previous = t
        t += step
    return tuple(ticks)


def timeline(buckets: Iterable[tuple[float, int]], start: float, end: float, width: float = 640,
             height: float = 76, max_bins: int = 120) -> Chart:
    """Events over time between ``start`` and ``end`` (shared by all devices, so their
    charts line up), from ``(bucket start, count)`` pairs of a finer histogram."""
    span = max(end - start, 1.0)
    step = nice_step(span, max_bins)
    origin = math.floor(start / step) * step
    n = max(1, math.floor((end - origin) / step) + 1)
    counts = [0] * n
    for t, c in buckets:
        counts[min(max(int((t - origin) // step), 0), n - 1)] += c
    plot_w = width - LEFT - RIGHT
    plot_h = height - TOP - BOTTOM
    y_max = max(counts) or 1
    slot = plot_w / n
    bars = tuple(
        Bar(LEFT + i * slot, TOP + plot_h * (1 - c / y_max), max(slot - 1, 0.5), plot_h * c / y_max, c,
            f"{_span_label(origin + i * step, step)}: {c} event{'s' if c != 1 else ''}")
        for i, c in enumerate(counts) if c
    )
    x_of = lambda t: LEFT + (t - origin) / (n * step) * plot_w  # noqa: E731
    per = _step_name(step)
    return Chart(width, height, bars, _ticks(origin, origin + n * step, x_of), y_max, f"events per {per}")


def _step_name(step: int) -> str:
    for unit, seconds in (("week", 7 * DAY), ("day", DAY), ("hour", 3600), ("minute", 60)):
        if step % seconds == 0:
            count = step // seconds
            return unit if count == 1 else f"{count} {unit}s"
    return f"{step} seconds" if step != 1 else "second"


def segment_days(counts: Counter[tuple[str, int]], segments: Iterable[str], width: float = 900,
                 height: float = 220) -> tuple[Chart, dict[str, str]]:
    """Violations per segment per UTC day (per week past ``MAX_DAY_COLUMNS`` days), stacked;
    also the colour of each segment for the legend."""
    colors = {segment: PALETTE[i % len(PALETTE)] for i, segment in enumerate(segments)}
    if not counts:
        return Chart(width, height, (), (), 0, "no violations"), colors
    days = [day for _, day in counts]
    first, last = min(days), max(days)
    period = 1 if last - first < MAX_DAY_COLUMNS else 7
    n = (last - first) // period + 1
    columns: list[Counter[str]] = [Counter() for _ in range(n)]
    for (segment, day), c in counts.items():
        columns[(day - first) // period][segment] += c
    width = min(width, LEFT + RIGHT + n * MAX_COLUMN_WIDTH)
    plot_w = width - LEFT - RIGHT
    plot_h = height - TOP - BOTTOM
    y_max = max(sum(col.values()) for col in columns) or 1
    slot = plot_w / n
    bars: list[Bar] = []
    for i, column in enumerate(columns):
        y = TOP + plot_h
        start = (first + i * period) * DAY
        for segment in colors:
            c = column.get(segment, 0)
            if not c:
                continue
            h = plot_h * c / y_max
            y -= h
            bars.append(Bar(LEFT + i * slot + slot * 0.1, y, max(slot * 0.8, 0.5), h, c,
                            f"{segment}, {_span_label(start, period * DAY)}: {c} violation{'s' if c != 1 else ''}",
                            colors[segment]))
    x_of = lambda t: LEFT + (t / DAY - first) / (n * period) * plot_w + slot / 2  # noqa: E731
    ticks = _day_ticks(first, n, period, x_of)
    caption = "violations per segment per " + ("day" if period == 1 else "week") + " (UTC)"
    return Chart(width, height, tuple(bars), ticks, y_max, caption), colors


def _day_ticks(first: int, n: int, period: int, x_of) -> tuple[Tick, ...]:
    every = max(1, math.ceil(n / 8))
    return tuple(Tick(x_of((first + i * period) * DAY), _utc((first + i * period) * DAY).strftime("%Y-%m-%d"))
                 for i in range(0, n, every))
