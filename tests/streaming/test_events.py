"""streaming/events.py and streaming/snapshot.py: SQLite events across restarts, retention, filters, JPEG snapshots
(the smooth heatmap and the block-evidence snapshot that CameraAlerts stores)."""
from __future__ import annotations

import inspect
import io
import sqlite3
import threading

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from offline.scoring.alert_rules import AlertTracker
from streaming.events import MAX_TRACE_POINTS, MIGRATIONS, SCHEMA_VERSION, EventStore, EventStoreError
from streaming.camera_alerts import CameraAlerts
from streaming.snapshot import (
    EVIDENCE_MIN_SIDE, block_means, overlay, render_evidence_snapshot, render_snapshot,
)

DAY = 86400.0


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def jpeg(h=32, w=48) -> bytes:
    return render_snapshot(np.zeros((h, w, 3), np.uint8), np.ones((h, w), np.float32))


@pytest.fixture
def store(tmp_path):
    with EventStore(tmp_path / "db" / "events.sqlite", clock=Clock()) as s:
        yield s


def test_open_update_close_roundtrip(store):
    eid = store.open_event("door", start_s=100.0, peak_score=0.7, peak_frame=10, peak_s=100.5, snapshot=jpeg())
    ev = store.get_event(eid)
    assert (ev.camera, ev.status, ev.end_s, ev.has_snapshot) == ("door", "open", None, True)
    first = store.get_snapshot(eid)
    newer = jpeg(16, 16)
    store.update_peak(eid, 0.9, 14, 101.0, snapshot=newer)
    store.close_event(eid, end_s=103.0)
    ev = store.get_event(eid)
    assert (ev.peak_score, ev.peak_frame, ev.peak_s, ev.end_s, ev.status, ev.reason) == (0.9, 14, 101.0, 103.0, "closed", "score")
    assert store.get_snapshot(eid) == newer != first
    assert ev.to_dict()["camera"] == "door"
    assert store.get_snapshot(12345) is None and store.get_event(12345) is None


def test_events_and_snapshots_survive_a_restart_and_dangling_events_are_closed(tmp_path):
    path = tmp_path / "events.sqlite"
    s = EventStore(path, clock=Clock(100.0))
    done = s.open_event("a", 10.0, 0.8, 1, snapshot=jpeg())
    s.close_event(done, 20.0)
    dangling = s.open_event("b", 30.0, 0.9, 5, peak_s=31.0, snapshot=jpeg())
    s.touch(dangling, 42.0)
    s.close()  # the service stops while b's alert is open

    s = EventStore(path, clock=Clock(100.0))
    assert {e.id for e in s.list_events()} == {done, dangling}
    assert s.close_dangling("last_seen") == 1
    ev = s.get_event(dangling)
    assert (ev.status, ev.end_s, ev.reason) == ("closed", 42.0, "restart")
    assert Image.open(io.BytesIO(s.get_snapshot(done))).format == "JPEG"
    assert s.close_dangling() == 0
    s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


@pytest.mark.parametrize("rule, status_after", [("now", "closed"), ("delete", None)])
def test_close_dangling_rules(tmp_path, rule, status_after):
    clock = Clock(5000.0)
    s = EventStore(tmp_path / "e.sqlite", clock=clock)
    eid = s.open_event("a", 4000.0, 0.9, 1, snapshot=jpeg())
    assert s.close_dangling(rule) == 1
    ev = s.get_event(eid)
    if status_after is None:
        assert ev is None and s.get_snapshot(eid) is None  # the snapshot goes with the event
    else:
        assert (ev.status, ev.end_s) == ("closed", 5000.0)
    with pytest.raises(ValueError, match="'forget'"):
        s.close_dangling("forget")


