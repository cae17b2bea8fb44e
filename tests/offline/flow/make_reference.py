"""Regenerate tests/offline/flow/flow_ref.npz: 3 real 256x256 pairs (uint8) and OpenCV's DualTVL1 flow (float16).

Run on a CPU machine with opencv-contrib: `python -m tests.offline.flow.make_reference`. The GPU machine has no
cv2.optflow, so flow/test_gpu.py compares against these stored references.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.conftest import shared_data_root

OUT = Path(__file__).parent / "flow_ref.npz"
PICKS = (1, 5, 16)  # Ped2 test 01 (bike), Ped2 test 02, vtest


def main() -> None:
    from offline.flow.opencv_backend import OpenCVTVL1
    from tests.offline.flow.frames import real_pairs

    root = shared_data_root()
    i0, i1, names = real_pairs(root / "ped2", root / "vtest" / "vtest.avi")
    a = np.rint(i0[list(PICKS)]).astype(np.uint8)
    b = np.rint(i1[list(PICKS)]).astype(np.uint8)
    flow = OpenCVTVL1()(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, i0=a, i1=b, flow=flow.astype(np.float16), names=np.array([names[k] for k in PICKS]))
    print(f"{OUT}: {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
