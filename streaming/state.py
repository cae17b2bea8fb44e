"""Runtime changes made through the control plane, kept in a JSON file so that a restart brings them back.

What is kept: per camera, its latest change through the API (added or replaced: the full CameraConfig; removed),
and the hot-swapped bundle path. Each change also records the config's own version at that time (the camera's
config entry, None when absent; `scorer.bundle`). At start `merge` applies the later change: a change whose
recorded config version still equals the config's applies; one whose config entry has changed since (the operator
edited config.yaml afterwards) is dropped with a warning naming it, and the config wins.

The file is written atomically (temporary file in the same directory, then os.replace) with mode 0600: camera
URLs may carry credentials. A file that cannot be read or does not validate is moved aside to
`<name>.bad-<timestamp>` and the service starts from its config. No Ray or HTTP, and nothing is logged here:
notes (level, message; camera names, never URLs) are returned for the control plane to log.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, ValidationError, model_validator

from offline.config import Strict
from streaming.config import CameraConfig, ServiceConfig, format_errors

STATE_VERSION = 1


class CameraChange(Strict):
    """A camera's latest change through the API; `config_was` is its config entry then (None: not in the config)."""

    op: Literal["set", "removed"]
    camera: CameraConfig | None = Field(None, description="the camera as the API left it (op 'set' only)")
    config_was: CameraConfig | None = None
    at: float = Field(description="epoch seconds of the change")

    @model_validator(mode="after")
    def _camera_iff_set(self) -> CameraChange:
        if (self.op == "set") != (self.camera is not None):
            raise ValueError(f"op {self.op!r} {'needs' if self.op == 'set' else 'takes no'} camera")
        return self

    def verb(self) -> str:
        """What the change did, for log lines: "added", "replaced" or "removed"."""
        return "removed" if self.op == "removed" else ("replaced" if self.config_was is not None else "added")


class BundleChange(Strict):
    """The bundle hot-swapped through the API; `config_was` is `scorer.bundle` then."""

    path: str = Field(min_length=1)
    config_was: str = Field(min_length=1)
    at: float


class State(Strict):
    """The whole state file."""

    version: Literal[1] = STATE_VERSION
    cameras: dict[str, CameraChange] = Field(default_factory=dict)
    bundle: BundleChange | None = None

    @model_validator(mode="after")
    def _keys_are_names(self) -> State:
        for key, change in self.cameras.items():
            if change.camera is not None and change.camera.name != key:
                raise ValueError(f"cameras.{key}: holds camera {change.camera.name!r}")
        return self

    def api_cameras(self) -> set[str]:
        """Names whose running config comes from the API (added or replaced there)."""
        return {n for n, c in self.cameras.items() if c.op == "set"}


class Note(NamedTuple):
    """Something the caller should log: a logging level and a message (names, never URLs)."""

    level: int
    message: str


class Merged(NamedTuple):
    """What a start runs with: the cameras (config order, API additions after), the bundle to swap to (None: the
    config's), notes to log, and the state with stale changes dropped (save it when it differs)."""

    cameras: list[CameraConfig]
    bundle: str | None
    notes: list[Note]
    state: State


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def record_camera(state: State, config: ServiceConfig, name: str, camera: CameraConfig | None, now: float) -> State:
    """The state after camera `name` was set to `camera` (None: removed) through the API; a change that leaves
    the camera as the config has it is no change and is forgotten."""
    config_was = config.camera(name)
    cameras = dict(state.cameras)
    if camera == config_was:  # back to the config's version (or removed and absent from the config)
        cameras.pop(name, None)
    else:
        op = "removed" if camera is None else "set"
        cameras[name] = CameraChange(op=op, camera=camera, config_was=config_was, at=now)
    return state.model_copy(update={"cameras": cameras})


def record_bundle(state: State, config: ServiceConfig, path: str, now: float) -> State:
    """The state after a hot-swap to `path`; swapping back to `scorer.bundle` forgets the change."""
    was = str(config.scorer.bundle)
    bundle = None if path == was else BundleChange(path=path, config_was=was, at=now)
    return state.model_copy(update={"bundle": bundle})


def merge(config: ServiceConfig, state: State) -> Merged:
    """Apply the API changes in `state` to `config` where the config entry has not changed since (the later wins)."""
    cams = {c.name: c for c in config.cameras}
    order = list(cams)
    kept: dict[str, CameraChange] = {}
    notes: list[Note] = []
    for name, change in sorted(state.cameras.items(), key=lambda kv: kv[1].at):
        current = config.camera(name)
        if current != change.config_was:
            now_ = "is absent from" if current is None else "has another entry in"
            notes.append(Note(logging.WARNING, f"camera {name}: {change.verb()} through the API at {_when(change.at)}, "
                              f"but the config {now_} it since: the config wins, the API change is dropped"))
            continue
        kept[name] = change
        if change.op == "removed":
            cams.pop(name, None)
        else:
            assert change.camera is not None
            if name not in cams:
                order.append(name)
            cams[name] = change.camera
        notes.append(Note(logging.INFO, f"camera {name}: {change.verb()} through the API at {_when(change.at)}, kept"))
    bundle = None
    b = state.bundle
    if b is not None:
        if str(config.scorer.bundle) != b.config_was:
            notes.append(Note(logging.WARNING, f"bundle: hot-swapped to {b.path} at {_when(b.at)}, but scorer.bundle "
                              f"changed since ({b.config_was} -> {config.scorer.bundle}): the config wins"))
            b = None
        else:
            bundle = b.path
            notes.append(Note(logging.INFO, f"bundle: hot-swapped to {b.path} at {_when(b.at)}, kept"))
    pruned = state.model_copy(update={"cameras": kept, "bundle": b})
    return Merged([cams[n] for n in order if n in cams], bundle, notes, pruned)


def move_aside(path: Path, now: float) -> Path:
    """Rename a bad state file to `<name>.bad-<timestamp>` (kept for the operator), returning the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    dest = path.with_name(f"{path.name}.bad-{stamp}")
    k = 1
    while dest.exists():
        k += 1
        dest = path.with_name(f"{path.name}.bad-{stamp}-{k}")
    os.replace(path, dest)
    return dest


def load(path: Path, now: float | None = None) -> tuple[State, list[Note]]:
    """Read the state file; a missing file is the empty state; a bad one is moved aside with an ERROR note naming
    the file and the field, and the empty state is returned (the service starts from its config)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State(), []
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"{path}: cannot be read: {type(exc).__name__}: {exc}"
    else:
        try:
            return State.model_validate(json.loads(text)), []
        except json.JSONDecodeError as exc:
            reason = f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        except ValidationError as exc:
            reason = format_errors(exc, str(path)).replace("\n", ";")
    try:
        moved = f"moved aside to {move_aside(path, time.time() if now is None else now)}"
    except OSError as exc:
        moved = f"could not be moved aside ({type(exc).__name__}: {exc})"
    return State(), [Note(logging.ERROR, f"state file {reason}; {moved}; starting from the config alone")]


def save(path: Path, state: State) -> None:
    """Write the state atomically (temporary file in the same directory, fsync, os.replace), mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(state.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