def test_retention_by_age_and_count_never_prunes_open_events(tmp_path):
    clock = Clock(100 * DAY)
    s = EventStore(tmp_path / "e.sqlite", retention_days=7, max_events=3, clock=clock)
    old = s.open_event("a", 80 * DAY, 0.9, 1, snapshot=jpeg())
    s.close_event(old, 80 * DAY + 60)  # closing prunes: 20 days old > 7 days
    assert s.get_event(old) is None and s.get_snapshot(old) is None
    ids = []
    for i in range(4):
        eid = s.open_event("a", 99 * DAY + i, 0.9, i)
        s.close_event(eid, 99 * DAY + i + 0.5)
        ids.append(eid)
    assert [e.id for e in s.list_events()] == ids[:0:-1]  # newest 3 kept
    open_ids = [s.open_event("b", 99.5 * DAY + i, 0.9, i) for i in range(4)]
    s.prune()
    left = {e.id for e in s.list_events()}
    assert set(open_ids) <= left  # 4 open events exceed max_events but are kept
    assert s.count() == 4
    clock.t = 200 * DAY
    assert s.prune() == 0 and s.count() == 4


def test_list_filters(store):
    a = store.open_event("a", 100.0, 0.6, 1)
    store.close_event(a, 110.0)
    b = store.open_event("b", 105.0, 0.95, 2)
    store.close_event(b, 120.0)
    c = store.open_event("a", 200.0, 0.8, 3)  # still open
    ids = lambda **kw: [e.id for e in store.list_events(**kw)]  # noqa: E731
    assert ids() == [c, b, a]
    assert ids(camera="a") == [c, a]
    assert ids(since=115.0) == [c, b]  # a ended before 115; c is open
    assert ids(until=104.0) == [a]
    assert ids(since=108.0, until=150.0) == [b, a]  # overlap semantics
    assert ids(min_score=0.8) == [c, b]
    assert ids(status="open") == [c]
    assert ids(limit=1) == [c]
    assert ids(camera="zzz") == []
    with pytest.raises(ValueError, match="limit.*got 0"):
        store.list_events(limit=0)
    with pytest.raises(ValueError, match=r"since \(5.0\).*until \(1.0\)"):
        store.list_events(since=5.0, until=1.0)


def test_labels_are_stored_filtered_and_validated(store):
    a = store.open_event("a", 100.0, 0.6, 1)
    b = store.open_event("a", 200.0, 0.9, 2)
    c = store.open_event("b", 300.0, 0.9, 3)
    assert store.get_event(a).label is None and store.get_event(a).to_dict()["label"] is None
    assert store.set_label(a, "false_alarm") and store.set_label(b, "anomaly")
    assert store.set_label(b, "false_alarm")  # a second verdict replaces the first
    ev = store.get_event(b)
    assert (ev.label, ev.labelled_s, ev.status) == ("false_alarm", 1_000_000.0, "open")  # open events too
    assert store.set_label(12345, "anomaly") is False
    ids = lambda **kw: [e.id for e in store.list_events(**kw)]  # noqa: E731
    assert ids(label="false_alarm") == [b, a] and ids(label="anomaly") == [] and ids(label="none") == [c]
    assert ids(label="none", camera="a") == []
    for bad in ("spam", "", None, "FALSE_ALARM"):
        with pytest.raises(ValueError, match="label must be one of false_alarm, anomaly"):
            store.set_label(a, bad)
    with pytest.raises(ValueError, match="label filter"):
        store.list_events(label="spam")
    with pytest.raises(sqlite3.IntegrityError):  # the column refuses other values even past this code
        store._conn.execute("UPDATE events SET label = 'maybe' WHERE id = ?", (a,))


def test_a_version_1_file_is_migrated_in_place_keeping_its_events(tmp_path):
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)  # a file as the previous version of this code wrote it
    conn.executescript(f"BEGIN; {MIGRATIONS[1]} PRAGMA user_version = 1; COMMIT;")
    conn.execute("INSERT INTO events (camera, start_s, end_s, peak_score, peak_frame, peak_s, updated_s, status, reason) "
                 "VALUES ('door', 10.0, 12.0, 0.97, 5, 11.0, 12.0, 'closed', 'score')")
    conn.execute("INSERT INTO snapshots (event_id, jpeg) VALUES (1, ?)", (jpeg(),))
    conn.close()

    with EventStore(path, clock=Clock(100.0)) as s:
        ev = s.get_event(1)
        assert (ev.camera, ev.peak_score, ev.has_snapshot, ev.label, ev.labelled_s) == ("door", 0.97, True, None, None)
        assert s.set_label(1, "anomaly") and s.list_events(label="anomaly")[0].id == 1
        s.put_trace(1, [(10.0, 0.5), (11.0, 0.97)], 0.9)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()
    with EventStore(path, clock=Clock(100.0)) as s:  # opening a current file again changes nothing
        assert s.get_event(1).label == "anomaly" and s.get_trace(1)["points"] == [[10.0, 0.5], [11.0, 0.97]]


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {MIGRATIONS[1]} PRAGMA user_version = 1; COMMIT;")
    conn.close()
    import streaming.events as events

    monkeypatch.setitem(events.MIGRATIONS, 2, MIGRATIONS[2] + "; CREATE TABLE broken (")  # fails half-way
    with pytest.raises(EventStoreError, match="v1.sqlite: cannot open"):
        EventStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "label" not in [r[1] for r in conn.execute("PRAGMA table_info(events)")]  # the ALTERs were rolled back
    conn.close()


