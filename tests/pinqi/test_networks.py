"""Tests of the PINQI networks P_θ and Y_θ (pinqi.networks)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pinqi.common.bounded import BoundedMap
from pinqi.common.modules import count_parameters
from pinqi.common.unet import ResidualBlock
from pinqi.networks import ImageNet, ParameterNet

TINY = (4, 8)


@pytest.fixture(autouse=True)
def _single_thread_seeded():
    """Tiny problems: one thread is faster and avoids oversubscribing shared cores. The networks'
    weights are initialised by PyTorch from the global RNG: seed it inside a fork (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    torch.set_num_threads(threads)


def _images(shape, dtype=torch.complex64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g, dtype=dtype)


def _perturb(module: torch.nn.Module, seed: int = 1, std: float = 0.3) -> None:
    """Move every parameter away from its (partly zero) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("size", [(9, 13), (20, 20)])
def test_shapes_and_dtypes(dtype, size):
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    pnet = ParameterNet(5, 3, features=(4, 8, 8), bounds=([-2, -2, -1], [2, 2, 20])).to(real)
    ynet = ImageNet(features=(4, 8, 8)).to(real)
    x = _images((2, 5, *size), dtype)
    p = pnet(x, 1)
    y = ynet(x, torch.tensor([0, 3]))
    assert p.shape == (2, 3, *size) and p.dtype == real
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(p).all() and torch.isfinite(torch.view_as_real(y)).all()


def test_paper_configuration_runs_on_sizes_not_divisible_by_16():
    pnet, ynet = ParameterNet(5, 3), ImageNet()
    x = _images((1, 5, 20, 20))
    with torch.no_grad():
        assert pnet(x, 0).shape == (1, 3, 20, 20)
        assert ynet(x, 0).shape == (1, 5, 20, 20)


def test_float32_network_accepts_complex128_and_returns_it():
    ynet, pnet = ImageNet(features=TINY), ParameterNet(3, 2, features=TINY)
    x = _images((1, 3, 8, 8), torch.complex128)
    assert ynet(x, 0).dtype == torch.complex128
    assert pnet(x, 0).dtype == torch.float64


def test_image_net_works_for_any_number_of_images_and_mixes_them():
    ynet = ImageNet(features=TINY)
    _perturb(ynet)
    for t in (1, 3, 7):
        assert ynet(_images((1, t, 8, 8)), 2).shape == (1, t, 8, 8)
    # the temporal convolution couples the images: changing image 0 changes the output at t = 1
    x = _images((1, 3, 8, 8))
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        delta = (ynet(x2, 0) - ynet(x, 0))[:, 1].abs().max()
    assert delta > 1e-3


def test_image_net_starts_close_to_identity_and_is_scale_equivariant():
    ynet = ImageNet()
    x = _images((2, 5, 24, 24))
    with torch.no_grad():
        y = ynet(x, 0)
        assert (y - x).norm() / x.norm() < 0.05
        assert (y - x).norm() > 0  # a residual correction, not a copy
        _perturb(ynet, std=0.1)
        torch.testing.assert_close(ynet(3.0 * x, 1), 3.0 * ynet(x, 1), rtol=1e-4, atol=1e-4)


def test_parameter_net_scaled_parameters_follow_the_image_scale():
    pnet = ParameterNet(5, 3, features=TINY, bounds=([-2, -2, -1], [2, 2, 20]), scaled_parameters=(0, 1))
    _perturb(pnet)
    x = _images((1, 5, 8, 8))
    with torch.no_grad():
        p1, p3 = pnet(x, 0), pnet(4.0 * x, 0)
    torch.testing.assert_close(p3[:, :2], 4.0 * p1[:, :2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(p3[:, 2], p1[:, 2], rtol=1e-4, atol=1e-5)


def test_film_iteration_changes_output_only_after_leaving_the_initialisation():
    ynet = ImageNet(features=TINY)
    pnet = ParameterNet(2, 2, features=TINY)
    x = _images((2, 2, 8, 8))
    with torch.no_grad():
        # FiLM projections start at zero: the iteration has no effect yet
        torch.testing.assert_close(ynet(x, 0), ynet(x, 5), rtol=0, atol=0)
        for net in (ynet, pnet):
            _perturb(net)
            a, b = net(x, 0), net(x, 5)
            assert (a - b).abs().max() > 1e-3
            # a per-sample iteration tensor gives each sample its own conditioning
            mixed = net(x, torch.tensor([0, 5]))
            torch.testing.assert_close(mixed[0], a[0])
            torch.testing.assert_close(mixed[1], b[1])


def test_bounded_head_respects_bounds_and_initial_value():
    lower, upper = [-2.0, 0.0, -math.inf, -math.inf], [2.0, math.inf, 1.0, math.inf]
    pnet = ParameterNet(2, 4, features=TINY, bounds=(lower, upper), head_std=0.5)
    _perturb(pnet, std=1.0)
    unbounded = copy.deepcopy(pnet)
    unbounded.head_map = BoundedMap([-math.inf] * 4, [math.inf] * 4)
    x = _images((2, 2, 12, 12), scale=100.0)
    with torch.no_grad():
        p, raw = pnet(x, 0), unbounded(x, 0)
    assert raw.abs().amax(dim=(0, 2, 3)).min() > 10  # large raw outputs: the heads saturate
    assert p[:, 0].min() >= -2 and p[:, 0].max() <= 2
    assert p[:, 1].min() >= 0 and p[:, 2].max() <= 1
    torch.testing.assert_close(p[:, 0], -2 + 4 * torch.sigmoid(raw[:, 0]))
    torch.testing.assert_close(p[:, 1], torch.nn.functional.softplus(raw[:, 1]))
    torch.testing.assert_close(p[:, 2], 1 - torch.nn.functional.softplus(-raw[:, 2]))
    torch.testing.assert_close(p[:, 3], raw[:, 3])
    # zero head weights: the head returns exactly the requested initial values
    init = [0.5, 1.5, -3.0, 7.0]
    pnet = ParameterNet(2, 4, features=TINY, bounds=(lower, upper), initial_value=init, head_std=0.0)
    with torch.no_grad():
        p = pnet(x, 1)
    torch.testing.assert_close(p, torch.tensor(init).view(1, 4, 1, 1).expand_as(p), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="strictly inside"):
        ParameterNet(2, 4, features=TINY, bounds=(lower, upper), initial_value=[3.0, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("checkpoint", [False, True])
def test_every_parameter_receives_a_gradient(checkpoint):
    for net in (
        ImageNet(features=(4, 8, 8), checkpoint=checkpoint),
        ParameterNet(3, 3, features=(4, 8, 8), checkpoint=checkpoint),
    ):
        x = _images((2, 3, 12, 12))
        out = net(x, torch.tensor([1, 2]))
        (torch.view_as_real(out) if out.is_complex() else out).sum().backward()
        assert all(p.grad is not None for p in net.parameters())
        # away from the zero initialisations, no parameter may be unused (DDP would fail)
        _perturb(net)
        net.zero_grad()
        out = net(x, torch.tensor([1, 2]))
        (torch.view_as_real(out) if out.is_complex() else out).square().sum().backward()
        zero = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
        assert zero == [], zero


def test_checkpointing_gives_identical_gradients():
    plain = ImageNet(features=(4, 8, 8))
    _perturb(plain)
    recomputed = copy.deepcopy(plain)
    recomputed.unet.checkpoint = True
    grads = []
    for net in (plain, recomputed):
        x = _images((1, 3, 8, 8))
        torch.view_as_real(net(x, 1)).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_bad_inputs_are_rejected():
    ynet, pnet = ImageNet(features=TINY, max_iterations=3), ParameterNet(5, 3, features=TINY)
    x = _images((1, 5, 8, 8))
    with pytest.raises(TypeError, match="complex"):
        ynet(x.real, 0)
    with pytest.raises(ValueError, match="T = 5"):
        pnet(_images((1, 4, 8, 8)), 0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ynet(x, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ynet(x, torch.tensor([-1]))
    with pytest.raises(TypeError, match="integer"):
        ynet(x, torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        ynet(x, torch.tensor([0, 1]))


def test_parameter_counts():
    # Regression guard of this architecture at the paper configuration (T = 5, P = 3).
    pnet, ynet = ParameterNet(5, 3), ImageNet()
    assert count_parameters(pnet) == 2_252_140
    assert count_parameters(ynet) == 647_595
    # The paper's counts (2,235,308 and 597,323) are reproduced exactly with the released code's
    # choices: iteration as an extra input channel, no FiLM in the bottleneck, no FiLM in Y_θ, and
    # the iteration embedding shared outside the networks.
    paper_p = ParameterNet(5, 3, film_bottleneck=False, iteration_channel=True)
    assert count_parameters(paper_p) - count_parameters(paper_p.unet.embedding) == 2_235_308
    assert count_parameters(ImageNet(film=False, iteration_channel=True)) == 597_323
    # The four feature counts read literally as four levels (three down-sampling steps):
    assert count_parameters(ParameterNet(5, 3, features=(32, 64, 96, 128))) == 1_299_690
    assert count_parameters(ImageNet(features=(16, 32, 48, 64))) == 376_169


def test_gradcheck_wrt_input_float64():
    g = torch.Generator().manual_seed(5)
    ynet = ImageNet(features=TINY).double()
    pnet = ParameterNet(2, 2, features=TINY, bounds=([-1, 0], [1, 5]), scaled_parameters=(0,)).double()
    for net in (ynet, pnet):
        _perturb(net)
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, ResidualBlock):
                    module.gate.fill_(0.7)
    x = torch.randn(1, 2, 8, 8, dtype=torch.complex128, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ynet(v, 1), (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: pnet(v, 1), (x,), eps=1e-6, atol=1e-5, fast_mode=True)
