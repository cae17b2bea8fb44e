"""Dataset readers: real shared Ped2 and vtest footage, plus each other layout built synthetically in tmp."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from offline.data.decode import resize
from offline.data.labels import parse_ucsd_m
from offline.data.pixels import from_model_range, scale_uint8, to_model_range
from offline.data.readers import DataError, open_dataset, read_frames
from offline.data.windows import window_starts

# --- synthetic footage helpers -------------------------------------------------------------------


def _frames(n: int, h: int = 48, w: int = 64, colour: bool = True, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8: a bright square moving over a gradient, so frames differ and are not blank."""
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(20, 200, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(200, 20, h, dtype=np.uint8)[:, None] if colour else base[..., 0]
    base[..., 2] = 90 if colour else base[..., 0]
    out = np.repeat(base[None], n, axis=0)
    for i in range(n):
        x = (3 * i) % (w - 8)
        out[i, 10:18, x : x + 8] = 255
    out = out.astype(np.int16) + rng.integers(-3, 4, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4", fps: int = 25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_images(folder: Path, frames: np.ndarray, ext: str, gray: bool = False, name: str = "{:03d}") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        image = f[..., 0] if gray else cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(folder / (name.format(i) + ext)), image)


# --- pure window maths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, window, stride, cover_end, expected",
    [
        (180, 16, 16, True, [0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 164]),
        (180, 16, 16, False, list(range(0, 161, 16))),
        (32, 16, 16, True, [0, 16]),  # exact fit: no extra window
        (16, 16, 1, True, [0]),
        (15, 16, 1, True, []),  # shorter than a window
        (20, 4, 10, True, [0, 10, 16]),  # stride > window leaves gaps, tail still covered
    ],
)
def test_window_starts(n, window, stride, cover_end, expected):
    assert window_starts(n, window, stride, cover_end) == expected


def test_model_range_round_trip_and_layout():
    frames = np.random.default_rng(1).integers(0, 256, (16, 8, 10, 3), dtype=np.uint8)
    x = to_model_range(frames)
    assert x.shape == (3, 16, 8, 10) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert to_model_range(np.zeros((2, 2, 3), np.uint8)).shape == (3, 2, 2)
    assert float(to_model_range(np.full((1, 1, 1, 3), 255, np.uint8)).max()) == 1.0
    assert float(to_model_range(np.zeros((1, 1, 1, 3), np.uint8)).min()) == -1.0
    np.testing.assert_array_equal(from_model_range(x), frames)
    np.testing.assert_array_equal(from_model_range(x[None])[0], frames)  # batched (B, 3, T, H, W)
    with pytest.raises(ValueError, match="uint8"):
        to_model_range(np.zeros((4, 4, 3), np.float32))
    gray = scale_uint8(np.array([[[0], [255]]], np.uint8))  # any layout, e.g. 1-channel training frames
    assert gray.shape == (1, 2, 1) and gray.flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="uint8"):
        scale_uint8(np.zeros(3, np.float32))


# --- real shared footage -------------------------------------------------------------------------


def test_shared_ped2_frame_counts_match_labels_json(ped2):
    meta = json.loads((ped2 / "labels.json").read_text())
    ds = open_dataset(ped2)
    assert ds.layout == "shared"
    assert [c.id for c in ds.train] == sorted(meta["train"]) and [c.id for c in ds.test] == sorted(meta["test"])
    for clip in ds.clips:
        entry = meta[clip.split][clip.id]
        assert clip.num_frames == entry["frames"]
        decoded = sum(1 for _ in read_frames(clip, size=None))
        assert decoded == entry["frames"], clip.path
    for clip in ds.test:
        np.testing.assert_array_equal(clip.labels, meta["test"][clip.id]["labels"])
    assert all(c.labels is None for c in ds.train)
    assert int(ds.test[0].labels.sum()) == 120  # clip 01: frames 61-180 abnormal


def test_shared_ped2_windows(ped2):
    clip = open_dataset(ped2, clips=["02"]).test[0]
    assert clip.id == "02" and clip.num_frames == 180
    frames = np.stack(list(read_frames(clip, size=256)))
    assert frames.shape == (180, 256, 256, 3) and frames.dtype == np.uint8
    assert (frames[..., 0] == frames[..., 2]).all()  # gray source: 3 equal channels
    for start in window_starts(180, 16, 16):
        w = to_model_range(frames[start : start + 16])
        assert w.shape == (3, 16, 256, 256) and w.dtype == torch.float32
        assert -1.0 <= float(w.min()) and float(w.max()) <= 1.0
        np.testing.assert_array_equal(from_model_range(w), frames[start : start + 16])
    # original size: decoded luma as stored (360x240)
    assert next(read_frames(clip, size=None)).shape == (240, 360, 3)


