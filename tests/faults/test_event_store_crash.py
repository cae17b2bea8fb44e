"""Scenario 6 at the store level: a process writing alert events (with snapshots) is killed mid-write, again and
again; every committed event survives, the SQLite file passes `integrity_check`, and open alerts are settled by
the stated rule at the next start (`close_dangling("last_seen")`: closed at their last update, reason `restart`).
The scenario is `tests.faults.scenarios.store_kill` (bench/faults.py runs it too)."""
from __future__ import annotations

import signal

import pytest

from tests.faults.scenarios import store_kill

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_writer_loses_no_committed_event(tmp_path, sig):
    r = store_kill(tmp_path / "events.db", sig, rounds=3)

    assert r.integrity == "ok"
    assert r.journal_mode == "wal"
    missing = sorted(set(r.committed) - set(r.rows))
    assert not missing, f"committed events lost: {missing}"
    for eid, kind in r.committed.items():
        if kind == "closed":
            assert r.rows[eid] == "closed", eid
        assert eid in r.snapshots, f"event {eid} lost its snapshot"
    # a kill between open and close leaves at most one extra open event per round, and no half rows
    assert len(r.rows) - len(r.committed) <= 3

    assert r.open_before, "the writers left alerts open (every third one)"
    assert r.settled == len(r.open_before)
    for e in r.open_before:
        a = r.after[e.id]
        assert a.status == "closed" and a.reason == "restart"
        assert a.end_s == pytest.approx(e.updated_s)
    assert r.settled_again == 0  # idempotent: a second start settles nothing
    assert r.count == len(r.rows)
