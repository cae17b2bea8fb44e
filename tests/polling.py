"""The tests' one polling helper (bench/faults.py uses it too): wait for a condition instead of sleeping."""
from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str = "condition",
    every_s: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
):
    """Poll `predicate` until it returns something truthy (returned) or fail naming `what` after `timeout_s`.

    Args:
        every_s: pause between polls.
        retry_on: exception types that mean "not yet" (a service still starting); others propagate at once.
        detail: called on timeout for more context (e.g. log tails) to append to the failure message.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}; last: {last!r}{extra}")
        time.sleep(every_s)
