"""Audit reports: what an auditor hands a security officer after replaying weeks of captures.

``tiktok-detector report EVENTS.jsonl... -o REPORT.html`` (or ``replay ... --report``) turns
events into one self-contained HTML file — the captures and rule set it rests on, the
devices in violation, a timeline per device, violations per segment per day, and the
evidence (capture file and frame) of every event — plus CSV and JSON when asked.

The modules, in the order data flows through them:

- ``inputs``: events files read line by line (plain, gzip or stdin);
- ``pseudonym``: keyed HMAC tokens for MACs, IPs and hostnames (``--pseudonymize``);
- ``model``: streaming aggregation in bounded memory;
- ``meta`` / ``captures``: the run record replay leaves next to its events, and capture
  files located, hashed and spanned;
- ``verify``: the second opinion of Wireshark's dissectors (``--verify``);
- ``charts``, ``html``, ``export``: the outputs; ``build`` ties them together and
  ``command`` is the command-line glue.
"""

from detector.errors import UserError


class ReportError(UserError):
    """Bad input for a report (unreadable events file, unwritable output); one line.

    Here rather than in ``build``: a replay without ``--report`` raises it too, and does not
    load the report's code."""
