"""The soak's verdict: a leak raises the level and fails; a fault's short-lived worker is a spike and does not."""
from bench.soak import verdict


def _samples(fds: list[int], step_s: float = 5.0) -> list[dict]:
    return [{"t": i * step_s, "rss_mb": 3500.0, "fds": n, "threads": 500} for i, n in enumerate(fds)]


def test_a_transient_spike_from_a_fault_is_not_growth():
    fds = [888] * 40 + [957, 955] + [890] * 10  # the spike inside the last minute  # a recorder's worker for ten seconds, then gone
    assert verdict(_samples(fds), [], []) == []


def test_a_descriptor_leak_fails_even_behind_spikes():
    fds = [888 + i for i in range(200)]  # one descriptor more every sample: +199 by the end
    fds[-3] = 700  # a killed process dropping out of the sum for a sample does not hide it (a median over a minute)
    bad = verdict(_samples(fds), [], [])
    assert len(bad) == 1 and bad[0].startswith("fds level grew")


def test_lost_events_and_unrecovered_faults_are_reported():
    bad = verdict(_samples([888] * 30), [7, 9], [{"kind": "cut", "t": 60.0, "error": "TimeoutError: no score"}])
    assert bad == ["events lost: [7, 9]", "fault cut at 60.0 s: not recovered (TimeoutError: no score)"]