def test_truncated_copy_names_file_and_frame(ped2, tmp_path):
    root = tmp_path / "ped2"
    (root / "test").mkdir(parents=True)
    meta = json.loads((ped2 / "labels.json").read_text())
    meta = {**meta, "train": {}, "test": {"01": meta["test"]["01"]}}
    (root / "labels.json").write_text(json.dumps(meta))
    data = (ped2 / "test" / "01.mkv").read_bytes()
    (root / "test" / "01.mkv").write_bytes(data[: len(data) // 2])
    clip = open_dataset(root).test[0]
    with pytest.raises(DataError, match=r"01\.mkv: ends after \d+ frames \(failed at frame \d+\), expected 180") as err:
        list(read_frames(clip))
    assert str(root / "test" / "01.mkv") in str(err.value)


def test_corrupt_packets_fail_at_named_frame(ped2, tmp_path):
    """Garbage in the middle of the stream is an error at that frame, not silently concealed pixels."""
    root = tmp_path / "ped2"
    (root / "test").mkdir(parents=True)
    meta = json.loads((ped2 / "labels.json").read_text())
    (root / "labels.json").write_text(json.dumps({**meta, "train": {}, "test": {"01": meta["test"]["01"]}}))
    data = bytearray((ped2 / "test" / "01.mkv").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 20000] = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    (root / "test" / "01.mkv").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"01\.mkv: .*frame \d+"):
        list(read_frames(open_dataset(root).test[0]))


def test_shared_layout_errors(ped2, tmp_path):
    meta = json.loads((ped2 / "labels.json").read_text())
    root = tmp_path / "bad"
    (root / "test").mkdir(parents=True)
    shutil.copy(ped2 / "test" / "01.mkv", root / "test" / "01.mkv")
    bad = {**meta, "train": {}, "test": {"01": {**meta["test"]["01"], "labels": [0] * 10}}}
    (root / "labels.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"labels\.json: test\.01: 10 labels for 180 frames"):
        open_dataset(root)
    bad = {**meta, "train": {}, "test": {"07": {**meta["test"]["01"], "file": "test/07.mkv"}}}
    (root / "labels.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"test\.07: clip file .*07\.mkv not found"):
        open_dataset(root)
    (root / "labels.json").write_text(json.dumps({**meta, "train": {}, "test": {"01": meta["test"]["01"]}}))
    with pytest.raises(DataError, match=r"unknown clip\(s\) \['99'\]"):
        open_dataset(root, clips=["99"])
    # a copy with more frames than labels.json says is also an error
    short = {**meta["test"]["01"], "frames": 100, "labels": [0] * 100}
    (root / "labels.json").write_text(json.dumps({**meta, "train": {}, "test": {"01": short}}))
    with pytest.raises(DataError, match=r"more than the 100 frames"):
        list(read_frames(open_dataset(root).test[0], size=None))


def test_vtest_reads_as_colour_video(vtest):
    ds = open_dataset(vtest)
    assert ds.layout == "videos" and len(ds.train) == 1 and not ds.test
    clip = ds.train[0]
    assert clip.id == "vtest" and clip.num_frames == 795 and clip.fps == pytest.approx(10.0) and clip.labels is None
    frames = read_frames(clip, size=None)
    first = next(frames)
    assert first.shape == (576, 768, 3)
    assert (first[..., 0] != first[..., 2]).mean() > 0.5  # real colour, not gray
    assert 1 + sum(1 for _ in frames) == 795
    assert next(read_frames(clip, size=128)).shape == (128, 128, 3)


# --- other layouts, built synthetically ----------------------------------------------------------

UCSD_M = """\
TestVideoFile = {};
% ground truth per test clip, 1-based inclusive
TestVideoFile{end+1}.gt_frame = [5:12];
TestVideoFile{end+1}.gt_frame = [1:3, 15:20];  % two ranges
"""


def make_ucsd(tmp_path: Path) -> Path:
    base = tmp_path / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped2"
    write_images(base / "Train" / "Train001", _frames(18, colour=False), ".tif", gray=True)
    write_images(base / "Train" / "Train002", _frames(17, colour=False, seed=1), ".tif", gray=True)
    write_images(base / "Test" / "Test001", _frames(20, colour=False, seed=2), ".tif", gray=True)
    write_images(base / "Test" / "Test001_gt", _frames(20, colour=False), ".bmp", gray=True)  # pixel masks, not a clip
    write_images(base / "Test" / "Test002", _frames(20, colour=False, seed=3), ".tif", gray=True)
    (base / "Test" / "UCSDped2.m").write_text(UCSD_M)
    return base


def test_ucsd_layout(tmp_path):
    base = make_ucsd(tmp_path)
    for root in (base, base.parent):  # the UCSDped2 folder, or the release folder holding it
        ds = open_dataset(root)
        assert ds.layout == "ucsd" and ds.root == base
        assert [c.id for c in ds.train] == ["Train001", "Train002"]
        assert [c.id for c in ds.test] == ["Test001", "Test002"]  # Test001_gt ignored
    assert [c.num_frames for c in ds.clips] == [18, 17, 20, 20]
    expected1 = np.zeros(20, np.uint8)
    expected1[4:12] = 1
    expected2 = np.zeros(20, np.uint8)
    expected2[0:3] = 1
    expected2[14:20] = 1
    np.testing.assert_array_equal(ds.test[0].labels, expected1)
    np.testing.assert_array_equal(ds.test[1].labels, expected2)
    frames = np.stack(list(read_frames(ds.test[0], size=32)))
    assert frames.shape == (20, 32, 32, 3) and (frames[..., 0] == frames[..., 1]).all()
    assert window_starts(ds.train[1].num_frames, 16, 16) == [0, 1]
    assert np.stack(list(read_frames(ds.train[1], size=32))).shape == (17, 32, 32, 3)
    # a corrupt frame file is named with its frame index
    (ds.train[0].frame_files[7]).write_bytes(b"not a tiff")
    with pytest.raises(DataError, match=r"Train001/007\.tif: frame 7: unreadable"):
        list(read_frames(ds.train[0]))


def test_ucsd_m_parsing_and_errors(tmp_path):
    m = tmp_path / "UCSDped1.m"
    m.write_text(UCSD_M + "TestVideoFile{end+1}.gt_frame = [7];\nTestVideoFile{5}.gt_frame = [60:152 160:170];\n")
    with pytest.raises(DataError, match=r"gt_frame missing for test clip number\(s\) \[4\]"):
        parse_ucsd_m(m)
    m.write_text(UCSD_M + "TestVideoFile{end+1}.gt_frame = [7];\nTestVideoFile{4}.gt_frame = [60:152 160:170];\n")
    assert parse_ucsd_m(m) == [[(5, 12)], [(1, 3), (15, 20)], [(7, 7)], [(60, 152), (160, 170)]]
    m.write_text("TestVideoFile{end+1}.gt_frame = [9:x];\n")
    with pytest.raises(DataError, match=r"UCSDped1\.m:1: cannot parse gt_frame range '9:x'"):
        parse_ucsd_m(m)
    base = make_ucsd(tmp_path)
    (base / "Test" / "UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [5:25];\nTestVideoFile{end+1}.gt_frame = [1:2];\n")
    with pytest.raises(DataError, match=r"UCSDped2\.m clip Test001: abnormal range 5:25 goes past the clip's 20 frames"):
        open_dataset(base)


def make_frames_layout(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "ped2"
    write_images(root / "training" / "frames" / "01", _frames(17), ".jpg")
    write_images(root / "testing" / "frames" / "01", _frames(16, seed=1), ".jpg")
    write_images(root / "testing" / "frames" / "02", _frames(18, seed=2), ".jpg")
    return root


def test_frames_layout_with_mnad_npy(tmp_path):
    root = make_frames_layout(tmp_path)
    labels = np.zeros((1, 34), np.int64)  # MNAD stores one (1, N) array over the test clips in order
    labels[0, 10:20] = 1
    np.save(root.parent / "frame_labels_ped2.npy", labels)
    ds = open_dataset(root)
    assert ds.layout == "frames"
    assert [(c.id, c.split, c.num_frames) for c in ds.clips] == [("01", "train", 17), ("01", "test", 16), ("02", "test", 18)]
    np.testing.assert_array_equal(ds.test[0].labels, labels[0, :16])
    np.testing.assert_array_equal(ds.test[1].labels, labels[0, 16:])
    frames = np.stack(list(read_frames(ds.test[1], size=None)))
    assert frames.shape == (18, 48, 64, 3)
    assert np.abs(frames.astype(int) - _frames(18, seed=2)).mean() < 4  # JPEG, RGB order kept
    np.save(root.parent / "frame_labels_ped2.npy", labels[:, :30])
    with pytest.raises(DataError, match=r"frame_labels_ped2\.npy: has 30 labels but the test clips have 34 frames"):
        open_dataset(root)


def test_frames_layout_with_labels_json(tmp_path):
    root = make_frames_layout(tmp_path)
    (root / "labels.json").write_text(json.dumps({"test": {"01": {"labels": [0] * 8 + [1] * 8}, "02": {"labels": [1] * 18}}}))
    ds = open_dataset(root)
    assert ds.layout == "frames" and ds.test[0].labels.tolist() == [0] * 8 + [1] * 8
    (root / "labels.json").write_text(json.dumps({"01": [0] * 16}))  # flat mapping, clip 02 missing
    with pytest.raises(DataError, match=r"labels\.json: no labels for test clip '02'"):
        open_dataset(root)


def test_avenue_layout(tmp_path):
    root = tmp_path / "avenue"
    write_video(root / "training_videos" / "01.avi", _frames(20))
    write_video(root / "training_videos" / "02.avi", _frames(18, seed=1))
    write_video(root / "testing_videos" / "01.avi", _frames(19, seed=2))
    ds = open_dataset(root)  # no labels: test clips unlabelled
    assert ds.layout == "avenue" and [c.num_frames for c in ds.clips] == [20, 18, 19]
    assert ds.test[0].labels is None and ds.train[0].fps == pytest.approx(25.0)
    frames = np.stack(list(read_frames(ds.test[0], size=None)))
    assert frames.shape == (19, 48, 64, 3)
    source = _frames(19, seed=2).astype(int)
    assert np.abs(frames - source).mean() < 10 < np.abs(frames[..., ::-1] - source).mean()  # lossy, RGB not BGR
    assert (frames[..., 0] != frames[..., 1]).mean() > 0.5  # colour
    labels = np.r_[np.zeros(9), np.ones(10)].astype(np.uint8)
    (root / "testing_labels").mkdir()
    np.save(root / "testing_labels" / "01.npy", labels)
    ds = open_dataset(root, layout="avenue")
    np.testing.assert_array_equal(ds.test[0].labels, labels)
    assert window_starts(ds.test[0].num_frames, 16, 16) == [0, 3]
    np.save(root / "testing_labels" / "01.npy", labels[:15])  # labels shorter than the video
    with pytest.raises(DataError, match=r"testing_videos/01\.avi: has more than the 15 frames its labels give"):
        list(read_frames(open_dataset(root).test[0]))


def test_videos_folder_is_a_training_set(tmp_path):
    root = tmp_path / "my_camera"
    write_video(root / "monday.mp4", _frames(20), codec="libx264")
    write_video(root / "tuesday" / "am.mkv", _frames(17, seed=1), codec="libx264")
    write_video(root / "old.avi", _frames(16, seed=2))
    write_video(root / ".hidden" / "skip.mov", _frames(16))
    (root / "notes.txt").write_text("not a video")
    ds = open_dataset(root)
    assert ds.layout == "videos" and not ds.test
    assert [(c.id, c.num_frames, c.labels) for c in ds.train] == [
        ("monday", 20, None),
        ("old", 16, None),
        ("tuesday/am", 17, None),
    ]
    assert all(c.split == "train" for c in ds.train)
    for clip in ds.train:
        assert sum(1 for _ in read_frames(clip, size=32)) == clip.num_frames
    assert sum(len(window_starts(c.num_frames, 16, 2, cover_end=False)) for c in ds.train) == 3 + 1 + 1


def test_layout_detection_errors(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: dataset path does not exist \(data\.root\)"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no known dataset layout; expected labels\.json"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match=r"data\.layout: unknown layout 'kitti'"):
        open_dataset(tmp_path / "empty", layout="kitti")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"x\.txt: a file that is not a video"):
        open_dataset(tmp_path / "x.txt")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match=r"bad\.mp4: cannot open as a video"):
        open_dataset(bad)
    (tmp_path / "empty" / "training" / "frames" / "01").mkdir(parents=True)
    with pytest.raises(DataError, match=r"frames/01: no image frames"):
        open_dataset(tmp_path / "empty")


def test_resize_on_real_footage(vtest):
    import av

    with av.open(str(vtest)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert rgb.shape == (576, 768, 3)
    small = resize(rgb, 256)
    assert small.shape == (256, 256, 3) and small.dtype == np.uint8
    # area interpolation keeps the mean brightness and a blurred version of the content
    assert abs(float(small.mean()) - float(rgb.mean())) < 1.0
    rect = resize(rgb, (120, 160))
    assert rect.shape == (120, 160, 3)
    assert resize(small, 256) is small  # already the right size: no copy
    up = resize(small, 300)
    assert up.shape == (300, 300, 3)
    gray = resize(rgb[..., :1], 64)  # single-channel frames keep their channel axis
    assert gray.shape == (64, 64, 1)


def test_resize_area_average_of_a_pattern():
    # a 2x2 checkerboard of 0/255 shrunk by 2 averages to mid-gray everywhere
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    rgb = np.repeat(board[..., None], 3, axis=2)
    out = resize(rgb, 32)
    assert np.abs(out.astype(int) - 128).max() <= 1
    with pytest.raises(ValueError, match="size"):
        resize(rgb, 0)
    with pytest.raises(ValueError, match="shape"):  # (H, W) without a channel axis
        resize(board, 32)
