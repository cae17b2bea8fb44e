"""Data-parallel training under torchrun: two gloo processes on CPU end with identical weights."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from offline.training.ddp import DistInfo
from offline.training.ae_loop import epoch_batches

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {repo!r})
    from safetensors.torch import save_file
    from offline.training import ddp
    from offline.training.ae_loop import train_autoencoder
    from tests.offline.training.synthetic import synthetic_data, tiny_config

    cfg = tiny_config({out!r}, train__max_steps=3, train__epochs=2, pa__spatial="gaussian", pa__p_spatial=0.5)
    result = train_autoencoder(cfg, progress=False, data=synthetic_data(clips=2, n_frames=40))
    rank = int(os.environ["RANK"])
    state = {{k: v.contiguous() for k, v in result.model.state_dict().items()}}
    save_file(state, os.path.join({out!r}, f"rank{{rank}}.safetensors"))
    print("rank", rank, "world", os.environ["WORLD_SIZE"], "steps", result.step, "losses", result.losses)
    ddp.cleanup()
    """
)


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(repo=str(REPO), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0 world 2 steps 3" in proc.stdout and "rank 1 world 2 steps 3" in proc.stdout
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # the weights moved away from the (shared) initialisation, so equality is not trivial
    torch.manual_seed(0)
    from offline.models.autoencoder import Autoencoder

    init = Autoencoder(3, (8, 8, 16)).state_dict()
    assert not torch.equal(init["encoder.0.weight"], r0["encoder.0.weight"])
    lines = [l for l in proc.stdout.splitlines() if l.startswith("rank")]
    assert lines[0].split("losses")[1] != lines[1].split("losses")[1]  # each rank saw its own half of the batch


def test_ranks_split_each_epoch_without_overlap():
    batches = [epoch_batches(10, 2, epoch=1, seed=0, info=DistInfo(rank=r, world_size=2)) for r in (0, 1)]
    seen = [i for b in batches for batch in b for i in batch]
    assert sorted(seen) == list(range(10)) and len(batches[0]) == len(batches[1]) == 3
    assert epoch_batches(10, 2, 1, 0, DistInfo()) != epoch_batches(10, 2, 2, 0, DistInfo())  # reshuffled per epoch
