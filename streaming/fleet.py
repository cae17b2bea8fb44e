"""The fleet of actors behind the control plane: scorer actors (one per device) and camera actors (one per camera).

`Fleet` starts, changes and stops them: cameras are added, replaced and removed (alert-only changes apply live), the
default model bundle is hot-swapped on every scorer in two phases and a camera's own bundle on its scorer (its ingest
follows the new bundle's input), runtime changes are persisted (streaming/state.py: the later of an API change and a
config edit wins at start), and a watcher thread gives a restarted scorer back its
cameras and the active bundle. Status, health and /metrics over the fleet are in streaming/status.py; HTTP in
streaming/app.py. Over 350 lines: camera lifecycle, swap and persistence change the same actor tables under
one lock, and splitting them would spread that lock over modules.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import ray

from offline.scoring.bundle import BundleError
from streaming import state as persisted
from streaming.bundle_set import BundleLimitError
from streaming.camera_actor import CameraActor
from streaming.config import ALERT_FIELDS, CameraConfig, ServiceConfig
from streaming.credentials import scrub_url
from streaming.prometheus import SnapshotCollector, VadMetrics
from streaming.scorer_service import ScorerService

logger = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 2.0  # a restarting actor queues calls: answer 503 while it is away instead of waiting for it
LOAD_TIMEOUT_S = 300.0  # a call that may load a bundle


def remote(ref: Any, timeout_s: float) -> Any:
    """ray.get, raising the actor's own BundleError or BundleLimitError (Ray wraps them) for the API to answer."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (BundleError, BundleLimitError)):
            raise cause from None
        raise


class FleetMetrics:
    """The control plane's metrics: its registry, the families the actors ship, and alerts already counted."""

    def __init__(self):
        self.metrics = VadMetrics()
        self.collector = SnapshotCollector()
        self.lock = threading.Lock()
        self.alerts_seen: dict[str, int] = {}

    def forget_camera(self, name: str) -> None:
        """A removed camera's series go (they would otherwise report its last values forever)."""
        with self.lock:
            self.metrics.remove_camera(name)
            self.alerts_seen.pop(name, None)
            self.collector.remove(f"camera:{name}")


class NoScorerError(RuntimeError):
    """No scorer actor answered a query that any of them could answer (the API answers 503)."""


def scorer_devices(cfg: ServiceConfig) -> list[str]:
    """One scorer per entry of `scorer.devices`; auto: one per GPU of the Ray cluster, else one on the CPU."""
    if cfg.scorer.devices != "auto":
        return list(cfg.scorer.devices)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]


