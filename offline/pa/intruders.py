"""Intruder images for the LNTRA patch PA: a configured image folder, or generated textures (never downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from offline.pa.baselines import generated_intruders
from offline.data.decode import resize
from offline.data.pixels import to_model_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_intruders(folder: Path | None, size: int = 128, count: int = 64, seed: int = 0) -> torch.Tensor:
    """(K, 3, size, size) in [-1, 1] from every image in `folder` (`pa.intruder_dir`), or `count` generated ones."""
    if folder is None:
        return generated_intruders(count, size, np.random.default_rng(seed))
    import cv2  # adapter dependency, imported lazily

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pa.intruder_dir {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"pa.intruder_dir {folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    images = []
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"pa.intruder_dir: {path} is not a readable image")
        rgb = cv2.cvtColor(resize(bgr, size), cv2.COLOR_BGR2RGB)
        images.append(to_model_range(rgb))  # (3, size, size)
    return torch.stack(images)
