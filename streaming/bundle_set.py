"""The model bundles one scorer holds: each loaded once, shared by the cameras that score with it, unloaded unused.

A bundle is keyed by its real path and weights sha256: cameras with the same bundle share one Detector and one
BatchScorer (so their windows batch together, and each camera's running normaliser lives in its bundle's
BatchScorer). The default bundle (`scorer.bundle`, or the one PUT /bundle swapped in) stays loaded without cameras;
any other is unloaded when its last camera leaves. A change that would leave more than `max_bundles` loaded is
refused (BundleLimitError naming the limit). No locks and no Ray: ScorerService calls this under its locks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from offline.scoring.bundle import BundleError, read_bundle_config
from offline.scoring.detector import Detector
from streaming.batching import BatchScorer, frame_scorer_factory


class BundleLimitError(RuntimeError):
    """Loading one more bundle would pass `scorer.max_bundles` (the API answers 409)."""


def load_detector(path: str, device: str) -> Detector:
    """Load and validate a bundle completely on `device`; BundleError naming the file and reason when refused."""
    try:
        return Detector.load(path, device)  # BundleError: checksum, version, pickle, missing files
    except BundleError:
        raise
    except (ValueError, OSError, RuntimeError) as exc:  # e.g. a discriminator without its CLIP model
        raise BundleError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}") from None


def bundle_info(detector: Detector) -> dict[str, Any]:
    """What identifies a detector's bundle in status answers: path, weights sha256 prefix, version, input."""
    cfg = detector.config
    return {
        "path": str(detector.bundle.path),
        "sha256": cfg.weights_sha256[:12],
        "version": cfg.version,
        "input": {"size": detector.size, "window": detector.window},
    }


def parameter_bytes(detector: Detector) -> int:
    """Bytes of the detector's parameters and buffers (what one more loaded bundle costs in device memory)."""
    total = 0
    for model in (detector.spatial, detector.temporal, detector.discriminator):
        if model is not None:
            total += sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return total


@dataclass(eq=False)
class LoadedBundle:
    """One loaded bundle: its Detector, the BatchScorer holding its cameras' normalisers, and those cameras."""

    detector: Detector
    scorer: BatchScorer
    cameras: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, detector: Detector, max_batch: int) -> LoadedBundle:
        return cls(detector, BatchScorer(detector, frame_scorer_factory(detector), max_batch=max_batch))

    @property
    def path(self) -> str:
        return str(self.detector.bundle.path)

    @property
    def key(self) -> str:
        return f"{self.path}@{self.detector.config.weights_sha256}"

    @property
    def sha(self) -> str:
        """The weights' sha256 prefix shown in answers and metrics."""
        return self.detector.config.weights_sha256[:12]

    def model_input(self) -> dict[str, int]:
        """Frame size, window length and hop: what a camera scored by this bundle must feed."""
        d = self.detector
        return {"size": d.size, "window": d.window, "hop": d.config.scoring.hop}

    def fits(self, window: Any) -> bool:
        """True when a window (frames (T, H, W, 3)) has this bundle's input shape."""
        t, h, w = window.frames.shape[:3]
        return (t, h, w) == (self.detector.window, self.detector.size, self.detector.size)

    def describe(self, default: bool) -> dict[str, Any]:
        """The bundle as GET /scorers shows it."""
        return {**bundle_info(self.detector), "hop": self.detector.config.scoring.hop, "default": default,
                "cameras": sorted(self.cameras), "parameter_bytes": parameter_bytes(self.detector)}


