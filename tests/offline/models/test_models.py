"""The models of METHOD.md: shapes, layer lists, SSPCAB loss, discriminator and noise generator."""
import pytest
import torch
from torch import nn

from offline.models.autoencoder import Autoencoder, parameter_count
from offline.models.discriminator import Discriminator
from offline.models.noise_generator import NoiseGenerator
from offline.models.sspcab import SSPCAB

N_PARAMS = parameter_count(Autoencoder())


@pytest.mark.parametrize("channels", [3])
def test_autoencoder_full_size_shape(channels, request):
    """(1, 3, 16, 256, 256) in -> same shape out, in [-1, 1]; METHOD.md's 5.99 M parameters."""
    torch.manual_seed(0)
    model = Autoencoder(channels).eval()
    x = torch.rand(1, channels, 16, 256, 256) * 2 - 1
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    print(f"autoencoder parameters: {N_PARAMS} ({N_PARAMS / 1e6:.2f} M)")
    assert 5.98e6 < N_PARAMS < 6.0e6, f"parameter count {N_PARAMS} differs from METHOD.md's 5.99 M"


def test_autoencoder_layer_list():
    m = Autoencoder()
    convs = [l for l in m.encoder if isinstance(l, nn.Conv3d)]
    deconvs = [l for l in list(m.decoder) + list(m.head) if isinstance(l, nn.ConvTranspose3d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 96, (1, 2, 2)), (96, 128, (2, 2, 2)), (128, 256, (2, 2, 2)), (256, 256, (2, 2, 2))
    ]
    assert [(c.in_channels, c.out_channels, c.stride, c.output_padding) for c in deconvs] == [
        (256, 256, (2, 2, 2), (1, 1, 1)), (256, 128, (2, 2, 2), (1, 1, 1)),
        (128, 96, (2, 2, 2), (1, 1, 1)), (96, 3, (1, 2, 2), (0, 1, 1)),
    ]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (1, 1, 1) for c in convs + deconvs)
    assert sum(isinstance(l, nn.BatchNorm3d) for l in m.modules()) == 7
    assert isinstance(m.head[-1], nn.Tanh)


def test_autoencoder_rejects_bad_shapes():
    with pytest.raises(ValueError, match="T % 8"):
        Autoencoder()(torch.zeros(1, 3, 10, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        Autoencoder()(torch.zeros(3, 16, 64, 64))


def test_sspcab_loss_nonzero_and_differentiable():
    torch.manual_seed(0)
    m = Autoencoder(sspcab=True)
    x = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    y = m(x)
    aux = m.aux_loss()
    assert aux.item() > 0
    loss = torch.mean((y - x) ** 2) + 0.1 * aux
    loss.backward()
    grads = [p.grad for p in m.sspcab.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert Autoencoder().aux_loss().item() == 0.0


def test_sspcab_hides_the_centre():
    """The masked centre does not influence the output at the same position (only the 4 corners do)."""
    torch.manual_seed(0)
    block = SSPCAB(4)
    x = torch.zeros(1, 4, 1, 9, 9, requires_grad=True)
    out = block.corners[0](torch.nn.functional.pad(x, (2, 2, 2, 2))[..., :-4, :-4])
    pre = sum(c(torch.nn.functional.pad(x, (2, 2, 2, 2))[..., a, b]) for c, (a, b) in zip(
        block.corners, [(slice(None, -4), slice(None, -4)), (slice(None, -4), slice(4, None)),
                        (slice(4, None), slice(None, -4)), (slice(4, None), slice(4, None))]))
    pre[0, :, 0, 4, 4].sum().backward()
    g = x.grad[0, 0, 0]
    assert g[4, 4] == 0 and g[2, 2] != 0 and g[6, 6] != 0 and g[2, 6] != 0 and g[6, 2] != 0
    assert out.shape == x.shape


def test_discriminator_and_noise_generator():
    d = Discriminator()
    assert [l.__class__.__name__ for l in d.net] == ["Linear", "ReLU", "Linear"]
    assert d(torch.randn(5, 512)).shape == (5, 1)
    g = NoiseGenerator()
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    n = g(x)
    assert n.shape == x.shape and n.abs().max() <= 2.0
    convs = [l for l in g.net if isinstance(l, (nn.Conv3d, nn.ConvTranspose3d))]
    assert [c.out_channels for c in convs] == [96, 128, 256, 128, 96, 3]
