"""The session: the stages a run's observations flow into, built once and reloaded whole."""

from __future__ import annotations

import threading
from pathlib import Path

from detector.match import load_signatures
from detector.policy import load_policy
from detector.session import Session

ROOT = Path(__file__).resolve().parent.parent


def test_reload_reaches_every_stage(tmp_path):
    """A reload used to update the detector and the alert table but not the Alertmanager
    push, which kept posting alerts with the old window's end."""
    first = tmp_path / "first.toml"
    first.write_text("dedup_window = 900\n")
    second = tmp_path / "second.toml"
    second.write_text('dedup_window = 60\n\n[[segment]]\nname = "lab"\ncidrs = ["198.18.30.0/24"]\n')
    signatures = load_signatures(ROOT / "signatures")
    session = Session(signatures, load_policy(first), None, None, "http://127.0.0.1:9093")
    new_signatures, new_policy = load_signatures(ROOT / "signatures"), load_policy(second)
    session.reload(new_signatures, new_policy)
    assert session.detector.policy is new_policy and session.detector.signatures is new_signatures
    assert session.outputs.alerts.window == 60 and session.pusher.window == 60
    assert [s.name for s in session.policy.segments] == ["lab"]


def test_no_thread_runs_before_the_first_alert():
    """Workers are forked after the session is built: no thread of it may run by then."""
    before = {t.name for t in threading.enumerate()}
    policy_path = ROOT / "examples" / "policy.toml"
    Session(load_signatures(ROOT / "signatures"), load_policy(policy_path), None, None, "http://127.0.0.1:9093")
    assert {t.name for t in threading.enumerate()} == before
