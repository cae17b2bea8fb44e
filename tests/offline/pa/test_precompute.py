"""`vad make-pas` (resumable, seeded cache) and `vad pa-gallery` on real Ped2 frames."""
from __future__ import annotations

import numpy as np
import pytest

from offline.cli import main
from offline.pa.precompute import PACache


def _config(tmp_path, ped2, cache):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data:\n  root: {ped2}\n  size: 128\npa:\n  cache_dir: {cache}\n  seed: 3\n")
    return cfg


def test_make_pas_is_resumable_and_seeded(tmp_path, ped2, capsys):
    cache = tmp_path / "pas"
    cfg = _config(tmp_path, ped2, cache)
    args = ["make-pas", "--config", str(cfg), "--clips", "01", "--max-frames", "40"]
    assert main(args) == 0
    pas, masks = PACache(cache).load("01")
    assert pas.shape == (40, 128, 128, 3) and pas.dtype == np.uint8 and masks.shape == (40, 128, 128)
    assert masks.reshape(40, -1).any(axis=1).all()
    # outside the masks the PA equals the decoded frame
    from offline.data.readers import open_dataset, read_frames

    clip = next(c for c in open_dataset(ped2).train if c.id == "01")
    frames = np.stack(list(read_frames(clip, 128)))[:40]
    assert np.array_equal(pas[~masks], frames[~masks])
    assert not np.array_equal(pas[masks], frames[masks])
    # resume: delete one chunk; only it is recomputed, identically
    chunk = cache / "01" / "000016.npz"
    before = np.load(chunk)["pa"]
    chunk.unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "16 frames computed, 24 already cached" in capsys.readouterr().out
    assert np.array_equal(np.load(chunk)["pa"], before)
    # other settings into the same cache are refused, naming the setting
    cfg.write_text(cfg.read_text().replace("seed: 3", "seed: 4"))
    assert main(args) == 2
    assert "seed: cached 3, now 4" in capsys.readouterr().out


def test_cache_load_names_missing_clip(tmp_path):
    with pytest.raises(FileNotFoundError, match="clip '07'"):
        PACache(tmp_path).load("07")


def test_pa_gallery_writes_a_png_grid(tmp_path, ped2):
    import cv2

    out = tmp_path / "gallery.png"
    cfg = _config(tmp_path, ped2, tmp_path / "pas")
    assert main(["pa-gallery", "--config", str(cfg), "--out", str(out), "--clip", "02", "--frame", "30"]) == 0
    image = cv2.imread(str(out))
    assert image.shape == (6 * 128, 5 * 128, 3)  # 6 PA types x (frame, mask, spatial PA, flow, temporal PA)
    cells = image.reshape(6, 128, 5, 128, 3)
    assert all(not np.array_equal(cells[r, 20:, 0], cells[r, 20:, 2]) for r in (0, 1, 2, 4))  # PA differs from frame
