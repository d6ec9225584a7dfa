"""Tests of the U-Net building blocks (pinqi.common.unet, pinqi.common.factorised_conv)."""

from __future__ import annotations

import pytest
import torch

from pinqi.common.factorised_conv import FactorisedConv3d, is_channels_last, per_image, to_channels_last
from pinqi.common.unet import FiLM, ResidualBlock, UNet, num_groups


@pytest.fixture(autouse=True)
def _single_thread_seeded():
    """One thread for tiny problems; the weights' initialisation seeded inside a fork of the RNG."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    torch.set_num_threads(threads)


def _perturb(module: torch.nn.Module, seed: int = 1, std: float = 0.3) -> None:
    """Move every parameter away from its (partly zero) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_fused_norm_film_equals_norm_then_film():
    block = ResidualBlock(6, 32, cond_dim=5)
    _perturb(block)
    h = torch.randn(3, 32, 7, 9, generator=torch.Generator().manual_seed(3))
    cond = torch.randn(3, 5, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(block._norm_film(h, cond), block.film(block.norm1(h), cond))
    assert block.norm1.num_groups == 2  # 16 channels per group


def test_num_groups_reading_of_group_size_16():
    assert [num_groups(c) for c in (4, 16, 32, 48, 96, 128)] == [1, 1, 2, 3, 6, 8]
    assert num_groups(40) == 2  # 40 // 16 = 2 divides 40


def test_unet_with_external_conditioning_vector():
    net = UNet(3, 2, (4, 8), cond_dim=6)
    _perturb(net)
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    c = torch.randn(2, 6, generator=torch.Generator().manual_seed(1))
    assert net(x, cond=c).shape == (2, 2, 10, 10)
    assert (net(x, cond=c) - net(x, cond=2 * c)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cond"):
        net(x)
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        net(x, cond=c[:, :5])


def test_film_module_is_identity_at_initialisation():
    film = FiLM(4, 3)
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(film(x, torch.ones(2, 4)), x)


@pytest.mark.parametrize(
    "kernel, padding", [((1, 3, 3), (0, 1, 1)), ((3, 1, 1), (1, 0, 0)), ((1, 1, 1), 0), ((1, 5, 5), (0, 2, 2))]
)
def test_factorised_conv3d_equals_conv3d_and_keeps_its_state_dict(kernel, padding):
    torch.manual_seed(0)
    fast = FactorisedConv3d(3, 4, kernel, padding=padding).double()
    reference = torch.nn.Conv3d(3, 4, kernel, padding=padding).double()
    reference.load_state_dict(fast.state_dict())  # same keys and shapes
    x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fast, (x,), fast_mode=True)
    with pytest.raises(ValueError, match=r"\(1, k, k\) or \(k, 1, 1\)"):
        FactorisedConv3d(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match="stride 1"):
        FactorisedConv3d(3, 4, (1, 3, 3), stride=2)
    with pytest.raises(ValueError, match=r"\(B, C, T, Y, X\)"):
        fast(torch.randn(2, 3, 6, 7, dtype=torch.float64))


@pytest.mark.parametrize("kernel, padding", [((1, 3, 3), (0, 1, 1)), ((3, 1, 1), (1, 0, 0)), ((1, 1, 1), 0)])
@pytest.mark.parametrize("batch", [1, 2])
def test_factorised_conv3d_keeps_a_channels_last_layout(kernel, padding, batch):
    fast = FactorisedConv3d(3, 4, kernel, padding=padding).double()
    reference = torch.nn.Conv3d(3, 4, kernel, padding=padding).double()
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(batch, 3, 5, 6, 7, dtype=torch.float64)
    out = fast(to_channels_last(x))
    torch.testing.assert_close(out, reference(x), rtol=1e-12, atol=1e-12)
    assert is_channels_last(out)
    # canonical strides (B = 1 included), so that PyTorch's own kernels keep the layout too
    assert out.stride() == to_channels_last(out.contiguous()).stride()
    assert fast(x).is_contiguous()


def test_per_image_maps_every_image_in_either_layout():
    x = torch.randn(2, 3, 4, 6, 8)
    pooled = [per_image(lambda images: torch.nn.functional.max_pool2d(images, 2), v) for v in (x, to_channels_last(x))]
    expected = torch.stack([torch.nn.functional.max_pool2d(x[:, :, t], 2) for t in range(4)], 2)
    torch.testing.assert_close(pooled[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(pooled[1], expected, rtol=0, atol=0)
    assert pooled[0].is_contiguous() and is_channels_last(pooled[1])


@pytest.mark.parametrize("layout, shape", [("2d", (2, 3, 10, 12)), ("2.5d", (1, 3, 4, 10, 12)), ("2.5d", (2, 3, 4, 8, 8))])
def test_unet_channels_last_path_equals_the_plain_path(layout, shape):
    net = UNet(3, 2, (16, 32, 32), n_iterations_embed=4, layout=layout)
    plain = UNet(3, 2, (16, 32, 32), n_iterations_embed=4, layout=layout, channels_last=False)
    assert list(net.state_dict()) == list(plain.state_dict())  # the layout is not in the checkpoint
    _perturb(net)
    plain.load_state_dict(net.state_dict())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    layouts = []
    net.decoder[0].register_forward_hook(lambda module, args, out: layouts.append(is_channels_last(out)))
    with torch.no_grad():
        fast = net(x, iteration=1)  # channels_last=None: channels-last for CPU inference
        reference = plain(x, iteration=1)
        net.channels_last = True
        forced = net(x, iteration=1)
    scale = reference.abs().max()
    assert (fast - reference).abs().max() <= 1e-5 * scale
    assert (forced - reference).abs().max() <= 1e-5 * scale
    assert fast.is_contiguous() and layouts == [True, True]  # the fast path ran, all the way to the decoder
