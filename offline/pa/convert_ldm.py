"""`vad convert-ldm`: a CompVis latent-diffusion inpainting `.ckpt` -> the local diffusers directory `pa.ldm_path`.

The checkpoint's state dict holds the openaimodel UNet under `model.diffusion_model.` and the taming VQ
autoencoder under `first_stage_model.`; the architecture (widths, levels, residual blocks, attention levels,
resblock up/down sampling, codebook size) is read from the tensor shapes. Schedule buffers (`betas` is used for
the scheduler), EMA copies and anything else outside the two prefixes are reported and skipped; a key under them
that does not map is an error. Attention qkv tensors use openaimodel's legacy per-head order.
"""
from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VQ_PREFIX = "first_stage_model."

_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_VQ_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}


class ConversionError(ValueError):
    """A checkpoint that does not have the CompVis inpainting layout; the message names the key."""


@dataclass
class Conversion:
    """The converted weights and configs, and the bookkeeping the test checks (every source key accounted for)."""

    unet: dict[str, torch.Tensor] = field(default_factory=dict)
    vqvae: dict[str, torch.Tensor] = field(default_factory=dict)
    unet_config: dict = field(default_factory=dict)
    vq_config: dict = field(default_factory=dict)
    scheduler_config: dict = field(default_factory=dict)
    mapped: dict[str, list[str]] = field(default_factory=dict)  # source key -> target key(s)
    skipped: list[str] = field(default_factory=list)  # source keys outside the UNet and VQ prefixes