class BundleSet:
    """The loaded bundles of one scorer and which camera scores with which (see the module docstring).

    Args:
        default: the default bundle's Detector (cameras without their own bundle score with it).
        max_bundles: most bundles loaded at once, the default included.
        max_batch: windows per Detector call of each bundle's BatchScorer.
    """

    def __init__(self, default: Detector, max_bundles: int = 8, max_batch: int = 16):
        if max_bundles < 1:
            raise ValueError(f"max_bundles must be >= 1, got {max_bundles}")
        self.max_bundles, self.max_batch = max_bundles, max_batch
        entry = LoadedBundle.of(default, max_batch)
        self.loaded: dict[str, LoadedBundle] = {entry.key: entry}
        self.default_key = entry.key
        self.camera_key: dict[str, str] = {}  # registered camera -> key of the bundle scoring it
        self.own: dict[str, str] = {}  # camera with its own bundle -> the path it asked for

    @property
    def default(self) -> LoadedBundle:
        return self.loaded[self.default_key]

    def key_for(self, camera: str) -> str:
        """The key of the bundle scoring `camera` (an unregistered camera scores with the default)."""
        return self.camera_key.get(camera, self.default_key)

    def entry_for(self, camera: str) -> LoadedBundle:
        return self.loaded.get(self.key_for(camera), self.default)

    def find(self, path: str) -> LoadedBundle | None:
        """A loaded bundle at `path` whose config.json still names the same weights (reused: no second load)."""
        for entry in self.loaded.values():
            if entry.path == str(path):
                try:
                    sha = read_bundle_config(path).weights_sha256
                except BundleError:
                    return None  # gone or damaged: a full load reports why
                if sha == entry.detector.config.weights_sha256:
                    return entry
        return None

    def _count_after(self, entry: LoadedBundle, moving: set[str], default_key: str) -> int:
        users = {k: set(e.cameras) for k, e in self.loaded.items()}
        users.setdefault(entry.key, set())
        for cam in moving:
            users.get(self.camera_key.get(cam, ""), set()).discard(cam)
            users[entry.key].add(cam)
        return sum(1 for k, cams in users.items() if cams or k == default_key)

    def check_room(self, entry: LoadedBundle, moving: set[str], as_default: bool = False) -> None:
        """BundleLimitError when moving `moving` cameras to `entry` (and making it the default if `as_default`)
        would leave more than `max_bundles` bundles loaded."""
        after = self._count_after(entry, moving, entry.key if as_default else self.default_key)
        if after > self.max_bundles:
            raise BundleLimitError(
                f"{entry.path}: would be bundle {after} loaded on this scorer, over the limit scorer.max_bundles "
                f"({self.max_bundles}); loaded: {sorted(e.path for e in self.loaded.values())}"
            )

    def _adopt(self, entry: LoadedBundle) -> LoadedBundle:
        """`entry`, or the loaded bundle with the same key (two loads of one bundle share the first)."""
        return self.loaded.setdefault(entry.key, entry)

    def _detach(self, camera: str) -> None:
        old = self.loaded.get(self.camera_key.pop(camera, ""))
        if old is not None:
            old.cameras.discard(camera)
            old.scorer.forget(camera)

    def _unload_unused(self) -> None:
        for key in [k for k, e in self.loaded.items() if not e.cameras and k != self.default_key]:
            del self.loaded[key]

    def assign(self, camera: str, entry: LoadedBundle, own: str | None) -> LoadedBundle:
        """Score `camera` with `entry` from now on (its own bundle `own`, None: it follows the default); its
        normaliser starts again from the bundle's calibration. Returns the entry now in use."""
        entry = self._adopt(entry)
        self._detach(camera)
        entry.cameras.add(camera)
        entry.scorer.forget(camera)
        self.camera_key[camera] = entry.key
        if own is None:
            self.own.pop(camera, None)
        else:
            self.own[camera] = own
        self._unload_unused()
        return entry

    def followers(self) -> set[str]:
        """Registered cameras without their own bundle (they follow the default)."""
        return {c for c in self.camera_key if c not in self.own}

    def set_default(self, entry: LoadedBundle) -> LoadedBundle:
        """Make `entry` the default; the cameras following the default move to it (their normalisers restart)."""
        entry = self._adopt(entry)
        followers = self.followers()
        self.default_key = entry.key
        for camera in followers:
            self.assign(camera, entry, None)
        self._unload_unused()
        return entry

    def remove(self, camera: str) -> None:
        """Forget a camera; its bundle is unloaded when no camera uses it any more (unless it is the default)."""
        self.own.pop(camera, None)
        self._detach(camera)
        self._unload_unused()

    def describe(self) -> list[dict[str, Any]]:
        """Every loaded bundle (GET /scorers), the default first."""
        entries = sorted(self.loaded.values(), key=lambda e: (e.key != self.default_key, e.path))
        return [e.describe(e.key == self.default_key) for e in entries]

    def camera_bundle(self, camera: str) -> dict[str, Any]:
        """The bundle of a camera as GET /cameras shows it: path, sha256 prefix, whether it is the default."""
        e = self.entry_for(camera)
        return {"path": e.path, "sha256": e.sha, "default": camera not in self.own}
