"""The 3D-convolutional autoencoder of METHOD.md, used for both the spatial (RGB) and the temporal (flow) AE.

Four strided Conv3d down, four ConvTranspose3d up (MemAE's decoder, which the paper adapts), so that a
(B, C, 16, 256, 256) window comes back with the same shape, values in [-1, 1] (Tanh). 5.99 M parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from offline.models.sspcab import SSPCAB


def _down(cin: int, cout: int, stride: tuple[int, int, int]) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, stride, 1), nn.BatchNorm3d(cout), nn.LeakyReLU(0.2, inplace=True)]


def _up(cin: int, cout: int, stride: tuple[int, int, int], out_pad: tuple[int, int, int]) -> list[nn.Module]:
    return [
        nn.ConvTranspose3d(cin, cout, 3, stride, 1, output_padding=out_pad),
        nn.BatchNorm3d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    ]


class Autoencoder(nn.Module):
    """Reconstructs a window; with `sspcab=True` an SSPCAB block sits before the last (output) layer.

    Args:
        in_channels: 3 for RGB frames and for encoded flow (u, v, magnitude).
        channels: encoder widths; the paper's (96, 128, 256).
        sspcab: insert the self-supervised predictive block near the output (Ristea et al.).
    """

    def __init__(self, in_channels: int = 3, channels: tuple[int, int, int] = (96, 128, 256), sspcab: bool = False):
        super().__init__()
        c1, c2, c3 = channels
        s1, s2 = (1, 2, 2), (2, 2, 2)
        self.encoder = nn.Sequential(
            *_down(in_channels, c1, s1),
            *_down(c1, c2, s2),
            *_down(c2, c3, s2),
            nn.Conv3d(c3, c3, 3, s2, 1),
        )
        self.decoder = nn.Sequential(
            nn.BatchNorm3d(c3),
            nn.LeakyReLU(0.2, inplace=True),
            *_up(c3, c3, s2, (1, 1, 1)),
            *_up(c3, c2, s2, (1, 1, 1)),
            *_up(c2, c1, s2, (1, 1, 1)),
        )
        self.sspcab = SSPCAB(c1) if sspcab else None
        self.head = nn.Sequential(nn.ConvTranspose3d(c1, in_channels, 3, s1, 1, output_padding=(0, 1, 1)), nn.Tanh())
        self._aux: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> reconstruction of the same shape; T % 8 == 0, H and W % 16 == 0."""
        return self.encode_decode(x)[1]

    def encode_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) -> (latent (B, c3, T/8, H/16, W/16), reconstruction as `forward` gives it).

        One encoder pass for both: the detector reads the spatial AE's error (w1) and its latent (the
        discriminator's features, offline/models/encoder_features.py) from the same call.
        """
        if x.dim() != 5:
            raise ValueError(f"Autoencoder expects (B, C, T, H, W), got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if t % 8 or h % 16 or w % 16:
            raise ValueError(f"Autoencoder needs T % 8 == 0 and H, W % 16 == 0, got T={t}, H={h}, W={w}")
        latent = self.encoder(x)
        z = self.decoder(latent)
        if self.sspcab is not None:
            out = self.sspcab(z)
            self._aux = torch.mean((out - z) ** 2)
            z = out
        return latent, self.head(z)

    def aux_loss(self) -> torch.Tensor:
        """SSPCAB's own MSE term from the last forward (0 without SSPCAB); add it times its weight to the loss."""
        if self._aux is None:
            return torch.zeros((), device=next(self.parameters()).device)
        return self._aux


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (model size in logs and tests)."""
    return sum(p.numel() for p in model.parameters())
