"""ClipFeatureExtractor on a tiny random CLIP vision model saved with save_pretrained and loaded back from disk."""
from __future__ import annotations

import json

import pytest
import torch

from offline.models.clip_features import CLIP_MEAN, CLIP_STD, ClipFeatureExtractor


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=512)
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPVisionModelWithProjection(cfg).eval().save_pretrained(path)
    return path


def test_features_shape_and_match_the_model(tiny_clip):
    from transformers import CLIPVisionModelWithProjection

    ext = ClipFeatureExtractor(tiny_clip, batch_size=3)
    frames = torch.rand(5, 3, 32, 32) * 2 - 1
    feats = ext(frames)
    assert feats.shape == (5, 512) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    ref = CLIPVisionModelWithProjection.from_pretrained(str(tiny_clip)).eval()
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref(pixel_values=((frames + 1) / 2 - mean) / std).image_embeds
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    # different frames, different features; any input size is resized to the tower's
    assert not torch.allclose(feats[0], feats[1])
    assert ext(torch.zeros(2, 3, 64, 48)).shape == (2, 512)


def test_processor_statistics_are_read_from_the_directory(tiny_clip, tmp_path):
    import shutil

    local = tmp_path / "clip"
    shutil.copytree(tiny_clip, local)
    (local / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    ext = ClipFeatureExtractor(local)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ext.preprocess(x), x, rtol=1e-5, atol=1e-5)  # mean/std 0.5 maps [0,1] back to [-1,1]


def test_missing_directory_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.clip_model_path"):
        ClipFeatureExtractor(tmp_path / "nowhere")