def test_traces_are_bounded_replaced_and_go_with_their_event(tmp_path):
    clock = Clock(100 * DAY)
    s = EventStore(tmp_path / "e.sqlite", retention_days=7, clock=clock)
    eid = s.open_event("a", 99 * DAY, 0.9, 1)
    assert s.get_trace(eid) is None
    pts = [(99 * DAY + i / 25, 0.1) for i in range(25 * 600)]  # ten minutes at 25 fps
    pts[7000] = (pts[7000][0], 0.999)
    s.put_trace(eid, pts, threshold=0.95)
    trace = s.get_trace(eid)
    assert len(trace["points"]) == MAX_TRACE_POINTS and trace["threshold"] == 0.95
    assert max(v for _, v in trace["points"]) == 0.999  # the peak survives the cut
    s.put_trace(eid, pts[:3])
    assert len(s.get_trace(eid)["points"]) == 3 and s.get_trace(eid)["threshold"] is None
    with pytest.raises(EventStoreError, match="no event with id 99"):
        s.put_trace(99, pts[:3])
    s.close_event(eid, 99 * DAY + 10)
    clock.t = 120 * DAY
    s.prune()
    assert s.get_event(eid) is None and s.get_trace(eid) is None
    s.close()


def test_errors_name_the_event_or_file(tmp_path, store):
    with pytest.raises(EventStoreError, match="no event with id 99"):
        store.update_peak(99, 1.0, 1, 1.0)
    eid = store.open_event("a", 1.0, 0.9, 1)
    store.close_event(eid, 2.0)
    with pytest.raises(EventStoreError, match=f"event {eid} is already closed"):
        store.close_event(eid, 3.0)
    with pytest.raises(EventStoreError, match=f"event {eid} is closed"):
        store.update_peak(eid, 1.0, 1, 1.0)
    other = store.open_event("a", 5.0, 0.9, 1)
    with pytest.raises(ValueError, match="snapshot must be non-empty bytes"):
        store.update_peak(other, 1.0, 1, 1.0, snapshot=b"")
    bad = tmp_path / "not_a_db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EventStoreError, match="not_a_db.sqlite"):
        EventStore(bad)
    newer = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(EventStoreError, match="newer.sqlite.*version 99"):
        EventStore(newer)
    with pytest.raises(ValueError, match="retention_days must be > 0, got 0"):
        EventStore(tmp_path / "x.sqlite", retention_days=0)


def test_concurrent_writers_on_one_file(tmp_path):
    """Two stores (as two processes would) and two threads each: every write lands, none is lost."""
    path = tmp_path / "e.sqlite"
    stores = [EventStore(path, clock=Clock(0.0)), EventStore(path, clock=Clock(0.0))]
    errors = []

    def work(s, cam):
        try:
            for i in range(25):
                eid = s.open_event(cam, float(i), 0.9, i, snapshot=jpeg(8, 8))
                s.update_peak(eid, 0.95, i, float(i))
                s.close_event(eid, i + 0.5)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, f"c{k}{j}")) for k, s in enumerate(stores) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stores[0].count() == 100
    assert all(e.has_snapshot and e.peak_score == 0.95 for e in stores[1].list_events(limit=1000))


# -- snapshots --------------------------------------------------------------------------------------------


def first_frame(path, size=256) -> np.ndarray:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return frame.to_ndarray(format="rgb24", width=size, height=size)


