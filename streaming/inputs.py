"""Checks on the text a client gives that names a source or a file, made when it is given (config or API), not
when a camera opens it or a path reaches the file system.

`check_source_url` validates a camera URL of every scheme (streaming/sources.py opens the same ones);
`DemoParams` are the demo feed's parameters with their bounds (its 142 PiB frame is refused at add time);
`PathText` is a path string without NUL or other control characters (the OS refuses those with a bare
ValueError deep inside path resolution). Pure standard library and pydantic: the config imports it.
"""
from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from pydantic import AfterValidator, Field, ValidationError, field_validator

from offline.config import Strict

URL_SCHEMES = ("rtsp", "rtsps", "file", "demo")
DEMO_CROSSING_S = 1.6  # DemoFeed's crossing_s: a crossing must end before the next starts


def no_control_chars(text: str) -> str:
    """`text` unchanged; ValueError when it holds a NUL or another control character."""
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (found {bad!r} at {text.index(bad)})")
    return text


PathText = Annotated[str, AfterValidator(no_control_chars)]


class DemoParams(Strict):
    """The query of `demo://name?...`: the built-in feed's parameters (streaming/demo_feed.py)."""

    seed: int = Field(0, ge=0, lt=2**32, description="everything random in the scene comes from it")
    fps: float = Field(25.0, gt=0, le=120, allow_inf_nan=False, description="frames per second of the feed")
    size: int = Field(256, ge=32, le=2048, description="frame side, pixels (square frames)")
    anomaly_every_s: float = Field(20.0, ge=0, le=86_400, allow_inf_nan=False,
                                   description="a vehicle crosses every this many seconds; 0: never")
    start: int = Field(0, ge=0, le=10**9, description="first frame index")
    loop_s: float | None = Field(None, gt=0, le=86_400, allow_inf_nan=False, description="replay the first loop_s seconds")

    @classmethod
    def from_url(cls, url: str) -> "DemoParams":
        """The parameters of a demo URL (the last value of a repeated one); ValueError naming each bad parameter."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}
        try:
            return cls.model_validate(query)
        except ValidationError as exc:
            bad = []
            for e in exc.errors():
                name = ".".join(str(p) for p in e["loc"])
                bad.append(f"unknown demo parameter {name!r}" if e["type"] == "extra_forbidden" else
                           f"bad demo parameter {name}={e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}")
            raise ValueError(f"{'; '.join(bad)} (allowed: {', '.join(cls.model_fields)})") from None

    @field_validator("anomaly_every_s")
    @classmethod
    def _crossings_fit(cls, v: float) -> float:
        if 0 < v <= DEMO_CROSSING_S:
            raise ValueError(f"must be 0 (none) or more than a crossing ({DEMO_CROSSING_S} s)")
        return v


def check_source_url(url: str) -> str:
    """`url` stripped when it is a usable camera source, else ValueError saying what is wrong with it."""
    url = no_control_chars(url.strip())
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter)
        return url
    if scheme not in URL_SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r}; use one of {', '.join(URL_SCHEMES)} or a file path")
    if scheme in ("rtsp", "rtsps"):
        if not parts.hostname:
            raise ValueError("RTSP URL has no host")
        if port == 0:
            raise ValueError("RTSP URL port must be 1-65535, got 0")
    if scheme == "file" and not parts.path:
        raise ValueError("file URL has no path")
    if scheme == "demo":
        if not (parts.netloc or parts.path.strip("/")):
            raise ValueError("demo URL needs a name, e.g. demo://street?seed=0")
        DemoParams.from_url(url)
    return url
