"""Find the clips (and their labels) of each supported folder layout; `detect_layout` picks one.

Layouts:
  shared   root/labels.json naming every clip file (the project's ../shared/data/ped2).
  ucsd     UCSD's release: root/{Train,Test}/{Train001,Test001}/*.tif, ground truth Test/UCSDped2.m.
  frames   root/{training,testing}/frames/01/*.jpg; labels.json or MNAD's frame_labels_<name>.npy.
  avenue   root/{training,testing}_videos/01.avi; labels.json, per-clip .npy, or none.
  videos   a folder (or one file) of .mp4/.mkv/.avi/.mov, searched recursively, hidden files skipped: all normal
           training footage, no labels. A `vad record` directory is one (its open segment is hidden until closed).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from offline.data.clips import Clip, DataError, Dataset
from offline.data.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, probe_video
from offline.data.labels import (
    as_labels,
    labels_from_json,
    load_npy,
    parse_ucsd_m,
    ranges_to_labels,
    read_json,
    split_concatenated,
)

logger = logging.getLogger(__name__)

LAYOUTS = ("shared", "ucsd", "frames", "avenue", "videos")
UCSD_FPS = 10.0  # the UCSD README gives no frame rate; 10 is the nominal value used by the shared copy


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images(folder: Path) -> tuple[Path, ...]:
    files = tuple(sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS))
    if not files:
        raise DataError(f"{folder}: no image frames ({', '.join(IMAGE_EXTENSIONS)}) in this clip folder")
    return files


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _videos(folder: Path, recursive: bool = False) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and p.suffix.lower() in VIDEO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _is_shared(root: Path) -> bool:
    path = root / "labels.json"
    if not path.is_file():
        return False
    try:
        data = read_json(path)
    except DataError:
        return False
    entries = [e for split in ("train", "test") for e in (data.get(split) or {}).values()] if isinstance(data, dict) else []
    return bool(entries) and all(isinstance(e, dict) and "file" in e for e in entries)


def _ucsd_base(root: Path) -> Path | None:
    if (root / "Train").is_dir() or (root / "Test").is_dir():
        return root
    candidates = [p for p in _subdirs(root) if p.name.lower().startswith("ucsdped")] if root.is_dir() else []
    if len(candidates) > 1:
        raise DataError(f"{root}: holds several UCSD datasets {[p.name for p in candidates]}; set data.root to one of them")
    return candidates[0] if candidates and _ucsd_base(candidates[0]) == candidates[0] else None


def detect_layout(root: Path) -> str:
    """Name of the layout found at `root` (see the module docstring); DataError if none matches."""
    if not root.exists():
        raise DataError(f"{root}: dataset path does not exist (data.root)")
    if root.is_file():
        if root.suffix.lower() in VIDEO_EXTENSIONS:
            return "videos"
        raise DataError(f"{root}: a file that is not a video ({', '.join(VIDEO_EXTENSIONS)})")
    if _is_shared(root):
        return "shared"
    if _ucsd_base(root) is not None:
        return "ucsd"
    if (root / "training" / "frames").is_dir() or (root / "testing" / "frames").is_dir():
        return "frames"
    if (root / "training_videos").is_dir() or (root / "testing_videos").is_dir():
        return "avenue"
    if _videos(root, recursive=True):
        return "videos"
    raise DataError(
        f"{root}: no known dataset layout; expected labels.json naming clip files (shared), "
        "Train/ and Test/ folders of .tif frames (UCSD), training/frames/NN/ (frames), "
        f"training_videos/ (Avenue), or video files ({', '.join(VIDEO_EXTENSIONS)})"
    )


def load_shared(root: Path, **_) -> Dataset:
    """root/labels.json: {fps, train: {id: {file, frames}}, test: {id: {file, frames, labels}}}."""
    meta_path = root / "labels.json"
    meta = read_json(meta_path)
    fps = float(meta.get("fps", 10.0))
    splits: dict[str, list[Clip]] = {"train": [], "test": []}
    for split in splits:
        for cid, entry in sorted((meta.get(split) or {}).items()):
            where = f"{meta_path}: {split}.{cid}"
            if not isinstance(entry, dict) or "file" not in entry or "frames" not in entry:
                raise DataError(f"{where}: expected an object with `file` and `frames`, got {entry!r:.80}")
            path = root / entry["file"]
            if not path.is_file():
                raise DataError(f"{where}: clip file {path} not found")
            frames = entry["frames"]
            if not isinstance(frames, int) or frames < 1:
                raise DataError(f"{where}.frames: expected a positive integer, got {frames!r}")
            labels = None
            if entry.get("labels") is not None:
                labels = as_labels(entry["labels"], where)
                if labels.size != frames:
                    raise DataError(f"{where}: {labels.size} labels for {frames} frames")
            splits[split].append(Clip(str(cid), split, path, frames, labels, fps, "labels"))
    return Dataset(root, "shared", splits["train"], splits["test"])


def _clip_number(name: str) -> int | None:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else None


def load_ucsd(root: Path, image_fps: float = UCSD_FPS, **_) -> Dataset:
    """UCSD's release; `*_gt` pixel-mask folders are not clips; labels from Test/UCSDped*.m by clip number."""
    base = _ucsd_base(root)
    if base is None:
        raise DataError(f"{root}: expected Train/ and Test/ folders (UCSD layout)")
    splits: dict[str, list[Clip]] = {"train": [], "test": []}
    for split, folder in (("train", base / "Train"), ("test", base / "Test")):
        if not folder.is_dir():
            continue
        for clip_dir in _subdirs(folder):
            if clip_dir.name.lower().endswith("_gt"):
                continue
            files = _images(clip_dir)
            splits[split].append(Clip(clip_dir.name, split, clip_dir, len(files), None, image_fps, "files", files))
    gt_files = sorted((base / "Test").glob("*.m")) if (base / "Test").is_dir() else []
    preferred = [p for p in gt_files if p.stem == base.name]
    gt_path = preferred[0] if preferred else (gt_files[0] if len(gt_files) == 1 else None)
    if len(gt_files) > 1 and not preferred:
        raise DataError(f"{base / 'Test'}: several .m files {[p.name for p in gt_files]}; expected {base.name}.m")
    if gt_path is None:
        if splits["test"]:
            logger.warning("%s: no ground-truth .m file in Test/; test clips are unlabelled", base)
    else:
        ranges = parse_ucsd_m(gt_path)
        labelled = []
        for clip in splits["test"]:
            number = _clip_number(clip.id)
            if number is None or not 1 <= number <= len(ranges):
                raise DataError(f"{gt_path}: has gt_frame for test clips 1..{len(ranges)}, no entry for folder {clip.path}")
            labels = ranges_to_labels(ranges[number - 1], clip.num_frames, f"{gt_path} clip {clip.id}")
            labelled.append(Clip(clip.id, "test", clip.path, clip.num_frames, labels, clip.fps, "files", clip.frame_files))
        splits["test"] = labelled
    return Dataset(base, "ucsd", splits["train"], splits["test"])


