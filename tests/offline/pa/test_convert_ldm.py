"""The CompVis .ckpt -> diffusers converter, on a tiny state dict built with the CompVis key layout."""
from __future__ import annotations

import math

import pytest
import torch

from offline.pa.convert_ldm import ConversionError, convert_checkpoint, convert_state_dict
from offline.pa.inpaint import LDMInpainter, build_ldm

HEADS = 2


def _resblock(sd, name, cin, cout, emb, down_up=False):
    """openaimodel ResBlock (use_scale_shift_norm=False)."""
    sd[f"{name}.in_layers.0.weight"], sd[f"{name}.in_layers.0.bias"] = torch.randn(cin), torch.randn(cin)
    sd[f"{name}.in_layers.2.weight"], sd[f"{name}.in_layers.2.bias"] = torch.randn(cout, cin, 3, 3), torch.randn(cout)
    sd[f"{name}.emb_layers.1.weight"], sd[f"{name}.emb_layers.1.bias"] = torch.randn(cout, emb), torch.randn(cout)
    sd[f"{name}.out_layers.0.weight"], sd[f"{name}.out_layers.0.bias"] = torch.randn(cout), torch.randn(cout)
    sd[f"{name}.out_layers.3.weight"], sd[f"{name}.out_layers.3.bias"] = torch.randn(cout, cout, 3, 3), torch.randn(cout)
    if cin != cout:
        sd[f"{name}.skip_connection.weight"] = torch.randn(cout, cin, 1, 1)
        sd[f"{name}.skip_connection.bias"] = torch.randn(cout)


def _attnblock(sd, name, c):
    """openaimodel AttentionBlock: norm, qkv Conv1d(c, 3c, 1), proj_out Conv1d(c, c, 1)."""
    sd[f"{name}.norm.weight"], sd[f"{name}.norm.bias"] = torch.randn(c), torch.randn(c)
    sd[f"{name}.qkv.weight"], sd[f"{name}.qkv.bias"] = torch.randn(3 * c, c, 1) / math.sqrt(c), torch.randn(3 * c)
    sd[f"{name}.proj_out.weight"], sd[f"{name}.proj_out.bias"] = torch.randn(c, c, 1) / math.sqrt(c), torch.randn(c)


def compvis_unet_sd(mc=32, mult=(1, 2), nrb=1, attention_resolutions=(2,), in_ch=7, out_ch=3):
    """Keys and shapes of ldm.modules.diffusionmodules.openaimodel.UNetModel with resblock_updown=True."""
    sd, emb = {}, 4 * mc
    sd["time_embed.0.weight"], sd["time_embed.0.bias"] = torch.randn(emb, mc), torch.randn(emb)
    sd["time_embed.2.weight"], sd["time_embed.2.bias"] = torch.randn(emb, emb), torch.randn(emb)
    sd["input_blocks.0.0.weight"], sd["input_blocks.0.0.bias"] = torch.randn(mc, in_ch, 3, 3), torch.randn(mc)
    chans, ch, ds, k = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            _resblock(sd, f"input_blocks.{k}.0", ch, m * mc, emb)
            ch = m * mc
            if ds in attention_resolutions:
                _attnblock(sd, f"input_blocks.{k}.1", ch)
            chans.append(ch)
            k += 1
        if level != len(mult) - 1:
            _resblock(sd, f"input_blocks.{k}.0", ch, ch, emb, down_up=True)
            chans.append(ch)
            ds *= 2
            k += 1
    _resblock(sd, "middle_block.0", ch, ch, emb)
    _attnblock(sd, "middle_block.1", ch)
    _resblock(sd, "middle_block.2", ch, ch, emb)
    k = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            _resblock(sd, f"output_blocks.{k}.0", ch + chans.pop(), m * mc, emb)
            ch, sub = m * mc, 1
            if ds in attention_resolutions:
                _attnblock(sd, f"output_blocks.{k}.1", ch)
                sub = 2
            if level and i == nrb:
                _resblock(sd, f"output_blocks.{k}.{sub}", ch, ch, emb, down_up=True)
                ds //= 2
            k += 1
    sd["out.0.weight"], sd["out.0.bias"] = torch.randn(mc), torch.randn(mc)
    sd["out.2.weight"], sd["out.2.bias"] = torch.randn(out_ch, mc, 3, 3), torch.randn(out_ch)
    return sd