def test_snapshot_heatmap_marks_the_high_error_region_on_real_footage(vtest):
    rgb = first_frame(vtest)
    err = np.zeros((64, 64), np.float32)  # coarser than the frame: resized to it
    err[40:56, 8:24] = 1.0  # bottom-left block
    out = overlay(rgb, err, alpha=0.7)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - rgb.astype(int)).sum(-1)
    assert diff[170:220, 40:90].mean() > 60  # inside the block: heatmap colour
    assert diff[10:100, 150:250].mean() < 2  # zero error: the frame unchanged
    data = render_snapshot(rgb, err)
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG" and img.size == (256, 256)
    assert data[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "rgb, err, match",
    [
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8)), r"\(H, W, 3\) uint8, got \(8, 8\)"),
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)), "float32"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8)), r"error map .* got shape \(1, 8, 8\)"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8)), r"got shape \(0, 8\)"),
    ],
)
def test_snapshot_rejects_bad_inputs(rgb, err, match):
    with pytest.raises(ValueError, match=match):
        render_snapshot(rgb, err)


def test_snapshot_tolerates_flat_and_nan_error_maps():
    rgb = np.full((16, 16, 3), 100, np.uint8)
    assert np.array_equal(overlay(rgb, np.zeros((16, 16))), rgb)  # max == 0: nothing to show
    err = np.full((16, 16), np.nan)
    err[0, 0] = np.inf
    assert np.array_equal(overlay(rgb, err), rgb)
    Image.open(io.BytesIO(render_snapshot(rgb, err))).verify()


def test_alert_tracker_to_event_with_snapshot_on_a_synthetic_clip(tmp_path):
    """A bright square crosses a static textured scene in frames 40-69: one event, peak inside, valid JPEG."""
    rng = np.random.default_rng(1)
    background = rng.integers(60, 120, (64, 64, 3), dtype=np.uint8)
    tracker = AlertTracker(threshold=0.5, min_duration_s=0.4, hysteresis=0.2, close_after_s=0.3, camera="synthetic")
    store = EventStore(tmp_path / "events.sqlite", clock=Clock(0.0))
    event_id, best = None, None
    for i in range(120):
        frame = background.copy()
        if 40 <= i < 70:
            x = 2 + (i - 40) * 2
            frame[20:36, x : x + 10] = 250
        err = np.abs(frame.astype(np.float32) - background).mean(-1) / 255.0
        score = float(err.max()) + 0.01 * rng.standard_normal()
        events = tracker.update(i / 10.0, score, i)
        if tracker.new_peak:
            best = render_snapshot(frame, err)
        for ev in events:
            if ev.kind == "opened":
                event_id = store.open_event(ev.camera, ev.start_s, ev.peak_score, ev.peak_frame, ev.peak_s, best)
            elif ev.kind == "peak":
                store.update_peak(event_id, ev.peak_score, ev.peak_frame, ev.peak_s, best)
            else:
                store.close_event(event_id, ev.end_s, ev.reason)
    (ev,) = store.list_events()
    assert ev.status == "closed" and ev.camera == "synthetic"
    assert 4.0 <= ev.start_s <= 4.1 and 7.0 <= ev.end_s <= 7.1
    assert 40 <= ev.peak_frame < 70
    Image.open(io.BytesIO(store.get_snapshot(ev.id))).verify()


# --- block-evidence snapshots ---------------------------------------------------------------------------------

EVIDENCE = dict(block=16, score=0.8734, camera="door-1", when_s=1_700_000_000.0, threshold=0.99)