class _Source:
    """A state dict whose keys are popped as they are mapped, so leftovers can be reported."""

    def __init__(self, sd: dict[str, torch.Tensor], prefix: str, out: dict[str, torch.Tensor], mapped: dict):
        self.sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        self.prefix, self.out, self.mapped = prefix, out, mapped

    def has(self, key: str) -> bool:
        return key in self.sd

    def prefixed(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.sd)

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.sd:
            raise ConversionError(f"checkpoint has no key {self.prefix}{key}")
        return tuple(self.sd[key].shape)

    def indices(self, pattern: str) -> list[int]:
        rx = re.compile(pattern)
        return sorted({int(m.group(1)) for k in self.sd if (m := rx.match(k))})

    def take(self, src: str, dst: str, fn=None) -> None:
        """Move every tensor under `src.` (weight, bias, ...) to `dst.`, applying `fn` to the tensor."""
        keys = [k for k in self.sd if k.startswith(src + ".")]
        if not keys:
            raise ConversionError(f"checkpoint has no keys under {self.prefix}{src}")
        for k in keys:
            t = self.sd.pop(k)
            target = dst + k[len(src):]
            self.out[target] = fn(t) if fn else t
            self.mapped[self.prefix + k] = [target]

    def take_qkv(self, src: str, dst: str, heads: int) -> None:
        """openaimodel legacy fused qkv (3C, C, 1), per head [q; k; v] -> separate to_q/to_k/to_v Linear."""
        for kind in ("weight", "bias"):
            key = f"{src}.qkv.{kind}"
            t = self.sd.pop(key) if key in self.sd else None
            if t is None:
                raise ConversionError(f"checkpoint has no key {self.prefix}{key}")
            c = t.shape[0] // 3
            if c % heads:
                raise ConversionError(f"{self.prefix}{key}: {c} channels are not divisible by num_heads={heads}")
            parts = t.reshape(heads, 3, c // heads, *t.shape[1:])
            names = []
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                part = parts[:, i].reshape(c, *t.shape[1:])
                names.append(f"{dst}.{name}.{kind}")
                self.out[names[-1]] = part[..., 0] if part.ndim == 3 else part
            self.mapped[self.prefix + key] = names
        self.take(f"{src}.norm", f"{dst}.group_norm")
        self.take(f"{src}.proj_out", f"{dst}.to_out.0", _squeeze)

    def left(self) -> list[str]:
        return [self.prefix + k for k in self.sd]


def _squeeze(t: torch.Tensor) -> torch.Tensor:
    """1x1 conv weight (C, C, 1[, 1]) -> Linear weight (C, C); biases unchanged."""
    return t.reshape(t.shape[0], t.shape[1]) if t.ndim > 2 else t


def _convert_unet(src: _Source, heads: int) -> dict:
    from offline.pa.inpaint import compvis_unet_config

    mc, in_ch = src.shape("input_blocks.0.0.weight")[:2]
    out_ch = src.shape("out.2.weight")[0]
    n_in = len(src.indices(r"input_blocks\.(\d+)\.")) - 1
    n_out = len(src.indices(r"output_blocks\.(\d+)\."))
    ups = [k for k in src.indices(r"output_blocks\.(\d+)\.")  # blocks that end a level carry an upsampler
           if src.prefixed(f"output_blocks.{k}.2.")
           or (src.prefixed(f"output_blocks.{k}.1.") and not src.has(f"output_blocks.{k}.1.qkv.weight"))]
    per_level = ups[0] + 1 if ups else n_out
    levels = n_out // per_level
    nrb = per_level - 1
    if n_out % per_level or n_in != levels * nrb + levels - 1:
        raise ConversionError(f"unexpected UNet block counts: {n_in} input, {n_out} output blocks")
    first = [1 + lvl * per_level for lvl in range(levels)]
    mult = [src.shape(f"input_blocks.{i}.0.out_layers.3.weight")[0] // mc for i in first]
    attn_levels = [lvl for lvl, i in enumerate(first) if src.has(f"input_blocks.{i}.1.qkv.weight")]
    updown = levels > 1 and not src.has(f"input_blocks.{per_level}.0.op.weight")
    scale_shift = src.shape("input_blocks.1.0.emb_layers.1.weight")[0] == 2 * mult[0] * mc
    cfg = compvis_unet_config(model_channels=mc, channel_mult=tuple(mult), num_res_blocks=nrb,
                              attention_levels=tuple(attn_levels), resblock_updown=updown, in_channels=in_ch,
                              out_channels=out_ch, head_dim=max(1, mc * mult[-1] // heads))
    if scale_shift:
        cfg["resnet_time_scale_shift"] = "scale_shift"

    def resnet(s: str, d: str) -> None:
        for a, b in _RESNET.items():
            if a == "skip_connection" and not src.has(f"{s}.skip_connection.weight"):
                continue
            src.take(f"{s}.{a}", f"{d}.{b}")

    src.take("time_embed.0", "time_embedding.linear_1")
    src.take("time_embed.2", "time_embedding.linear_2")
    src.take("input_blocks.0.0", "conv_in")
    for lvl in range(levels):
        for j in range(nrb):
            i = first[lvl] + j
            resnet(f"input_blocks.{i}.0", f"down_blocks.{lvl}.resnets.{j}")
            if lvl in attn_levels:
                src.take_qkv(f"input_blocks.{i}.1", f"down_blocks.{lvl}.attentions.{j}", heads)
        if lvl < levels - 1:
            i = first[lvl] + nrb
            if updown:
                resnet(f"input_blocks.{i}.0", f"down_blocks.{lvl}.downsamplers.0")
            else:
                src.take(f"input_blocks.{i}.0.op", f"down_blocks.{lvl}.downsamplers.0.conv")
    resnet("middle_block.0", "mid_block.resnets.0")
    src.take_qkv("middle_block.1", "mid_block.attentions.0", heads)
    resnet("middle_block.2", "mid_block.resnets.1")
    for up in range(levels):  # up block `up` is CompVis level levels-1-up
        lvl = levels - 1 - up
        for j in range(per_level):
            i = up * per_level + j
            resnet(f"output_blocks.{i}.0", f"up_blocks.{up}.resnets.{j}")
            nxt = 1
            if lvl in attn_levels:
                src.take_qkv(f"output_blocks.{i}.1", f"up_blocks.{up}.attentions.{j}", heads)
                nxt = 2
            if j == nrb and lvl > 0:
                if updown:
                    resnet(f"output_blocks.{i}.{nxt}", f"up_blocks.{up}.upsamplers.0")
                else:
                    src.take(f"output_blocks.{i}.{nxt}.conv", f"up_blocks.{up}.upsamplers.0.conv")
    src.take("out.0", "conv_norm_out")
    src.take("out.2", "conv_out")
    return cfg


def _convert_vq(src: _Source) -> dict:
    from offline.pa.inpaint import compvis_vq_config

    ch = src.shape("encoder.conv_in.weight")[0]
    levels = src.indices(r"encoder\.down\.(\d+)\.")
    nrb = len(src.indices(r"encoder\.down\.0\.block\.(\d+)\."))
    mult = [src.shape(f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in levels]
    if src.indices(r"encoder\.down\.\d+\.attn\.(\d+)\.") or src.indices(r"decoder\.up\.\d+\.attn\.(\d+)\."):
        raise ConversionError("VQ autoencoders with attention inside the resolution levels are not supported")
    mid_attn = src.has("encoder.mid.attn_1.q.weight")
    cfg = compvis_vq_config(ch=ch, ch_mult=tuple(mult), num_res_blocks=nrb,
                            z_channels=src.shape("encoder.conv_out.weight")[0],
                            embed_dim=src.shape("quant_conv.weight")[0],
                            n_embed=src.shape("quantize.embedding.weight")[0], mid_attention=mid_attn)
    n = len(levels)

    def resnet(s: str, d: str) -> None:
        for a, b in _VQ_RESNET.items():
            if a == "nin_shortcut" and not src.has(f"{s}.nin_shortcut.weight"):
                continue
            src.take(f"{s}.{a}", f"{d}.{b}")

    def mid(part: str) -> None:
        resnet(f"{part}.mid.block_1", f"{part}.mid_block.resnets.0")
        resnet(f"{part}.mid.block_2", f"{part}.mid_block.resnets.1")
        if mid_attn:
            src.take(f"{part}.mid.attn_1.norm", f"{part}.mid_block.attentions.0.group_norm")
            for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
                src.take(f"{part}.mid.attn_1.{a}", f"{part}.mid_block.attentions.0.{b}", _squeeze)

    src.take("encoder.conv_in", "encoder.conv_in")
    for i in levels:
        for j in range(nrb):
            resnet(f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}")
        if i < n - 1:
            src.take(f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv")
    mid("encoder")
    src.take("encoder.norm_out", "encoder.conv_norm_out")
    src.take("encoder.conv_out", "encoder.conv_out")
    src.take("quant_conv", "quant_conv")
    src.take("quantize.embedding", "quantize.embedding")
    src.take("post_quant_conv", "post_quant_conv")
    src.take("decoder.conv_in", "decoder.conv_in")
    mid("decoder")
    for i in levels:  # taming decoder level i is diffusers up block n-1-i
        for j in range(nrb + 1):
            resnet(f"decoder.up.{i}.block.{j}", f"decoder.up_blocks.{n - 1 - i}.resnets.{j}")
        if i > 0:
            src.take(f"decoder.up.{i}.upsample.conv", f"decoder.up_blocks.{n - 1 - i}.upsamplers.0.conv")
    src.take("decoder.norm_out", "decoder.conv_norm_out")
    src.take("decoder.conv_out", "decoder.conv_out")
    return cfg


def convert_state_dict(sd: dict[str, torch.Tensor], num_heads: int = 8) -> Conversion:
    """Map a CompVis LDM inpainting state dict to diffusers UNet2DModel and VQModel state dicts and configs."""
    from offline.pa.inpaint import compvis_scheduler_config

    conv = Conversion()
    unet_src = _Source(sd, UNET_PREFIX, conv.unet, conv.mapped)
    vq_src = _Source(sd, VQ_PREFIX, conv.vqvae, conv.mapped)
    if not unet_src.sd or not vq_src.sd:
        raise ConversionError(
            f"not a CompVis LDM checkpoint: expected keys under '{UNET_PREFIX}' and '{VQ_PREFIX}', "
            f"found {len(unet_src.sd)} and {len(vq_src.sd)}"
        )
    conv.unet_config = _convert_unet(unet_src, num_heads)
    conv.vq_config = _convert_vq(vq_src)
    left = unet_src.left() + vq_src.left()
    if left:
        raise ConversionError(f"{len(left)} checkpoint key(s) have no diffusers counterpart, e.g. {left[:5]}")
    betas = sd.get("betas")
    conv.scheduler_config = compvis_scheduler_config(betas.double().numpy() if betas is not None else None)
    conv.skipped = [k for k in sd if not k.startswith((UNET_PREFIX, VQ_PREFIX))]
    return conv


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a CompVis `.ckpt` (a dict with `state_dict`, or a bare state dict); weights_only."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ConversionError(f"{path}: expected a state dict (or a dict with 'state_dict'), got {type(ckpt).__name__}")
    return sd


def convert_checkpoint(ckpt: Path, out: Path, num_heads: int = 8) -> Conversion:
    """Convert and write `out/{unet,vqvae,scheduler}` + vad_ldm.json; models are loaded strictly before saving."""
    from offline.pa.inpaint import LDMInpainter, build_ldm

    conv = convert_state_dict(load_checkpoint(ckpt), num_heads)
    unet, vqvae, scheduler = build_ldm(conv.unet_config, conv.vq_config, conv.scheduler_config)
    for name, model, sd in (("unet", unet, conv.unet), ("vqvae", vqvae, conv.vqvae)):
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ConversionError(f"{ckpt}: converted {name} weights do not fit the inferred layout: {exc}") from None
    LDMInpainter(unet, vqvae, scheduler, num_heads=num_heads).save_pretrained(out)
    counts = Counter(k.split(".")[0] for k in conv.skipped)
    logger.info("%s -> %s: %d tensors mapped; skipped %s", ckpt, out, len(conv.mapped), dict(counts) or "nothing")
    return conv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad convert-ldm`'s arguments."""
    parser.add_argument("ckpt", type=Path, help="CompVis LDM inpainting checkpoint (.ckpt)")
    parser.add_argument("out", type=Path, help="diffusers directory to write (set pa.ldm_path to it)")
    parser.add_argument("--num-heads", type=int, default=8, help="attention heads of the UNet (inpainting_big: 8)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output directory")


def run(args: argparse.Namespace) -> int:
    """`vad convert-ldm`: convert a CompVis checkpoint into a local diffusers directory; exit status 2 on errors."""
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        print(f"{args.out}: exists and is not empty (use --force to overwrite)")
        return 2
    try:
        conv = convert_checkpoint(args.ckpt, args.out, args.num_heads)
    except (ConversionError, FileNotFoundError) as exc:
        print(exc)
        return 2
    print(f"wrote {args.out} ({len(conv.mapped)} tensors mapped, {len(conv.skipped)} skipped)")
    return 0