def _find_label_source(root: Path, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise DataError(f"{explicit}: label file not found")
        return explicit
    for candidate in (
        root / "labels.json",
        root / f"frame_labels_{root.name}.npy",
        root.parent / f"frame_labels_{root.name}.npy",
    ):
        if candidate.is_file():
            return candidate
    found = sorted(root.glob("frame_labels*.npy"))
    if len(found) > 1:
        raise DataError(f"{root}: several label files {[p.name for p in found]}; name one explicitly")
    return found[0] if found else None


def _attach_labels(clips: list[Clip], source: Path | None, per_clip: dict[str, np.ndarray] | None = None) -> list[Clip]:
    """Attach test labels from labels.json, a concatenated .npy, or per-clip arrays; lengths must match."""
    if source is None and not per_clip:
        if clips:
            logger.warning("no label file found; %d test clips are unlabelled", len(clips))
        return clips
    if source is not None and source.suffix.lower() == ".json":
        table = labels_from_json(source)
    elif source is not None:
        table = split_concatenated(load_npy(source), [(c.id, c.num_frames) for c in clips], str(source))
    else:
        table = per_clip or {}
    out = []
    for clip in clips:
        labels = table.get(clip.id)
        if labels is None:
            raise DataError(f"{source or clip.path}: no labels for test clip {clip.id!r}")
        count_from = clip.count_from
        if clip.count_from == "files" and labels.size != clip.num_frames:
            raise DataError(
                f"{source or clip.path}: {labels.size} labels for clip {clip.id!r}, which has {clip.num_frames} frame files"
            )
        if clip.count_from == "container":
            count_from = "labels"  # labels define the expected count; decoding checks it
            if labels.size != clip.num_frames:
                logger.warning(
                    "%s: container says %d frames, labels say %d; decoding will check", clip.path, clip.num_frames, labels.size
                )
        out.append(Clip(clip.id, "test", clip.path, labels.size, labels, clip.fps, count_from, clip.frame_files))
    return out


def load_frames(root: Path, labels: Path | None = None, image_fps: float = 10.0, **_) -> Dataset:
    """root/{training,testing}/frames/<id>/*.jpg, labels from labels.json or frame_labels_<name>.npy."""
    splits: dict[str, list[Clip]] = {"train": [], "test": []}
    for split, folder in (("train", root / "training" / "frames"), ("test", root / "testing" / "frames")):
        if folder.is_dir():
            for clip_dir in _subdirs(folder):
                files = _images(clip_dir)
                splits[split].append(Clip(clip_dir.name, split, clip_dir, len(files), None, image_fps, "files", files))
    test = _attach_labels(splits["test"], _find_label_source(root, labels))
    return Dataset(root, "frames", splits["train"], test)


def _video_clips(paths: list[Path], split: str, base: Path) -> list[Clip]:
    clips = []
    for path in paths:
        count, fps = probe_video(path)
        if count < 1:
            raise DataError(f"{path}: no video frames found")
        cid = path.relative_to(base).with_suffix("").as_posix()
        clips.append(Clip(cid, split, path, count, None, fps or 25.0, "container"))
    return clips


def load_avenue(root: Path, labels: Path | None = None, **_) -> Dataset:
    """root/{training,testing}_videos/<id>.avi; labels from labels.json, frame_labels_<name>.npy,
    per-clip testing_labels/<id>.npy (or <id>.npy beside the video), or none."""
    train_dir, test_dir = root / "training_videos", root / "testing_videos"
    train = _video_clips(_videos(train_dir), "train", train_dir) if train_dir.is_dir() else []
    test = _video_clips(_videos(test_dir), "test", test_dir) if test_dir.is_dir() else []
    source = _find_label_source(root, labels)
    per_clip = None
    if source is None:
        per_clip = {}
        for clip in test:
            for candidate in (root / "testing_labels" / f"{clip.id}.npy", clip.path.with_suffix(".npy")):
                if candidate.is_file():
                    per_clip[clip.id] = load_npy(candidate)
                    break
        if per_clip and len(per_clip) != len(test):
            missing = sorted({c.id for c in test} - set(per_clip))
            raise DataError(f"{root / 'testing_labels'}: per-clip .npy labels missing for test clip(s) {missing}")
    return Dataset(root, "avenue", train, _attach_labels(test, source, per_clip))


def load_videos(root: Path, **_) -> Dataset:
    """Every video under root (or root itself if it is a file): normal training footage, no labels."""
    if root.is_file():
        return Dataset(root, "videos", _video_clips([root], "train", root.parent), [])
    paths = _videos(root, recursive=True)
    if not paths:
        raise DataError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) found")
    return Dataset(root, "videos", _video_clips(paths, "train", root), [])


LOADERS = {"shared": load_shared, "ucsd": load_ucsd, "frames": load_frames, "avenue": load_avenue, "videos": load_videos}
