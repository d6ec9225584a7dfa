"""DOPAMINE and CoRRECT baselines on a tiny problem: forward, algorithmic pieces, training steps."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from operators import MultiCoilCartesianOp
from pinqi.baselines.common import magnitude_scale
from pinqi.baselines.correct import CoRRECT, correct_loss, correct_train_step
from pinqi.baselines.dopamine import DOPAMINE, dopamine_loss, dopamine_train_step
from simulation import SaturationRecovery, T1MappingDataset, load_anatomy


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    anatomy = load_anatomy("phantom", "train", shape=(16, 16))
    dataset = T1MappingDataset(anatomy, length=2, seed=3, image_size=16, n_coils=2, acceleration=4)
    return default_collate([dataset[0], dataset[1]])


def _q(batch: dict[str, torch.Tensor]) -> SaturationRecovery:
    return SaturationRecovery(batch["times"][0])


def _dopamine(batch, **kw) -> DOPAMINE:
    torch.manual_seed(0)
    return DOPAMINE(_q(batch), n_iterations=kw.pop("n_iterations", 3), hidden=4, n_layers=3, init_features=(4, 8), **kw)


def _correct(batch, **kw) -> CoRRECT:
    torch.manual_seed(0)
    return CoRRECT(_q(batch), n_iterations=3, hidden=4, n_layers=3, map_features=(4, 8), map_bottleneck=None, **kw)


def _data_term(q, p_normalised, batch, scale) -> torch.Tensor:
    k = batch["kspace"] / scale[:, None, None, None, None]
    residual = MultiCoilCartesianOp(batch["csm"], batch["mask"])(q(p_normalised)) - k
    return residual.abs().square().sum()


def test_dopamine_forward_shapes_bounds_and_units(batch):
    model = _dopamine(batch).eval()
    with torch.no_grad():
        out = model(batch["kspace"], batch["csm"], batch["mask"])
    assert out["params"].shape == (2, 3, 16, 16) and len(out["iterates"]) == 4
    lower, upper = model.signal_model.bounds
    for it in out["iterates"]:
        for c in range(3):
            assert lower[c] <= float(it[:, c].min()) and float(it[:, c].max()) <= upper[c]
    # M0 comes back in data units: the normalised last iterate times the per-sample scale
    scale = out["scale"][:, None, None]
    torch.testing.assert_close(out["params"][:, 0], out["iterates"][-1][:, 0] * scale)
    torch.testing.assert_close(out["params"][:, 2], out["iterates"][-1][:, 2])


def test_dopamine_small_step_descends_the_data_term(batch):
    # zero-initialised regularisers: with a small step one iteration is plain gradient descent
    model = _dopamine(batch, n_iterations=1, step_init=(1e-3, 1e-3)).eval()
    with torch.no_grad():
        out = model(batch["kspace"], batch["csm"], batch["mask"])
    q, scale = model.signal_model, out["scale"]
    before, after = (_data_term(q, it, batch, scale) for it in out["iterates"])
    assert float(after) < float(before)


def test_dopamine_updates_are_soft_clipped(batch):
    clip = (0.05, 0.05, 0.1)
    model = _dopamine(batch, step_init=(50.0, 50.0), clip=clip).eval()  # absurd steps
    with torch.no_grad():
        iterates = model(batch["kspace"], batch["csm"], batch["mask"])["iterates"]
    for previous, current in zip(iterates[:-1], iterates[1:]):
        change = (current - previous).abs().amax(dim=(0, 2, 3))
        assert all(float(change[c]) <= clip[c] * (1 + 1e-5) for c in range(3))
    assert float((iterates[1] - iterates[0]).abs().amax()) > 0.5 * min(clip)


def test_dopamine_training_step_reaches_every_parameter_and_lowers_the_loss(batch):
    model = _dopamine(batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = [float(dopamine_train_step(model, optimizer, batch)) for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < losses[0]
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    assert float(dopamine_loss(out, batch).detach()) > 0


def test_correct_unrolled_reconstruction_reduces_the_data_residual(batch):
    model = _correct(batch, step_init=0.5).eval()
    with torch.no_grad():
        out = model(batch["kspace"], batch["csm"], batch["mask"])
    operator = MultiCoilCartesianOp(batch["csm"], batch["mask"])
    zero_filled = operator.adjoint(batch["kspace"])
    residual = lambda x: (operator(x) - batch["kspace"]).abs().square().sum()  # noqa: E731
    assert out["images"].shape == (2, 5, 16, 16) and out["params"].shape == (2, 3, 16, 16)
    assert float(residual(out["images"])) < 0.7 * float(residual(zero_filled))
    assert float(out["params"][:, 2].min()) > 0  # R1 through a softplus
    torch.testing.assert_close(out["scale"], magnitude_scale(zero_filled))


def test_correct_loss_is_the_weighted_sum_of_its_terms(batch):
    model = _correct(batch).eval()
    with torch.no_grad():
        out = model(batch["kspace"], batch["csm"], batch["mask"])
    q = model.signal_model
    terms = [float(correct_loss(out, batch, q, weights=w)) for w in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    assert all(t > 0 for t in terms)
    assert float(correct_loss(out, batch, q)) == pytest.approx(terms[0] + 0.1 * terms[1] + terms[2], rel=1e-5)
    # the self-supervised term vanishes when the images follow the signal model of the parameters
    consistent = {**out, "images": q(out["params"])}
    assert float(correct_loss(consistent, batch, q, weights=(0, 1, 0))) == pytest.approx(0.0, abs=1e-10)


def test_correct_training_step_reaches_every_parameter_and_lowers_the_loss(batch):
    model = _correct(batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = [float(correct_train_step(model, optimizer, batch)) for _ in range(8)]
    assert min(losses[-3:]) < losses[0]
    assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []


def test_float64_and_bad_input(batch):
    model = _dopamine(batch, n_iterations=1).double().eval()
    k = batch["kspace"].to(torch.complex128)
    with torch.no_grad():
        assert model(k, batch["csm"].to(torch.complex128), batch["mask"])["params"].dtype == torch.float64
    with pytest.raises(ValueError, match="n_times"):
        model(k[:, :3], batch["csm"].to(torch.complex128), batch["mask"][:, :3])
    with pytest.raises(TypeError, match="complex"):
        _correct(batch)(batch["kspace"].real, batch["csm"], batch["mask"])
    with pytest.raises(ValueError, match="n_iterations"):
        DOPAMINE(_q(batch), n_iterations=0)