class Fleet:
    """Starts, changes and stops the scorer and camera actors (their status and metrics: streaming/status.py)."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self._lock = threading.RLock()
        self.cameras: dict[str, CameraConfig] = {}
        self.camera_actors: dict[str, Any] = {}
        self.camera_scorer: dict[str, int] = {}
        self.actor_names: dict[str, str] = {}
        self._generation = 0
        self.scorers: list[tuple[str, Any]] = []
        self.scorer_actor_names: dict[str, str] = {}
        self.bundle = str(Path(cfg.scorer.bundle))  # the active bundle; a restarted scorer is brought back to it
        self._swap_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.state_path = Path(cfg.state_file()) if cfg.state.persist else None
        self.state_error: str | None = None  # why the last save failed; None after a good one
        merged = self._load_state()
        s = cfg.scorer
        for device in scorer_devices(cfg):
            gpu = device.startswith("cuda")
            # max_restarts: a killed or crashed scorer comes back (same args); `_watch` re-registers its cameras
            opts: dict[str, Any] = {"max_concurrency": 8, "num_cpus": 0.1 if gpu else s.num_cpus, "max_restarts": -1}
            if gpu:
                opts["num_gpus"] = 1
            # named (unique per run) so operators and the fault suite can find it: `ray.get_actor(name, namespace)`
            opts |= {"name": f"scorer:{device}:{uuid.uuid4().hex[:8]}", "namespace": cfg.namespace}
            self.scorer_actor_names[device] = opts["name"]
            actor = ray.remote(ScorerService).options(**opts).remote(
                name=device,
                device="cuda:0" if gpu else "cpu",  # Ray gives each GPU scorer its own CUDA_VISIBLE_DEVICES
                bundle=str(s.bundle),
                events=cfg.events.model_dump(mode="json"),
                alerts=cfg.alerts.model_dump(),
                max_batch=s.max_batch,
                max_wait_ms=s.max_wait_ms,
                max_pending=s.max_pending_per_camera,
                torch_threads=s.torch_threads,
                max_bundles=s.max_bundles,
                # false alarms' clips go where the camera's next learn reads its recordings
                feedback_root=None if cfg.recordings.root is None else str(cfg.recordings.root),
                notify=cfg.notify.model_dump(mode="json"),
            )
            self.scorers.append((device, actor))
        self.model_input = ray.get(self.scorers[0][1].model_input.remote(), timeout=300)
        closed = ray.get(self.scorers[0][1].close_dangling.remote(), timeout=60)
        if closed:
            logger.warning("closed %d event(s) left open by a previous run", closed)
        self.metrics = FleetMetrics()
        if merged.bundle is not None:
            self._restore_bundle(merged.bundle)
        for cam in merged.cameras:
            self._start_merged(cam)
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="fleet-watch", daemon=True).start()

    # ------------------------------------------------------------------------------------ persisted state
    def _load_state(self) -> persisted.Merged:
        """Read the state file and merge it with the config (the later change wins); log what was kept or dropped."""
        state = persisted.State()
        if self.state_path is not None:
            state, notes = persisted.load(self.state_path)
            for note in notes:
                logger.log(note.level, "%s", note.message)
        merged = persisted.merge(self.cfg, state)
        for note in merged.notes:
            logger.log(note.level, "state file %s: %s", self.state_path, note.message)
        self.state = merged.state
        if self.state != state:
            self._save_state()
        return merged

    def _save_state(self) -> None:
        """Write the state file; a failure is logged and kept in `state_error` (the API's answers carry it: the
        change stays live but will not survive a restart)."""
        if self.state_path is None:
            return
        with self._state_lock:
            try:
                persisted.save(self.state_path, self.state)
                self.state_error = None
            except OSError as exc:
                self.state_error = f"state file {self.state_path}: cannot save ({type(exc).__name__}: {exc})"
                logger.error("%s; runtime changes will not survive a restart", self.state_error)

    def persistence(self) -> dict[str, Any]:
        """For the API's answers to changes: whether the last change was saved for the next start, and why not."""
        if self.state_path is None:
            return {"persisted": False, "persist_error": "state.persist is false"}
        return {"persisted": self.state_error is None, "persist_error": self.state_error}

    def source(self, name: str) -> Literal["config", "api"]:
        """Where a running camera's config comes from: the API when the state holds a change of it, else the config."""
        return "api" if name in self.state.api_cameras() else "config"

    def _record_camera(self, name: str, cam: CameraConfig | None) -> None:
        with self._state_lock:
            self.state = persisted.record_camera(self.state, self.cfg, name, cam, time.time())
        self._save_state()

    def _start_merged(self, cam: CameraConfig) -> None:
        """Start a camera at start-up; one restored from the state file whose file now lies outside
        `cameras_file_roots`, or whose bundle is outside the roots or refused, is logged naming it, forgotten, and
        the config's entry (if any) runs instead."""
        try:
            self.add(cam)
            return
        except (PermissionError, BundleError, BundleLimitError) as exc:
            if self.source(cam.name) != "api":
                raise
            logger.error("state file %s: camera %s not started, its API change is dropped: %s",
                         self.state_path, cam.name, scrub_url(str(exc))[:500])
        with self._state_lock:
            self.state = self.state.model_copy(
                update={"cameras": {n: c for n, c in self.state.cameras.items() if n != cam.name}})
        self._save_state()
        fallback = self.cfg.camera(cam.name)
        if fallback is not None:
            self.add(fallback)

    def _restore_bundle(self, path: str) -> None:
        """Swap to the persisted bundle at start; one outside the roots or no longer loading falls back to the
        config's `scorer.bundle` (logged naming it) and is forgotten."""
        try:
            self.cfg.scorer.confine(path)
            self.swap_bundle(path)
            return
        except Exception as exc:  # noqa: BLE001 - PermissionError, BundleError, a scorer error: all fall back
            cause = getattr(exc, "cause", None) or exc
            logger.error("state file %s: persisted bundle %s not used (%s: %s); scoring with scorer.bundle %s",
                         self.state_path, path, type(cause).__name__, scrub_url(str(cause))[:500], self.cfg.scorer.bundle)
        with self._state_lock:
            self.state = self.state.model_copy(update={"bundle": None})
        self._save_state()

    def _watch(self, every_s: float = 1.0) -> None:
        """Give a restarted scorer back its cameras' alert settings (a fresh incarnation knows none) and the active
        bundle (it restarts with the bundle of its constructor, which a hot-swap may have replaced)."""
        while not self._stop.wait(every_s):
            for i, (_, scorer) in enumerate(self.scorers):
                try:
                    if self._swap_lock.acquire(blocking=False):  # a swap under way brings every scorer along itself
                        try:
                            running = ray.get(scorer.bundle_info.remote(), timeout=2.0)
                            if running["path"] != self.bundle:
                                info = ray.get(scorer.prepare_bundle.remote(self.bundle), timeout=120)
                                ray.get(scorer.commit_bundle.remote(info["sha256"]), timeout=10)
                                logger.warning("scorer %s restarted: bundle %s applied again", self.scorers[i][0], self.bundle)
                        finally:
                            self._swap_lock.release()
                    known = set(ray.get(scorer.registered.remote(), timeout=2.0))
                    with self._lock:
                        missing = [self.cameras[n] for n, j in self.camera_scorer.items() if j == i and n not in known]
                    for cam in missing:
                        ray.get(scorer.set_camera.remote(
                            cam.name, cam.alert_settings(self.cfg.alerts).model_dump(), fps=cam.fps,
                            bundle=self.cfg.scorer.camera_bundle(cam)), timeout=LOAD_TIMEOUT_S)
                        logger.warning("scorer %s restarted: camera %s registered again", self.scorers[i][0], cam.name)
                except Exception:  # noqa: BLE001 - a scorer still down: /healthz reports it, retry next round
                    continue

    # ---------------------------------------------------------------------------------------- cameras
    def running_actors(self) -> dict[str, Any]:
        """A copy of the camera actors by camera name (safe to use while cameras come and go)."""
        with self._lock:
            return dict(self.camera_actors)

    def placements(self, names: list[str] | None = None) -> list[tuple[str, CameraConfig, int]]:
        """(name, config, scorer index) of the running cameras among `names` (default: all, sorted by name)."""
        with self._lock:
            return [(n, self.cameras[n], self.camera_scorer[n]) for n in (names or sorted(self.cameras)) if n in self.cameras]

    def _pick_scorer(self) -> int:
        load = [0] * len(self.scorers)
        for i in self.camera_scorer.values():
            load[i] += 1
        return min(range(len(load)), key=load.__getitem__)

    def add(self, cam: CameraConfig, *, via_api: bool = False) -> None:
        """Start camera `cam` (KeyError if the name runs; PermissionError, nothing started, when its file lies
        outside `cameras_file_roots` or its bundle outside `scorer.bundle_roots`; BundleError / BundleLimitError
        when its bundle is refused); `via_api` records it in the state file."""
        real = self.cfg.confine_camera(cam.url)
        bundle = self.cfg.scorer.camera_bundle(cam)
        # the actor opens the checked real path, so a symlink retargeted later cannot lead it out of the roots
        opened = cam if real is None else cam.model_copy(update={"url": str(real)})
        with self._lock:
            if cam.name in self.cameras:
                raise KeyError(cam.name)
            i = self._pick_scorer()
            scorer = self.scorers[i][1]
            model_input = remote(scorer.set_camera.remote(  # the input of the camera's bundle
                cam.name, cam.alert_settings(self.cfg.alerts).model_dump(), fps=cam.fps, bundle=bundle), LOAD_TIMEOUT_S)
            self._generation += 1
            actor_name = f"camera:{cam.name}:{self._generation}"  # unique: a re-added camera never waits for a name
            actor = ray.remote(CameraActor).options(
                name=actor_name,
                namespace=self.cfg.namespace,
                num_cpus=self.cfg.camera_num_cpus,
                max_concurrency=4,
                scheduling_strategy="SPREAD",
            ).remote(opened.model_dump(), scorer, model_input["size"], model_input["window"], self.cfg.max_inflight_windows,
                       model_input.get("hop"))
            self.cameras[cam.name] = cam
            self.camera_actors[cam.name] = actor
            self.camera_scorer[cam.name] = i
            self.actor_names[cam.name] = actor_name
            logger.info("camera %s added (%s, scorer %s)", cam.name, scrub_url(cam.url), self.scorers[i][0])
            if via_api:
                self._record_camera(cam.name, cam)

    def remove(self, name: str, *, via_api: bool = False) -> None:
        """Stop and forget camera `name` (KeyError if unknown); `via_api` records the removal in the state file."""
        with self._lock:
            cam = self.cameras.pop(name)
            actor = self.camera_actors.pop(name)
            i = self.camera_scorer.pop(name)
            self.actor_names.pop(name, None)
            try:
                ray.get(actor.stop.remote(), timeout=cam.read_timeout_s + 5)
            except Exception:  # noqa: BLE001 - a dead actor is removed all the same
                logger.warning("camera %s did not stop cleanly; killing its actor", name)
            ray.kill(actor)
            ray.get(self.scorers[i][1].remove_camera.remote(name), timeout=CALL_TIMEOUT_S)
            self.metrics.forget_camera(name)
            logger.info("camera %s removed", name)
            if via_api:
                self._record_camera(name, None)

    def update(self, cam: CameraConfig, *, via_api: bool = False) -> str:
        """Apply a new config; returns "alerts" (live change), "bundle" (its bundle hot-swapped, alerts live) or
        "restarted"; `via_api` records it. A file outside `cameras_file_roots` or a bundle outside
        `scorer.bundle_roots` (PermissionError) or a refused bundle (BundleError, BundleLimitError) leaves the
        running camera as it was."""
        self.cfg.confine_camera(cam.url)
        bundle = self.cfg.scorer.camera_bundle(cam)
        with self._lock:
            old = self.cameras[cam.name]
            changed = {k for k, v in cam.model_dump().items() if old.model_dump()[k] != v}
            if "bundle" in changed:  # validated and switched first: a refusal changes nothing
                self._swap_camera(cam.name, bundle)
            if changed <= ALERT_FIELDS | {"bundle"}:
                scorer = self.scorers[self.camera_scorer[cam.name]][1]
                remote(scorer.set_camera.remote(cam.name, cam.alert_settings(self.cfg.alerts).model_dump(), fps=cam.fps,
                                                bundle=bundle), LOAD_TIMEOUT_S)
                self.cameras[cam.name] = cam
                how = "bundle" if "bundle" in changed else "alerts"
            else:
                self.remove(cam.name)
                self.add(cam)
                how = "restarted"
            if via_api:
                self._record_camera(cam.name, cam)
            return how

    # ----------------------------------------------------------------------------------------- bundle
    def swap_camera_bundle(self, name: str, path: str | None, *, via_api: bool = False) -> dict[str, Any]:
        """Hot-swap camera `name` to its own bundle at `path` (None: back to the default bundle) on its scorer;
        `via_api` records the camera's new config. KeyError for an unknown camera, PermissionError outside
        `scorer.bundle_roots`, BundleError / BundleLimitError when refused: the running bundle keeps scoring."""
        real = None if path is None else str(self.cfg.scorer.confine(path))
        with self._lock:
            cam = self.cameras[name]
            info = self._swap_camera(name, real)
            cam = self.cameras[name] = cam.model_copy(update={"bundle": None if real is None else Path(real)})
            if via_api:
                self._record_camera(name, cam)
        return info

    def _swap_camera(self, name: str, bundle: str | None) -> dict[str, Any]:
        """Switch a running camera's bundle on its scorer, then cut its windows for the new input (under `_lock`)."""
        scorer = self.scorers[self.camera_scorer[name]][1]
        info = remote(scorer.swap_camera_bundle.remote(name, bundle), LOAD_TIMEOUT_S)
        timeout = self.cameras[name].read_timeout_s + 10  # the ingest loop stops within about its read timeout
        info["input"] = ray.get(self.camera_actors[name].set_input.remote(**info["input"]), timeout=timeout)
        logger.warning("camera %s: bundle %s (%s) -> %s (%s)", name, info["previous"]["path"],
                       info["previous"]["sha256"], info["path"], info["sha256"])
        return info

    def swap_bundle(self, path: str, *, via_api: bool = False) -> dict[str, Any]:
        """Hot-swap every scorer to the bundle at `path`: all load and validate it first, then all commit;
        `via_api` records the swap in the state file.

        Raises BundleError (nothing changed) when any scorer refuses it; RuntimeError when a swap is under way.
        """
        if not self._swap_lock.acquire(blocking=False):
            raise RuntimeError("another bundle swap is in progress")
        try:
            previous = self.bundle_info()
            staged: list[dict[str, Any]] = []
            try:
                for _, actor in self.scorers:
                    staged.append(ray.get(actor.prepare_bundle.remote(path), timeout=300))
            except Exception as exc:  # noqa: BLE001 - a refusal anywhere cancels the swap everywhere
                for _, actor in self.scorers:
                    actor.discard_bundle.remote()
                cause = getattr(exc, "cause", None) or exc  # ray wraps the actor's exception in RayTaskError
                if isinstance(cause, BundleError):
                    raise BundleError(str(cause)) from None
                raise
            sha = staged[0]["sha256"]
            for _, actor in self.scorers:
                ray.get(actor.commit_bundle.remote(sha), timeout=CALL_TIMEOUT_S)
            self.bundle = staged[0]["path"]
            logger.warning("bundle swapped: %s (%s) -> %s (%s)", previous.get("path"), previous.get("sha256"), path, sha)
            if via_api:
                with self._state_lock:
                    self.state = persisted.record_bundle(self.state, self.cfg, self.bundle, time.time())
                self._save_state()
            return {**staged[0], "previous": previous}
        finally:
            self._swap_lock.release()

    def bundle_info(self) -> dict[str, Any]:
        """The active bundle as the first scorer that answers reports it (all scorers run the same one)."""
        for _, actor in self.scorers:
            try:
                return ray.get(actor.bundle_info.remote(), timeout=HEALTH_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a restarting scorer: ask the next
                continue
        return {"path": self.bundle, "sha256": None, "version": None, "input": self.model_input}

    def event_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Read events through the first scorer that answers (they share one SQLite file)."""
        last: Exception | None = None
        for _, actor in self.scorers:
            try:
                return ray.get(getattr(actor, method).remote(*args, **kwargs), timeout=CALL_TIMEOUT_S)
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - try the next scorer
                last = exc
        raise NoScorerError(f"no scorer answered the events query: {type(last).__name__}")

    def shutdown(self) -> None:
        """Stop the watcher, every camera (their open alerts close) and every scorer actor."""
        self._stop.set()
        with self._lock:
            for name in list(self.cameras):
                try:
                    self.remove(name)
                except Exception:  # noqa: BLE001
                    logger.exception("camera %s: removal at shutdown failed", name)
            for _, actor in self.scorers:
                try:
                    ray.get(actor.stop.remote(), timeout=30)
                except Exception:  # noqa: BLE001
                    pass
                ray.kill(actor)
