"""Learn jobs: `vad learn` for one camera, run as a Ray task beside the scoring, watched and reported.

`LearnJobs.start` hands a camera's recordings to offline.learn in a Ray task with its own CPU request (so the
scorers keep their share) and `max_retries=0` (a learn that dies is reported, not silently re-run). A watcher thread
follows the task's progress file (stage, fraction, step, worker pid), then records the result (learn.json: score
quantiles and false alerts per hour on unseen footage) or the reason it failed. The new bundle is written into a
fresh directory, so a job that is killed or fails leaves every running model untouched; `swap` asks the caller's
`swap(camera, path)` to put the new bundle in when, and only when, the job succeeded. One job per camera at a time
(JobConflict -> 409). Jobs live as long as the service; their bundles and learn.json stay on disk.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, field_validator

from offline.config import Strict
from streaming.config import LearnConfig

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed"]
# what a learn request may change: how long and how big the model trains, never a path
REQUEST_OVERRIDES = frozenset({"train.epochs", "train.max_steps", "train.batch_size", "train.lr", "train.seed",
                               "data.size", "data.train_stride", "model.channels", "pa.spatial"})
PROGRESS_FILE = "progress.json"


class JobConflict(RuntimeError):
    """A camera already has a learn job queued or running."""


class LearnRequest(Strict):
    """Body of POST /cameras/{name}/learn."""

    schedule: Literal["auto", "tiny", "cpu", "paper"] | None = Field(None, description="default: learn.schedule")
    max_false_alerts_per_hour: float | None = Field(
        None, ge=0, le=3600, description="choose the alert threshold for this rate (default: the camera's, else alerts')")
    swap: bool = Field(False, description="put the new bundle in for this camera when the job succeeds")
    temporal: bool | None = Field(None, description="also train the flow autoencoder (default: learn.temporal)")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description=f"training fields (SECTION.KEY: value), only {sorted(REQUEST_OVERRIDES)}")

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) - REQUEST_OVERRIDES)  # never paths: a request must not choose what is read or written
        if bad:
            raise ValueError(f"{bad} may not be set through the API (allowed: {sorted(REQUEST_OVERRIDES)})")
        return v


@dataclass
class Job:
    """One learn job as GET /jobs/{id} shows it."""

    id: str
    camera: str
    data: str
    bundle: str
    schedule: str
    swap: bool
    temporal: bool = False
    state: JobState = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    swapped: bool = False
    swap_error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


def _learn_task(data: str, out: str, kwargs: dict[str, Any], progress_path: str) -> dict[str, Any]:
    """The Ray task: offline.learn with its progress written (atomically) where the watcher reads it."""
    import torch

    from offline.learn import learn
    from offline.scoring.alert_rules import AlertRules

    path = Path(progress_path)
    pid = os.getpid()

    def report(p: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**p, "pid": pid}))
        tmp.replace(path)

    report({"stage": "starting", "fraction": 0.0, "step": None})
    torch.set_num_threads(max(1, int(kwargs.pop("threads", 1))))
    rules = AlertRules(**kwargs.pop("rules"))
    result = learn(data, out, rules=rules, progress=False, on_progress=report, **kwargs)
    return result.report


class LearnJobs:
    """The service's learn jobs (see the module docstring); thread-safe."""

    def __init__(self, cfg: LearnConfig, swap: Callable[[str, str], Any] | None = None, poll_s: float = 0.5):
        self.cfg = cfg
        self._swap = swap
        self._poll_s = poll_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def list(self, camera: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if camera is None or j.camera == camera]
        return [j.public() for j in sorted(jobs, key=lambda j: j.created, reverse=True)]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job.public() if job else None

    def schedule(self, request: LearnRequest) -> str:
        """The request's schedule, else learn.schedule; auto: the GPU schedule when jobs get a GPU, else cpu."""
        schedule = request.schedule or self.cfg.schedule
        if schedule == "auto":
            return "paper" if self.cfg.num_gpus > 0 else "cpu"
        return schedule

    def temporal(self, request: LearnRequest) -> bool:
        """Whether the job also trains the flow AE: the request's choice, else learn.temporal."""
        return self.cfg.temporal if request.temporal is None else request.temporal

    def start(
        self, camera: str, data: str | Path, request: LearnRequest, *, fps: float, rules: dict[str, float],
        max_false_alerts_per_hour: float | None = None,
    ) -> dict[str, Any]:
        """Queue a learn of `camera` on the footage in `data`; JobConflict when one is already under way,
        FileNotFoundError naming `data` when there is nothing to learn from."""
        import ray

        data = Path(data)
        if not data.is_dir() or not any(p.is_file() for p in data.rglob("*")):
            raise FileNotFoundError(f"camera {camera!r}: no recordings in {data} (record normal footage first)")
        with self._lock:
            busy = [j.id for j in self._jobs.values() if j.camera == camera and j.state in ("queued", "running")]
            if busy:
                raise JobConflict(f"camera {camera!r} already has learn job {busy[0]} under way")
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            job_id = f"{camera}-{stamp}-{uuid.uuid4().hex[:6]}"
            if self.cfg.bundles_root is None:
                raise ValueError("learn.bundles_root is not set (streaming.config.resolve_paths gives it its default)")
            out = self.cfg.bundles_root / camera / job_id
            job = Job(job_id, camera, str(data), str(out), self.schedule(request), request.swap, self.temporal(request))
            self._jobs[job_id] = job
        out.parent.mkdir(parents=True, exist_ok=True)
        rate = request.max_false_alerts_per_hour if request.max_false_alerts_per_hour is not None else max_false_alerts_per_hour
        kwargs = {
            "schedule": job.schedule, "eval_fraction": self.cfg.eval_fraction, "max_false_alerts_per_hour": rate,
            "fps": fps, "rules": rules, "overrides": dict(request.overrides), "work_dir": str(out) + ".run",
            "threads": max(1, int(self.cfg.num_cpus)),
            "temporal": job.temporal,
        }
        progress = out.parent / f"{job_id}.{PROGRESS_FILE}"
        # max_calls=1: the worker exits when the job ends, handing back the training's memory (torch, decoded
        # footage: ~450 MB for the tiny schedule in bench/soak.py) instead of idling in Ray's pool with it
        task = ray.remote(max_calls=1)(_learn_task).options(
            num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus, max_retries=0)
        ref = task.remote(str(data), str(out), kwargs, str(progress))
        threading.Thread(target=self._watch, args=(job, ref, progress), name=f"learn-{job_id}", daemon=True).start()
        logger.info("learn job %s: camera %s on %s (%s schedule%s)", job_id, camera, data, job.schedule,
                    ", spatial + temporal AEs" if job.temporal else "")
        return job.public()

    def _read_progress(self, job: Job, path: Path) -> None:
        try:
            p = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        with self._lock:
            job.progress = p
            if job.state == "queued":
                job.state = "running"

    def _watch(self, job: Job, ref, progress: Path) -> None:
        import ray

        while True:
            ready, _ = ray.wait([ref], timeout=self._poll_s)
            self._read_progress(job, progress)
            if ready:
                break
        try:
            result = ray.get(ref)
        except Exception as exc:  # RayTaskError (the learn raised), WorkerCrashedError (killed), ...
            reason = _failure_reason(exc)
            with self._lock:
                job.state, job.error, job.finished = "failed", reason, time.time()
            logger.error("learn job %s failed: %s (the running bundle is untouched)", job.id, reason)
            return
        with self._lock:
            job.state, job.result, job.finished = "done", result, time.time()
            job.progress = {**job.progress, "stage": "done", "fraction": 1.0}
        logger.info("learn job %s done: bundle %s", job.id, job.bundle)
        if job.swap and self._swap is not None:
            try:
                self._swap(job.camera, job.bundle)
                with self._lock:
                    job.swapped = True
            except Exception as exc:  # the swap is refused: the camera keeps its bundle, the job says why
                with self._lock:
                    job.swap_error = str(exc)
                logger.error("learn job %s: swapping the new bundle into camera %s refused: %s", job.id, job.camera, exc)


def _failure_reason(exc: BaseException) -> str:
    """A one-line reason: the learn's own error (e.g. no footage, a bad field), or how the worker died."""
    cause = getattr(exc, "cause", None) or exc
    name = type(exc).__name__
    if "WorkerCrashed" in name or "ActorDied" in name or "NodeDied" in name or "ObjectLost" in name:
        return f"the learn worker died ({name}): killed or out of memory"
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