def _vq_resblock(sd, name, cin, cout):
    for norm, c in (("norm1", cin), ("norm2", cout)):
        sd[f"{name}.{norm}.weight"], sd[f"{name}.{norm}.bias"] = torch.randn(c), torch.randn(c)
    sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"] = torch.randn(cout, cin, 3, 3), torch.randn(cout)
    sd[f"{name}.conv2.weight"], sd[f"{name}.conv2.bias"] = torch.randn(cout, cout, 3, 3), torch.randn(cout)
    if cin != cout:
        sd[f"{name}.nin_shortcut.weight"], sd[f"{name}.nin_shortcut.bias"] = torch.randn(cout, cin, 1, 1), torch.randn(cout)


def compvis_vq_sd(ch=32, mult=(1, 2), nrb=1, z=3, embed=3, n_embed=16, mid_attn=True):
    """Keys and shapes of taming's VQModel (ldm.models.autoencoder.VQModelInterface), no level attention."""
    sd = {}
    sd["encoder.conv_in.weight"], sd["encoder.conv_in.bias"] = torch.randn(ch, 3, 3, 3), torch.randn(ch)
    cin = ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            _vq_resblock(sd, f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        if i != len(mult) - 1:
            sd[f"encoder.down.{i}.downsample.conv.weight"] = torch.randn(cin, cin, 3, 3)
            sd[f"encoder.down.{i}.downsample.conv.bias"] = torch.randn(cin)
    top = ch * mult[-1]
    for part in ("encoder", "decoder"):
        _vq_resblock(sd, f"{part}.mid.block_1", top, top)
        _vq_resblock(sd, f"{part}.mid.block_2", top, top)
        if mid_attn:
            sd[f"{part}.mid.attn_1.norm.weight"], sd[f"{part}.mid.attn_1.norm.bias"] = torch.randn(top), torch.randn(top)
            for a in ("q", "k", "v", "proj_out"):
                sd[f"{part}.mid.attn_1.{a}.weight"] = torch.randn(top, top, 1, 1)
                sd[f"{part}.mid.attn_1.{a}.bias"] = torch.randn(top)
    sd["encoder.norm_out.weight"], sd["encoder.norm_out.bias"] = torch.randn(top), torch.randn(top)
    sd["encoder.conv_out.weight"], sd["encoder.conv_out.bias"] = torch.randn(z, top, 3, 3), torch.randn(z)
    sd["quant_conv.weight"], sd["quant_conv.bias"] = torch.randn(embed, z, 1, 1), torch.randn(embed)
    sd["quantize.embedding.weight"] = torch.randn(n_embed, embed)
    sd["post_quant_conv.weight"], sd["post_quant_conv.bias"] = torch.randn(z, embed, 1, 1), torch.randn(z)
    sd["decoder.conv_in.weight"], sd["decoder.conv_in.bias"] = torch.randn(top, z, 3, 3), torch.randn(top)
    cin = top
    for i in reversed(range(len(mult))):
        for j in range(nrb + 1):
            _vq_resblock(sd, f"decoder.up.{i}.block.{j}", cin, ch * mult[i])
            cin = ch * mult[i]
        if i != 0:
            sd[f"decoder.up.{i}.upsample.conv.weight"] = torch.randn(cin, cin, 3, 3)
            sd[f"decoder.up.{i}.upsample.conv.bias"] = torch.randn(cin)
    sd["decoder.norm_out.weight"], sd["decoder.norm_out.bias"] = torch.randn(ch), torch.randn(ch)
    sd["decoder.conv_out.weight"], sd["decoder.conv_out.bias"] = torch.randn(3, ch, 3, 3), torch.randn(3)
    return sd


def tiny_ckpt_sd(mult=(1, 2), nrb=1) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sd = {f"model.diffusion_model.{k}": v for k, v in compvis_unet_sd(mult=mult, nrb=nrb).items()}
    sd.update({f"first_stage_model.{k}": v for k, v in compvis_vq_sd().items()})
    sqrt_betas = torch.linspace(0.0015**0.5, 0.0205**0.5, 1000, dtype=torch.float64)
    sd["betas"] = sqrt_betas**2
    sd["alphas_cumprod"] = torch.cumprod(1 - sd["betas"], 0)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    return sd


@pytest.mark.parametrize("mult,nrb", [((1, 2), 1), ((1, 2, 2), 2)])
def test_converter_maps_every_key_and_loads_strictly(mult, nrb):
    sd = tiny_ckpt_sd(mult, nrb)
    conv = convert_state_dict(sd, num_heads=HEADS)
    model_keys = [k for k in sd if k.startswith(("model.diffusion_model.", "first_stage_model."))]
    assert sorted(conv.mapped) == sorted(model_keys)
    assert sorted(conv.skipped) == ["alphas_cumprod", "betas", "model_ema.decay"]
    assert conv.unet_config["block_out_channels"] == tuple(32 * m for m in mult)
    assert conv.unet_config["layers_per_block"] == nrb
    unet, vqvae, _ = build_ldm(conv.unet_config, conv.vq_config, conv.scheduler_config)
    unet.load_state_dict(conv.unet, strict=True)  # every diffusers tensor filled, shapes agree
    vqvae.load_state_dict(conv.vqvae, strict=True)
    assert torch.equal(unet.conv_in.weight, sd["model.diffusion_model.input_blocks.0.0.weight"])
    assert torch.equal(vqvae.quantize.embedding.weight, sd["first_stage_model.quantize.embedding.weight"])


def test_converted_attention_matches_compvis_legacy_attention():
    """The per-head qkv split reproduces openaimodel's QKVAttentionLegacy numerically."""
    sd = tiny_ckpt_sd()
    conv = convert_state_dict(sd, num_heads=HEADS)
    unet, _, _ = build_ldm(conv.unet_config, conv.vq_config, num_heads=HEADS)
    unet.load_state_dict(conv.unet, strict=True)
    p = {k.removeprefix("model.diffusion_model.middle_block.1."): v for k, v in sd.items()
         if k.startswith("model.diffusion_model.middle_block.1.")}
    x = torch.randn(2, 64, 4, 4)
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    normed = torch.nn.functional.group_norm(flat, 32, p["norm.weight"], p["norm.bias"])
    qkv = torch.nn.functional.conv1d(normed, p["qkv.weight"], p["qkv.bias"])
    ch = c // HEADS
    q, k, v = qkv.reshape(b * HEADS, 3 * ch, h * w).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
    expected = (flat + torch.nn.functional.conv1d(a, p["proj_out.weight"], p["proj_out.bias"])).reshape(b, c, h, w)
    with torch.no_grad():
        got = unet.mid_block.attentions[0](x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_convert_checkpoint_writes_a_loadable_directory(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": tiny_ckpt_sd()}, ckpt)
    convert_checkpoint(ckpt, tmp_path / "ldm", num_heads=HEADS)
    inp = LDMInpainter.from_pretrained(tmp_path / "ldm", steps=2)
    assert inp.num_heads == HEADS
    sched = inp.scheduler.config
    assert sched.trained_betas is not None and len(sched.trained_betas) == 1000
    x = torch.zeros(1, 3, 16, 16)
    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[:, 4:12, 4:12] = True
    y = inp(x, m)
    assert torch.equal(y[:, :, ~m[0]], x[:, :, ~m[0]])


def test_converter_names_what_is_missing():
    sd = tiny_ckpt_sd()
    with pytest.raises(ConversionError, match="first_stage_model"):
        convert_state_dict({k: v for k, v in sd.items() if not k.startswith("first_stage_model.")})
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(ConversionError, match="out.2.weight"):
        convert_state_dict(sd)