def decode(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return np.asarray(img.convert("RGB")).astype(int)


@pytest.mark.parametrize("shape, block", [((128, 128), 16), ((64, 96), 8), ((6, 4), 2), ((5, 5), 1), ((4, 8), 4)])
def test_block_means_equals_the_per_cell_mean(shape, block):
    err = np.random.default_rng(0).random(shape).astype(np.float32)
    ref = np.array(
        [[err[r : r + block, c : c + block].mean() for c in range(0, shape[1], block)]
         for r in range(0, shape[0], block)]
    )
    got = block_means(err, block)
    assert got.shape == (shape[0] // block, shape[1] // block)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("hw, k", [((128, 128), 3), ((64, 64), 6), ((256, 320), 2), ((384, 512), 1), ((96, 160), 4)])
def test_evidence_snapshot_decodes_at_the_stated_size(hw, k):
    h, w = hw
    rng = np.random.default_rng(1)
    data = render_evidence_snapshot(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.random(hw), **EVIDENCE)
    assert data[:2] == b"\xff\xd8"
    img = Image.open(io.BytesIO(data))
    img.load()
    header = img.height - h * k
    assert img.width == w * k and min(h, w) * k >= EVIDENCE_MIN_SIDE and 0 < header < 150
    assert np.asarray(img)[:header].mean() < 80  # a dark band above the frame, not over it


def test_evidence_snapshot_outlines_the_hot_block_where_it_is():
    """One hot block (row 2, col 5) on a mid-grey frame: white core between dark edges on its border, heat inside,
    the untouched frame outside."""
    rgb = np.full((128, 128, 3), 128, np.uint8)
    err = np.zeros((128, 128), np.float32)
    err[32:48, 80:96] = 1.0
    px = decode(render_evidence_snapshot(rgb, err, **EVIDENCE, quality=95))
    k, cell = 3, 48
    top = px.shape[0] - 128 * k
    y0, x0 = top + 2 * cell, 5 * cell
    mid_y, mid_x = y0 + cell // 2, x0 + cell // 2
    for y, x in [(y0, mid_x), (y0 + cell - 1, mid_x), (mid_y, x0), (mid_y, x0 + cell - 1)]:
        assert px[y, x].max() < 90, (y, x, px[y, x])  # outer dark edge on all four sides
    for y, x in [(y0 + 2, mid_x), (y0 + cell - 3, mid_x), (mid_y, x0 + 2), (mid_y, x0 + cell - 3)]:
        assert px[y, x].min() > 200, (y, x, px[y, x])  # white core
    inside = px[mid_y, mid_x]
    assert inside[0] > inside[2] + 40 and np.abs(inside - 128).max() > 30  # warm heat colour over the grey
    for y, x in [(y0 - 3, mid_x), (mid_y, x0 - 3), (mid_y, x0 + cell + 2), (top + 5, 5), (px.shape[0] - 5, 5)]:
        assert np.abs(px[y, x] - 128).max() < 12, (y, x, px[y, x])  # zero-error blocks: the frame as it was


def test_evidence_snapshot_marks_the_worst_block_apart_from_the_runners_up():
    rgb = np.full((64, 64, 3), 100, np.uint8)
    err = np.zeros((64, 64), np.float32)
    # four hot blocks, worst first; top_k=3 leaves the 0.4 block unmarked
    err[0:16, 0:16], err[32:48, 32:48], err[48:64, 0:16], err[16:32, 48:64] = 1.0, 0.8, 0.6, 0.4
    px = decode(render_evidence_snapshot(rgb, err, **EVIDENCE, quality=95))
    cell = 16 * 6
    top = px.shape[0] - 64 * 6

    def core(r, c, d):  # pixel d in from the middle of the cell's top edge
        return px[top + r * cell + d, c * cell + cell // 2]

    assert core(0, 0, 2).min() > 200 and core(0, 0, 3).min() > 200  # worst: thick white core
    for r, c in [(2, 2), (3, 0)]:
        # runners-up: dark edge, a thin light-grey core, then the cell again
        assert core(r, c, 0).max() < 90 and 150 < core(r, c, 1).min() < 235 and core(r, c, 3).min() < 200
    assert core(1, 3, 1).max() < 150 and core(1, 3, 0).max() > 60  # fourth block: heat only, no outline


def test_evidence_snapshot_header_shows_camera_time_score_and_never_a_url(monkeypatch):
    assert not {"url", "source", "uri"} & set(inspect.signature(render_evidence_snapshot).parameters)
    drawn: list[str] = []
    real_text = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):  # every string the renderer draws
        drawn.append(text)
        return real_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    rgb, err = np.zeros((64, 64, 3), np.uint8), np.ones((64, 64))
    data = render_evidence_snapshot(rgb, err, **EVIDENCE)
    header = "\n".join(drawn)
    for part in ["door-1", "2023-11-14T22:13:20Z", "score 0.873", "threshold 0.990", "row 0, col 0"]:
        assert part in header
    assert "://" not in header and "@" not in header
    px = decode(data)
    band = px[: px.shape[0] - 64 * 6]
    assert (band > 200).any() and np.median(band) < 40  # light text on a dark band
    drawn.clear()
    render_evidence_snapshot(rgb, err, **{**EVIDENCE, "threshold": None, "camera": "x" * 63})
    assert "x" * 63 in drawn[0] and "threshold" not in "\n".join(drawn)
    with pytest.raises(ValueError, match="camera") as info:
        render_evidence_snapshot(rgb, err, **{**EVIDENCE, "camera": "rtsp://admin:hunter2@10.0.0.5/live"})
    assert "hunter2" not in str(info.value) and "10.0.0.5" not in str(info.value)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(rgb=np.zeros((64, 64), np.uint8)), r"rgb must be .*\(64, 64\)"),
        (dict(rgb=np.zeros((64, 64, 3), np.float32)), "rgb must be .*float32"),
        (dict(error_map=np.zeros((32, 32))), r"error_map must be .*\(64, 64\).*\(32, 32\)"),
        (dict(error_map=np.zeros((1, 64, 64))), "error_map must be"),
        (dict(error_map=np.zeros((64, 64), bool)), "error_map must hold real numbers, got dtype bool"),
        (dict(block=12), r"block must divide .*\(64, 64\), got 12"),
        (dict(block=0), "block must be an integer >= 1, got 0"),
        (dict(block=16.0), "block must be an integer"),
        (dict(score=float("nan")), "score must be a finite number"),
        (dict(when_s=None), "when_s must be a finite number"),
        (dict(when_s=1e20), "when_s must be epoch seconds"),
        (dict(threshold=float("inf")), "threshold must be a finite number"),
        (dict(camera=""), "camera must be a camera name"),
        (dict(camera="a b"), "camera must be a camera name"),
        (dict(top_k=-1), "top_k must be an integer >= 0"),
        (dict(quality=0), r"quality must be an integer in \[1, 95\]"),
    ],
)
def test_evidence_snapshot_rejects_bad_inputs_naming_the_argument(change, match):
    args = dict(rgb=np.zeros((64, 64, 3), np.uint8), error_map=np.zeros((64, 64)), **EVIDENCE)
    args.update(change)
    rgb, err = args.pop("rgb"), args.pop("error_map")
    with pytest.raises(ValueError, match=match):
        render_evidence_snapshot(rgb, err, **args)


