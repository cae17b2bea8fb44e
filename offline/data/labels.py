"""Frame-level label files: UCSD's `UCSDped*.m`, a `labels.json`, MNAD's concatenated `.npy`, per-clip `.npy`."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from offline.data.clips import DataError

_GT_LINE = re.compile(r"TestVideoFile\s*\{\s*(end\s*\+\s*1|\d+)\s*\}\s*\.\s*gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"^(\d+)(?::(\d+))?$")


def parse_ucsd_m(path: Path) -> list[list[tuple[int, int]]]:
    """Abnormal frame ranges per test clip, in file order, from `TestVideoFile{end+1}.gt_frame = [61:180];` lines.

    Ranges are 1-based inclusive as in the file; `[5:90, 140:200]` gives two ranges.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ground-truth file: {exc}") from None
    entries: dict[int, list[tuple[int, int]]] = {}
    count = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("%", 1)[0]  # MATLAB comment
        m = _GT_LINE.search(line)
        if not m:
            continue
        index = count + 1 if m.group(1).replace(" ", "") == "end+1" else int(m.group(1))
        count = max(count, index)
        ranges = []
        for token in re.split(r"[,\s]+", m.group(2).strip()):
            if not token:
                continue
            r = _RANGE.match(token)
            if not r:
                raise DataError(f"{path}:{lineno}: cannot parse gt_frame range {token!r} (expected A:B or A)")
            lo = int(r.group(1))
            hi = int(r.group(2) or lo)
            if lo < 1 or hi < lo:
                raise DataError(f"{path}:{lineno}: bad gt_frame range {token!r} (1-based, start <= end)")
            ranges.append((lo, hi))
        entries[index] = ranges
    if not entries:
        raise DataError(f"{path}: no `TestVideoFile{{end+1}}.gt_frame = [...]` lines found")
    missing = [i for i in range(1, count + 1) if i not in entries]
    if missing:
        raise DataError(f"{path}: gt_frame missing for test clip number(s) {missing}")
    return [entries[i] for i in range(1, count + 1)]


def ranges_to_labels(ranges: list[tuple[int, int]], num_frames: int, source: str) -> np.ndarray:
    """(num_frames,) uint8 0/1 labels from 1-based inclusive ranges; a range past the clip's end is an error."""
    labels = np.zeros(num_frames, np.uint8)
    for lo, hi in ranges:
        if hi > num_frames:
            raise DataError(f"{source}: abnormal range {lo}:{hi} goes past the clip's {num_frames} frames")
        labels[lo - 1 : hi] = 1
    return labels


def as_labels(values: Any, source: str) -> np.ndarray:
    """Validate a 0/1 sequence into a (N,) uint8 array."""
    arr = np.asarray(values).reshape(-1)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][:5]
        raise DataError(f"{source}: labels must be 0/1 per frame, got values {bad.tolist()}")
    return arr.astype(np.uint8)


def read_json(path: Path) -> Any:
    """A JSON label file as Python data; unreadable or invalid JSON is a DataError naming the file."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


def labels_from_json(path: Path) -> dict[str, np.ndarray]:
    """Test labels per clip id from a labels.json: the shared schema (`test: {id: {labels: [...]}}`)
    or a flat mapping `{id: [0, 1, ...]}`."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    entries = data.get("test", data)
    if not isinstance(entries, dict):
        raise DataError(f"{path}: `test` must map clip ids to entries, got {type(entries).__name__}")
    out = {}
    for cid, entry in entries.items():
        values = entry.get("labels") if isinstance(entry, dict) else entry
        if isinstance(entry, dict) and values is None:
            continue  # an entry without labels (e.g. a training clip listed in a flat file)
        if not isinstance(values, list):
            raise DataError(f"{path}: labels of clip {cid!r} must be a list of 0/1, got {type(values).__name__}")
        out[str(cid)] = as_labels(values, f"{path} clip {cid!r}")
    return out


def load_npy(path: Path) -> np.ndarray:
    """A label array from .npy, never unpickling."""
    try:
        return as_labels(np.load(path, allow_pickle=False), str(path))
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot read a numeric .npy label array: {exc}") from None


def split_concatenated(labels: np.ndarray, counts: list[tuple[str, int]], source: str) -> dict[str, np.ndarray]:
    """Split one label array over the test clips in order (MNAD's `frame_labels_<dataset>.npy`)."""
    total = sum(n for _, n in counts)
    if labels.size != total:
        detail = ", ".join(f"{cid}: {n}" for cid, n in counts)
        raise DataError(f"{source}: has {labels.size} labels but the test clips have {total} frames ({detail})")
    out, offset = {}, 0
    for cid, n in counts:
        out[cid] = labels[offset : offset + n]
        offset += n
    return out
