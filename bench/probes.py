"""Hostile and clumsy requests against the real service, tallied by route (recorded in bench/RESULTS.md).

    .venv/bin/python -m bench.probes [--json out.json]     # from the repository root; about a minute

Runs tests/faults/probes.py's table (every protected route without a token, with a wrong one and a forged
cookie; bad input with the token) and the chunked 2 MB body (with and without the token) against the app the
fault suite probes (one local Ray, Serve proxy on 127.0.0.1), and prints requests tried and answered right per
route. Exit status 1 when any was answered wrong (those are listed).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from tests.faults import probes
from tests.faults.tools.watch import API_TOKEN


def run() -> tuple[dict[str, list[int]], list[str]]:
    """{route: [tried, right]} and a line per wrong answer."""
    from ray import serve

    svc, port = probes.start_service()
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong = []
    try:
        for p in probes.PROBES:
            ok, got = probes.answer(svc, p)
            tally[p.route][0] += 1
            tally[p.route][1] += ok
            if not ok:
                wrong.append(f"{p.id}: want {p.status}, got {got}")
        body = b'{"label": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        for token, want in ((None, 401), (API_TOKEN, 413)):
            got, took = probes.raw_post(port, probes.PREFIX + "/events/31/label", body, token=token)
            ok = got == want and took < 1.0
            route = "POST /events/{id}/label, chunked 2 MB"
            tally[route][0] += 1
            tally[route][1] += ok
            if not ok:
                wrong.append(f"chunked 2 MB, token {token is not None}: want {want} within 1 s, got {got} in {took:.2f}s")
    finally:
        serve.delete(probes.APP)
    return dict(tally), wrong


def markdown(tally: dict[str, list[int]]) -> str:
    lines = ["| route | requests tried | answered right |", "|---|---|---|"]
    for route, (tried, right) in sorted(tally.items()):
        lines.append(f"| `{route}` | {tried} | {right} |")
    tried, right = (sum(v[i] for v in tally.values()) for i in (0, 1))
    lines.append(f"| **all** | **{tried}** | **{right}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the tally and the wrong answers as JSON")
    args = parser.parse_args(argv)
    tally, wrong = run()
    print(markdown(tally))
    for line in wrong:
        print("WRONG", line)
    if args.json:
        args.json.write_text(json.dumps({"tally": tally, "wrong": wrong}, indent=2))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