def test_evidence_snapshot_tolerates_flat_and_non_finite_maps():
    rgb = np.full((32, 32, 3), 90, np.uint8)
    for err in [np.zeros((32, 32)), np.full((32, 32), np.nan), -np.ones((32, 32))]:
        px = decode(render_evidence_snapshot(rgb, err, **{**EVIDENCE, "block": 8}, quality=95))
        assert np.abs(px[-32 * 12 :] - 90).max() < 8  # nothing to show: the frame, no cells, no outline


def test_camera_alerts_snapshot_uses_the_block_evidence_renderer():
    cam = CameraAlerts("door-1", AlertTracker(threshold=0.5, min_duration_s=0.0, hysteresis=0.1, camera="door-1"))
    assert cam.snapshot() is None and cam.block == 16
    cam.tracker.update(1_700_000_000.0, 0.9, 7)
    for hw, block in [((128, 128), 16), ((48, 80), 16), ((60, 60), 16), ((7, 7), 16)]:
        rgb = np.full(hw + (3,), 128, np.uint8)
        err = np.zeros(hw, np.float32)
        err[:2, :2] = 1.0
        cam.peak, cam.block = (rgb, err), block
        img = Image.open(io.BytesIO(cam.snapshot()))
        k = -(-EVIDENCE_MIN_SIDE // min(hw))
        assert img.format == "JPEG" and img.width == hw[1] * k and img.height > hw[0] * k
    cam.peak = (np.zeros((64, 64, 3), np.uint8), np.ones((32, 32), np.float32))  # a coarser map still renders
    Image.open(io.BytesIO(cam.snapshot())).verify()
