"""The models of METHOD.md: shapes, layer lists, SSPCAB loss, discriminator and noise generator."""
import pytest
import torch
from torch import nn

from offline.models.autoencoder import Autoencoder, parameter_count
from offline.models.discriminator import Discriminator, build_discriminator
from offline.models.encoder_features import feature_dim, latent_features, slices_to_frames
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


@pytest.mark.parametrize("sspcab", [False, True])
def test_encode_decode_is_forward_plus_the_encoder_latent(sspcab):
    """One encoder pass gives w1's reconstruction (bit for bit forward's) and the discriminator's latent."""
    torch.manual_seed(0)
    m = Autoencoder(channels=(8, 8, 16), sspcab=sspcab)
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        m.train()
        m(x)  # non-trivial BN statistics
        m.eval()
        latent, recon = m.encode_decode(x)
        assert torch.equal(recon, m(x))
        assert torch.equal(latent, m.encoder(x))  # the decoder's in-place activation leaves the latent alone
    assert latent.shape == (2, 16, 2, 2, 2)


def test_latent_features_per_slice_and_back_to_frames():
    latent = torch.randn(2, 16, 2, 3, 3)
    f = latent_features(latent)
    assert f.shape == (2, 2, feature_dim(16)) == (2, 2, 32)
    assert torch.equal(f[1, 0, :16], latent[1, :, 0].amax(dim=(1, 2)))
    assert torch.allclose(f[1, 1, 16:], latent[1, :, 1].mean(dim=(1, 2)))
    logits = Discriminator(feature_dim(16))(f)
    assert logits.shape == (2, 2, 1)
    frames = slices_to_frames(torch.tensor([[0.1, 0.9]]), 16)
    assert frames.shape == (1, 16) and (frames[0, :8] == 0.1).all() and (frames[0, 8:] == 0.9).all()
    with pytest.raises(ValueError, match="do not split evenly"):
        slices_to_frames(torch.zeros(1, 3), 16)
    with pytest.raises(ValueError, match="latent must be"):
        latent_features(torch.zeros(2, 16, 3))


def test_encoder_discriminator_standardises_its_features_and_the_clip_one_does_not():
    """The CLIP MLP's state dict is the paper's (old bundles load); the encoder one adds its standardisation buffers."""
    assert set(Discriminator().state_dict()) == set(build_discriminator("clip").state_dict()) == {
        "net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    d = build_discriminator("spatial_encoder", 4)
    assert {"feature_mean", "feature_std"} <= set(d.state_dict())
    feats = torch.tensor([[0.01, 0.02, 5.0, 1.0], [0.03, 0.02, 7.0, 1.0]])  # tiny scale, a constant column
    d.fit_standardisation(feats)
    assert torch.allclose(d.feature_mean, feats.mean(0)) and (d.feature_std > 0).all()
    with torch.no_grad():
        assert torch.allclose(d(feats.mean(0, keepdim=True)), d.net(torch.zeros(1, 4)))
        assert torch.isfinite(d(feats)).all()
    with pytest.raises(ValueError, match="unknown discriminator features 'resnet'"):
        build_discriminator("resnet")
