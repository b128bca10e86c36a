"""The report as one self-contained HTML file: inline CSS, inline SVG charts, a little JS.

Nothing is fetched: no fonts, images, scripts or styles from anywhere, and a Content
Security Policy (``default-src 'none'``, the inline style and script allowed by their
SHA-256 only) makes the browser refuse any load, should one ever slip in. Every value from
the events (names, hostnames) goes through Jinja2's autoescaping: a DHCP hostname is chosen
by whoever owns the device and must never become markup.

The script only sorts tables (click a column heading) and filters rows (type in the box);
the report reads completely without it, and prints with every section expanded.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import TextIO

import jinja2
from markupsafe import Markup

from detector.coverage import OUTCOMES, by_segment, share
from detector.records import PROTOS, rfc3339
from detector.report import charts
from detector.report.build import Report
from detector.report.model import BoundedSet, Device

#: Devices the coverage table lists (the busiest); the JSON report has every one.
MAX_COVERAGE_ROWS = 1000

CSS = """
:root { --ink: #1b1f24; --muted: #5b6570; --line: #d7dde3; --bg: #ffffff; --band: #f3f5f7;
        --bad: #b3261e; --good: #1e7d32; --accent: #0072b2; --warn: #8a5a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); }
header, main, footer { max-width: 1240px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; border-bottom: 3px solid var(--accent); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; }
.muted, .meta { color: var(--muted); }
nav { margin: 8px 0 10px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; background: var(--band); }
.card b { display: block; font-size: 22px; }
.card.bad b { color: var(--bad); }
.card.warn b { color: var(--warn); }
.card.good b { color: var(--good); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 12.5px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--band); font-weight: 600; white-space: nowrap; }
table.sortable th { cursor: pointer; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.nowrap { white-space: nowrap; }
.scroll { overflow-x: auto; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
.hash { word-break: break-all; }
.ok { color: var(--good); font-weight: 600; }
.no { color: var(--bad); font-weight: 600; }
.warn { background: #fff4e5; border: 1px solid #f0c36d; border-radius: 6px; padding: 6px 10px; margin: 8px 0; }
.filter { margin: 6px 0; }
.filter input { width: 340px; max-width: 100%; padding: 5px 8px; border: 1px solid var(--line); border-radius: 4px; }
article.device { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 8px; margin: 12px 0; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 10px system-ui, sans-serif; fill: var(--muted); }
svg .axis { stroke: #9aa5b1; stroke-width: 1; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend svg { display: inline-block; vertical-align: middle; }
footer { margin-top: 30px; padding: 14px 20px 30px; border-top: 1px solid var(--line); color: var(--muted); }
@media print { .filter, nav { display: none; } article.device { break-inside: avoid; } }
"""

JS = """
(function () {
  "use strict";
  function value(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var v = cell.getAttribute("data-v");
    return v !== null ? v : cell.textContent.trim();
  }
  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = rows.every(function (r) { var v = value(r, index); return v === "" || !isNaN(Number(v)); });
    rows.sort(function (a, b) {
      var x = value(a, index), y = value(b, index);
      var c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return ascending ? c : -c;
    });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, index, th); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(table, index, th); } });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input[data-filter]"), function (input) {
    var scope = document.getElementById(input.getAttribute("data-filter"));
    var count = document.getElementById(input.getAttribute("data-count"));
    if (!scope) { return; }
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase(), shown = 0;
      Array.prototype.forEach.call(scope.querySelectorAll("[data-group]"), function (group) {
        var any = false;
        Array.prototype.forEach.call(group.querySelectorAll("tbody tr"), function (r) {
          var hit = !q || r.textContent.toLowerCase().indexOf(q) !== -1;
          r.hidden = !hit;
          if (hit) { any = true; shown += 1; }
        });
        group.hidden = !any && q !== "";
      });
      if (count) { count.textContent = q ? shown + " matching row(s)" : ""; }
    });
  });
}());
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; style-src {_csp_hash(CSS)}; script-src {_csp_hash(JS)}; img-src data:; "
       "base-uri 'none'; form-action 'none'")

TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TikTok use audit report{% if m.first is not none %}, {{ day(m.first) }} to {{ day(m.last) }}{% endif %}</title>
<style>{{ css }}</style>
</head>
<body>
{%- macro chart_svg(c, label) -%}
<svg viewBox="0 0 {{ c.width|round(1) }} {{ c.height|round(1) }}" width="{{ c.width|round(1) }}" height="{{ c.height|round(1) }}" role="img" aria-label="{{ label }}">
<line class="axis" x1="{{ c.left }}" y1="{{ c.plot_bottom }}" x2="{{ c.right }}" y2="{{ c.plot_bottom }}"/>
<line class="axis" x1="{{ c.left }}" y1="{{ c.top }}" x2="{{ c.left }}" y2="{{ c.plot_bottom }}"/>
<text x="{{ c.left - 4 }}" y="{{ c.top + 8 }}" text-anchor="end">{{ c.y_max }}</text>
<text x="{{ c.left - 4 }}" y="{{ c.plot_bottom }}" text-anchor="end">0</text>
{%- for t in c.ticks %}
<line class="axis" x1="{{ t.x|round(1) }}" y1="{{ c.plot_bottom }}" x2="{{ t.x|round(1) }}" y2="{{ c.plot_bottom + 3 }}"/><text x="{{ t.x|round(1) }}" y="{{ c.height - 4 }}" text-anchor="middle">{{ t.label }}</text>
{%- endfor %}
{%- for b in c.bars %}
<rect x="{{ b.x|round(2) }}" y="{{ b.y|round(2) }}" width="{{ b.w|round(2) }}" height="{{ b.h|round(2) }}" fill="{{ b.color }}"><title>{{ b.title }}</title></rect>
{%- endfor %}
</svg>
{%- endmacro %}
{%- macro device_row(d) %}
<tr><td class="num" data-v="{{ ids[d.device] }}"><a href="#dev-{{ ids[d.device] }}">#{{ ids[d.device] }}</a></td><td class="mono">{{ joined(d.macs) }}</td><td class="mono">{{ joined(d.ips) }}</td>
<td>{{ joined(d.hostnames) }}{% if d.device_class %}<br><span class="muted">{{ d.device_class }}{% if d.owner %}: {{ d.owner }}{% endif %}{% if d.department %}, {{ d.department }}{% endif %}{% if d.notices %}; {{ num(d.notices) }} notice{{ 's' if d.notices != 1 }}{% endif %}</span>{% endif %}</td><td>{{ joined(d.segments) }}</td>
<td class="mono" data-v="{{ d.first }}">{{ day(d.first) }}<br>{{ clock(d.first) }}</td><td class="mono" data-v="{{ d.last }}">{{ day(d.last) }}<br>{{ clock(d.last) }}</td>
<td class="num">{{ num(d.violations) }}</td><td class="num">{{ num(d.exempt) }}</td><td class="num">{{ num(d.inferred) }}</td>
<td class="nowrap">{% for p in protos if d.protos.get(p) %}{{ p }} {{ num(d.protos[p]) }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
<td class="nowrap">{% for c, n in d.categories.most_common() %}{{ c }} {{ num(n) }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{%- endmacro %}
{%- macro outcome_cells(c) -%}
{%- for o in outcomes %}<td class="num" data-v="{{ c.connections.get(o, 0) }}">{% if loop.first %}{{ share(c.named, c.total) }}{% else %}{{ num(c.connections.get(o, 0)) }}{% endif %}</td>{% endfor %}<td class="num">{{ num(c.one_way) }}</td>
{%- endmacro %}
{%- macro swatch(color) -%}<svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true"><rect width="12" height="12" fill="{{ color }}"/></svg>{%- endmacro %}
<header>
<h1>TikTok use on the network: audit report</h1>
<p class="meta">Generated {{ utc(r.generated) }} by {{ r.tool }}. All times are UTC.
{%- if r.sensors %} Sensor{{ 's' if r.sensors|length != 1 }}: {{ r.sensors|join(', ') }}.{% endif %}
{%- if r.pseudonymized %} Device addresses and hostnames are pseudonymized.{% endif %}</p>
<nav><a href="#summary">Summary</a><a href="#inputs">Inputs</a><a href="#verification">Verification</a><a href="#segments">Segments</a><a href="#devices">Devices</a><a href="#blind-spots">Blind spots</a><a href="#coverage">Coverage</a><a href="#evidence">Evidence</a></nav>
</header>
<main>
<section id="summary">
<h2>Summary</h2>
<div class="cards">
<div class="card{% if violators %} bad{% endif %}"><b>{{ num(violators|length) }}</b>device{{ 's' if violators|length != 1 }} in violation</div>
<div class="card{% if m.violations %} bad{% endif %}"><b>{{ num(m.violations) }}</b>violation{{ 's' if m.violations != 1 }}</div>
<div class="card"><b>{{ num(m.exempt) }}</b>exempt match{{ 'es' if m.exempt != 1 }}</div>
<div class="card{% if blind %} warn{% endif %}"><b>{{ num(blind|length) }}</b>device{{ 's' if blind|length != 1 }} with blind spots</div>
<div class="card"><b>{{ num(r.captures|length) }}</b>capture{{ 's' if r.captures|length != 1 }}</div>
{%- if v %}
<div class="card {{ 'good' if not v.unconfirmed_count else 'bad' }}"><b>{{ num(v.confirmed) }} / {{ num(v.total) }}</b>events confirmed by Wireshark</div>
{%- endif %}
</div>
{%- if m.first is not none %}
<p>Events from <b>{{ utc(m.first) }}</b> to <b>{{ utc(m.last) }}</b>, in segment{{ 's' if m.segments|length != 1 }} {{ m.segments|join(', ') }}.
Each event is one name a device asked for (DNS question or answer, TLS or QUIC SNI, HTTP Host) that matched a TikTok signature
and is a violation on the device's segment under the policy, or would be but for an exemption.
{%- if m.apps %} Events of category {{ m.apps|join(', ') }} are other ByteDance apps, not TikTok: the policy makes them violations on
the segments that list them.{% endif %}</p>
{%- else %}
<p>No events: no device reached TikTok in the inputs below.</p>
{%- endif %}
{%- if r.pseudonymized %}
<p>Pseudonyms: each MAC address, IP address, hostname and inventory owner is replaced by an HMAC-SHA256 token under a key held by the report's author
(<code>mac-…</code>, <code>ip-…</code>, <code>host-…</code>, <code>owner-…</code>). The same key gives the same tokens in every report; without it a token cannot be traced to a device.</p>
{%- endif %}
{%- for note in r.unknown %}
<p class="warn">Unknown: {{ note }}</p>
{%- endfor %}
</section>

<section id="inputs">
<h2>Inputs</h2>
<h3>Captures</h3>
<table class="sortable">
<thead><tr><th>File</th><th>SHA-256</th><th class="num">Size</th><th class="num">Frames</th><th>Capture time span</th><th class="num">Events</th><th>Status</th></tr></thead>
<tbody>
{%- for c in r.captures %}{% set k = c.known %}
<tr><td class="mono">{{ c.name }}{% if c.info and c.info.path %}<br><span class="muted">{{ c.info.path }}</span>{% endif %}</td>
<td class="mono hash">{{ k.sha256 if k and k.sha256 else 'unknown' }}</td>
<td class="num" data-v="{{ k.size if k and k.size is not none else '' }}">{{ size(k.size) if k and k.size is not none else 'unknown' }}</td>
<td class="num">{{ num(k.frames) if k and k.frames is not none else 'unknown' }}</td>
<td>{% if k and k.first_ts is not none %}{{ utc(k.first_ts) }} to {{ utc(k.last_ts) }}{% if c.info is none %} <span class="muted">(recorded at replay)</span>{% endif %}{% else %}unknown{% if c.events_first is not none %}; its events span {{ utc(c.events_first) }} to {{ utc(c.events_last) }}{% endif %}{% endif %}</td>
<td class="num">{{ num(c.events) }}</td>
<td>{% if c.status == 'ok' %}<span class="ok">read</span>{% else %}<span class="no">{{ c.status }}</span>{% endif %}{% if c.note %}: {{ c.note }}{% endif %}</td></tr>
{%- else %}
<tr><td colspan="7">No capture is named by the events{% if not r.signatures %}, and no run record lists one{% endif %}.</td></tr>
{%- endfor %}
</tbody></table>
<h3>Events</h3>
{%- if r.inputs %}
<table>
<thead><tr><th>Events file</th><th class="num">Lines</th><th class="num">Events used</th><th>Skipped lines</th></tr></thead>
<tbody>
{%- for f in r.inputs %}
<tr><td class="mono">{{ f.path }}</td><td class="num">{{ num(f.lines) }}</td><td class="num">{{ num(f.events) }}</td>
<td>{% if f.skipped %}{{ num(f.skipped) }}: {{ f.examples|join('; ') }}{% if f.skipped > f.examples|length %}; …{% endif %}{% else %}none{% endif %}{% if f.error %}; {{ f.error }}{% endif %}</td></tr>
{%- endfor %}
</tbody></table>
{%- else %}
<p>Handed over directly by <code>tiktok-detector replay</code> as it read the captures.</p>
{%- endif %}
<h3>Signature set and policy</h3>
{%- for s in r.signatures %}
<p>Signatures: version <b>{{ s.version }}</b>, SHA-256 <code class="hash">{{ s.sha256 }}</code>, from <code>{{ s.path }}</code>.</p>
{%- else %}
<p class="warn">Signature set: unknown (no run record).</p>
{%- endfor %}
{%- for p in r.policies %}
<p>Policy: {% if p.path %}<code>{{ p.path }}</code>, SHA-256 <code class="hash">{{ p.sha256 }}</code>{% else %}built-in default (no policy file){% endif %};
alerts deduplicated over {{ p.dedup_window|int }} s; {{ p.exemptions }} exemption{{ 's' if p.exemptions != 1 }}.
Violations by segment: {% for s in p.segments %}<b>{{ s.name }}</b>: {{ s.violations|join(', ') }}{{ '; ' if not loop.last }}{% endfor %}.</p>
{%- if p.trusted_hostnames %}
<p class="warn">{{ p.trusted_hostnames }} exemption{{ 's' if p.trusted_hostnames != 1 }} rest{{ 's' if p.trusted_hostnames == 1 }} on a hostname alone (<code>trust_hostname = true</code>): a device gives itself that name in DHCP, so any device could claim it.</p>
{%- endif %}
{%- else %}
<p class="warn">Policy: unknown (no run record).</p>
{%- endfor %}
<p class="muted">Decoder settings: DNS on port{{ 's' if r.dns_ports|length != 1 }} {{ r.dns_ports|join(', ') }}; QUIC on UDP port{{ 's' if r.quic_ports|length != 1 }} {{ r.quic_ports|join(', ') }}.</p>
</section>

<section id="verification">
<h2>Second opinion: Wireshark</h2>
{%- if v %}
<p>Each evidence frame was re-read by Wireshark's dissectors (tshark {{ v.tshark }} through pyshark {{ v.pyshark }}, TCP reassembly on,
one tshark run per capture), independently of this tool's parsers. An event is confirmed when Wireshark shows the same name, in the
same role (DNS question, DNS answer, TLS SNI, QUIC SNI, HTTP Host), in the frame the event names.</p>
<p><b class="{{ 'ok' if not v.unconfirmed_count else 'no' }}">{{ num(v.confirmed) }} of {{ num(v.total) }} events confirmed.</b>
{%- if v.unconfirmed_count %} {{ num(v.unconfirmed_count) }} not confirmed{% if v.unconfirmed_count > v.unconfirmed|length %}; the first {{ num(v.unconfirmed|length) }} are listed{% endif %}.{% endif %}</p>
{%- for c in v.captures if c.error %}
<p class="warn">{{ c.name }}: {{ c.error }} ({{ num(c.checked) }} of {{ num(c.frames) }} evidence frame{{ 's' if c.frames != 1 }} checked).</p>
{%- endfor %}
{%- if v.unconfirmed %}
<table class="sortable"><thead><tr><th>Time</th><th>Device</th><th>Proto</th><th>Name</th><th>Capture</th><th class="num">Frame</th><th>Reason</th></tr></thead><tbody>
{%- for ts, device, proto, name, pcap, frame, reason in v.unconfirmed %}
<tr><td class="mono" data-v="{{ ts }}">{{ rfc3339(ts) }}</td><td class="mono">{{ device }}</td><td>{{ proto }}</td><td class="mono">{{ name }}</td><td class="mono">{{ pcap }}</td><td class="num">{{ frame if frame is not none else '' }}</td><td>{{ reason }}</td></tr>
{%- endfor %}
</tbody></table>
{%- endif %}
{%- else %}
<p>Not run. <code>tiktok-detector report --verify</code> (or <code>replay --report … --verify</code>) has Wireshark's dissectors
re-read every evidence frame and states how many events they confirm.</p>
{%- endif %}
</section>

<section id="segments">
<h2>Violations per segment per day</h2>
{%- if seg_chart.bars %}
{{ chart_svg(seg_chart, seg_chart.caption) }}
<p class="legend">{% for name, color in seg_colors.items() %}<span>{{ swatch(color) }} {{ name }}</span>{% endfor %}</p>
<table class="sortable"><thead><tr><th>Day (UTC)</th>{% for name in seg_colors %}<th class="num">{{ name }}</th>{% endfor %}<th class="num">Total</th></tr></thead><tbody>
{%- for d, row in seg_rows %}
<tr><td class="mono">{{ d }}</td>{% for name in seg_colors %}<td class="num">{{ num(row.get(name, 0)) }}</td>{% endfor %}<td class="num">{{ num(row.values()|sum) }}</td></tr>
{%- endfor %}
</tbody></table>
{%- else %}
<p>No violations.</p>
{%- endif %}
</section>

<section id="devices">
<h2>Devices in violation</h2>
{%- if violators %}
<p class="filter"><input type="search" placeholder="Filter devices (address, hostname, segment, name…)" aria-label="Filter devices" data-filter="devices-scope" data-count="devices-count"> <span id="devices-count" class="muted"></span></p>
<div id="devices-scope"><div data-group="1">
<div class="scroll"><table class="sortable" id="devices-table">
<thead><tr><th class="num">#</th><th>MAC</th><th>IP addresses</th><th>Hostname</th><th>Segment</th><th>First seen (UTC)</th><th>Last seen (UTC)</th><th class="num">Violations</th><th class="num">Exempt</th><th class="num">Inferred</th><th>By protocol</th><th>By category</th></tr></thead>
<tbody>
{%- for d in violators %}{{ device_row(d) }}{% endfor %}
</tbody></table></div></div></div>
{%- else %}
<p>None.</p>
{%- endif %}
{%- if exempt_only %}
<h3>Devices with exempt, inferred or notice matches only</h3>
<p class="muted">These devices matched TikTok signatures on a segment where that is a violation, but an exemption of the policy covers them,
or the policy makes matches of their inventory class notices (a personal device: counted, never alerted; shown under the hostname),
or the name was not seen and is inferred: the device connected, without showing a TikTok name (no SNI, ECH), to an address a DNS answer
had just given it for one (the event's evidence names that answer's frame).</p>
<div class="scroll"><table class="sortable">
<thead><tr><th class="num">#</th><th>MAC</th><th>IP addresses</th><th>Hostname</th><th>Segment</th><th>First seen (UTC)</th><th>Last seen (UTC)</th><th class="num">Violations</th><th class="num">Exempt</th><th class="num">Inferred</th><th>By protocol</th><th>By category</th></tr></thead>
<tbody>
{%- for d in exempt_only %}{{ device_row(d) }}{% endfor %}
</tbody></table></div>
{%- endif %}
{%- if m.untracked_events %}
<p class="warn">{{ num(m.untracked_events) }} event(s) of devices beyond the first {{ num(m.max_devices) }} are counted in the totals and charts but not itemised.</p>
{%- endif %}
</section>

<section id="blind-spots">
<h2>Blind spots</h2>
<p>What the sensor could not see. These devices resolved names over encrypted DNS (DNS over HTTPS, TLS or QUIC), sent traffic
through a relay such as iCloud Private Relay, or called a VPN service, at least once: whatever they reached that way showed
no name to a passive sensor. For them, "no violation" means "none seen". Each row counts the blind-spot events of a device by
kind and lists the first of them as evidence. <i>ECH</i> counts the device's events whose ClientHello carried an Encrypted
ClientHello extension: their name is the public (outer) one, and the real one may differ (browsers also send the extension
as GREASE, so it says "may", not "does").</p>
{%- if m.response_only %}
<p>One-way view: {{ num(m.response_only) }} event{{ 's' if m.response_only != 1 }} named a DNS question read from an answer whose
query the capture lacks (<code>"seen": "response-only"</code>): the tap saw those exchanges in one direction only. The
device is the answer's destination; names the devices sent the other way (TLS, QUIC, HTTP) may be missing for it.</p>
{%- endif %}
{%- if blind %}
<div class="scroll"><table class="sortable">
<thead><tr><th>Device</th><th>IP addresses</th><th>Hostname</th><th>Segment</th><th class="num">Violations</th><th>Blind spots</th><th class="num">ECH</th><th>Evidence (first)</th></tr></thead>
<tbody>
{%- for d in blind %}
<tr><td class="mono">{{ d.device }}</td><td class="mono">{{ joined(d.ips) }}</td><td>{{ joined(d.hostnames) }}</td><td>{{ joined(d.segments) }}</td>
<td class="num">{{ num(d.violations) }}</td><td>{% for c, n in d.blind.most_common() %}{{ c }} {{ num(n) }}{{ ', ' if not loop.last }}{% endfor %}</td>
<td class="num">{{ num(d.ech) }}</td>
<td>{% for e in d.blind_evidence %}<span class="mono">{{ e.name }}</span> ({{ e.proto }}, {{ e.pcap }}{% if e.frame is not none %} frame {{ e.frame }}{% endif %}){{ '; ' if not loop.last }}{% endfor %}</td></tr>
{%- endfor %}
</tbody></table></div>
{%- else %}
<p>None seen: no event of the inputs shows encrypted DNS, a relay or a VPN service.</p>
{%- endif %}
</section>

<section id="coverage">
<h2>Coverage</h2>
<p>How much the sensor saw. Every TCP connection whose first message was read and every QUIC connection whose Initial was
decrypted counts once, by what it showed of the server's name: <i>name seen</i> (TLS or QUIC SNI, HTTP Host), <i>ECH</i>
(an Encrypted ClientHello: only its public outer name), <i>no name</i> (a ClientHello without one, or unreadable), <i>not TLS/HTTP</i>
(another protocol) or <i>VPN</i> (a VPN handshake, after which nothing shows a name). DNS lookups are not counted here. A device
with a low share of named connections and no violation was largely unseen, not shown clean. <i>One-way</i> counts the TCP
connections whose SYN no SYN-ACK answered: the tap saw the client's side only. Devices without any event are
counted in their segment, never named: the report names no device the policy has nothing to say about.</p>
{%- if coverage is none %}
<p class="warn">Unknown: no run record of these events holds coverage.</p>
{%- elif not coverage %}
<p>No connection was read.</p>
{%- else %}
<h3>By segment</h3>
<div class="scroll"><table>
<thead><tr><th>Segment</th><th class="num">Devices</th><th class="num">Connections</th><th class="num">Name seen</th><th class="num">ECH</th><th class="num">No name</th><th class="num">Not TLS/HTTP</th><th class="num">VPN</th><th class="num">One-way</th></tr></thead>
<tbody>
{%- for g in coverage_segments %}
<tr><td>{{ g.segment }}</td><td class="num">{{ num(g.devices) }}</td><td class="num">{{ num(g.total) }}</td>{{ outcome_cells(g) }}</tr>
{%- endfor %}
</tbody></table></div>
<h3>By device</h3>
<p class="muted">Most connections first{% if coverage|length > max_coverage_rows %}; the first {{ num(max_coverage_rows) }} of {{ num(coverage|length) }} devices (the JSON report lists them all){% endif %}. Blind spots are the device's blind-spot events (above).</p>
<div class="scroll"><table class="sortable">
<thead><tr><th>Device</th><th>Hostname</th><th>Segment</th><th class="num">Connections</th><th class="num">Name seen</th><th class="num">ECH</th><th class="num">No name</th><th class="num">Not TLS/HTTP</th><th class="num">VPN</th><th class="num">One-way</th><th class="num">Blind spots</th><th class="num">Violations</th></tr></thead>
<tbody>
{%- for c in coverage[:max_coverage_rows] %}{% set d = m.devices.get(c.device) %}
<tr><td class="mono">{% if c.device is none %}({{ num(c.devices) }} device{{ 's' if c.devices != 1 }} without an event){% else %}{{ c.device }}{% endif %}</td><td>{{ c.hostname or '' }}</td><td>{{ c.segment }}</td><td class="num">{{ num(c.total) }}</td>{{ outcome_cells(c) }}
<td class="num">{{ num(d.blind.total() if d else 0) }}</td><td class="num">{{ num(d.violations if d else 0) }}</td></tr>
{%- endfor %}
</tbody></table></div>
{%- endif %}
</section>

<section id="evidence">
<h2>Evidence by device</h2>
<p>Per device (named by its MAC address, else its IP address): its events over time (one chart per device, all on the same time axis) and its events, earliest first.
The capture file and frame number locate each in Wireshark (<i>Go to packet</i>).
{%- if m.evidence_per_device %} At most the {{ num(m.evidence_per_device) }} earliest events of a device are listed here; the events files hold them all.{% endif %}</p>
<p class="filter"><input type="search" placeholder="Filter evidence (name, proto, category, capture…)" aria-label="Filter evidence" data-filter="evidence-scope" data-count="evidence-count"> <span id="evidence-count" class="muted"></span></p>
<div id="evidence-scope">
{%- for d in devices %}
<article class="device" id="dev-{{ ids[d.device] }}" data-group="1">
<h3>#{{ ids[d.device] }} <span class="mono">{{ d.device }}</span>{% if d.hostnames|length %} ({{ joined(d.hostnames) }}){% endif %}</h3>
<p class="muted">{{ joined(d.segments) }}; {{ num(d.violations) }} violation{{ 's' if d.violations != 1 }}, {{ num(d.exempt) }} exempt; {{ utc(d.first) }} to {{ utc(d.last) }}.
Names: {% for name, n in d.names.most_common(8) %}<span class="mono">{{ name }}</span> ({{ num(n) }}){{ ', ' if not loop.last }}{% endfor %}{% if d.names|length > 8 or d.other_names %}, …{% endif %}.</p>
{{ chart_svg(timelines[d.device], 'events over time of ' ~ d.device) }}
<p class="muted">{{ timelines[d.device].caption }}</p>
<table class="sortable evidence">
<thead><tr><th>Time (UTC)</th><th>Proto</th><th>Name</th><th>Category</th><th>Decision</th><th>Capture</th><th class="num">Frame</th><th>Wireshark</th></tr></thead>
<tbody>
{%- for e in d.evidence() %}
<tr><td class="mono" data-v="{{ e.ts }}">{{ rfc3339(e.ts) }}</td><td>{{ e.proto }}</td><td class="mono">{{ e.name }}{% if e.answer_frame is not none %}<br><span class="muted">inferred: DNS answer in {{ e.answer_pcap }} frame {{ e.answer_frame }}</span>{% endif %}</td><td>{{ e.category }}</td><td>{{ e.decision }}</td>
<td class="mono">{{ e.pcap }}</td><td class="num">{{ e.frame if e.frame is not none else '' }}</td>
<td>{% if v %}{% if v.is_confirmed(*e.checked_as()) %}<span class="ok">confirmed</span>{% else %}<span class="no">not confirmed</span>{% endif %}{% else %}<span class="muted">not checked</span>{% endif %}</td></tr>
{%- endfor %}
</tbody></table>
{%- if d.evidence_omitted %}
<p class="muted">{{ num(d.evidence_omitted) }} later event{{ 's' if d.evidence_omitted != 1 }} of this device not listed.</p>
{%- endif %}
</article>
{%- else %}
<p>No evidence.</p>
{%- endfor %}
</div>
</section>
</main>
<footer>
Produced by {{ r.tool }}, a passive sensor: it reads captures and never blocks or alters traffic. Only names that matched a TikTok
signature (or another ByteDance app's, where the policy asks for it) and are policy-relevant appear in this report; every other name the captures hold was counted, never written.
</footer>
<script>{{ js }}</script>
</body>
</html>
"""


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M:%S")


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def _num(n: int | float) -> str:
    return f"{n:,}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _joined(values: BoundedSet) -> str:
    text = ", ".join(values)
    return f"{text}, and more" if values.more else (text or "unknown")


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
_TEMPLATE = _ENV.from_string(TEMPLATE)


def render_html(report: Report, stream: TextIO) -> None:
    """Write the report as one HTML document to ``stream``."""
    model = report.model
    violators = model.violators()
    exempt_only = model.exempt_only()
    devices: list[Device] = violators + exempt_only
    start = model.first if model.first is not None else 0.0
    end = model.last if model.last is not None else start
    timelines = {d.device: charts.timeline(d.timeline.buckets(), start, end, width=1000, height=80) for d in devices}
    seg_chart, seg_colors = charts.segment_days(model.segment_days, model.segments, height=160)
    rows: dict[str, dict[str, int]] = {}
    for (segment, day), count in sorted(model.segment_days.items(), key=lambda item: item[0][1]):
        rows.setdefault(_day(day * charts.DAY), {})[segment] = count
    for chunk in _TEMPLATE.generate(
        r=report, m=model, v=report.verification, violators=violators, exempt_only=exempt_only, devices=devices,
        blind=model.with_blind_spots(), coverage=report.coverage, coverage_segments=by_segment(report.coverage or ()),
        max_coverage_rows=MAX_COVERAGE_ROWS, outcomes=OUTCOMES, share=share,
        ids={d.device: i for i, d in enumerate(devices, 1)}, timelines=timelines, seg_chart=seg_chart,
        seg_colors=seg_colors, seg_rows=sorted(rows.items()), protos=PROTOS, css=Markup(CSS), js=Markup(JS), csp=CSP, utc=_utc, clock=_clock, day=_day, num=_num, size=_size, joined=_joined, rfc3339=rfc3339,
    ):
        stream.write(chunk)
