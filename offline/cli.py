"""The `vad` command: a thin dispatcher; each sub-command lives in the module that does the work.

Sub-command modules are imported lazily so `vad check-config` does not pay for torch, Ray or diffusers.
Each module named here exposes `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("streaming.check_config", "validate a YAML config file and print the first error per field"),
    "eval": ("offline.evaluate", "evaluate a model bundle (or the frame-difference reference) on a labelled dataset"),
    "flow": ("offline.flow.cli", "write a flow visualisation (PNG grid or MP4) for a clip"),
    "flow-cache": ("offline.flow.cache", "compute and cache TV-L1 flow for every frame pair of a dataset"),
    "make-pas": ("offline.pa.precompute", "pre-compute spatial pseudo-anomalies for a training set"),
    "pa-gallery": ("offline.pa.gallery", "write a PNG grid of every pseudo-anomaly type on real frames"),
    "convert-ldm": ("offline.pa.convert_ldm", "convert a CompVis LDM inpainting .ckpt to a local diffusers directory"),
    "train": ("offline.training.cli", "train the spatial or temporal autoencoder (or the discriminator)"),
    "export": ("offline.training.export", "write the model bundle the streaming service loads"),
    "learn": ("streaming.learn_cli", "learn a scene from its normal footage: train, export with calibration, measure on unseen footage"),
    "demo-bundle": ("streaming.demo_bundle", "build the demo feed and demo model bundle used by the embedded default"),
    "record": ("streaming.record_cli", "record a camera's normal footage into segments that vad train --data reads"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the selected sub-command's module is imported (the others stay cheap)."""
    parser = argparse.ArgumentParser(prog="vad", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `vad ARGS` (default: sys.argv); returns the exit status of the sub-command."""
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
