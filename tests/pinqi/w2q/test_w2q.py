"""W2Q: closed-form scale, normalisation, protocol embedding, fit layer gradients, training runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from pinqi.metrics import map_metrics
from pinqi.w2q.config import W2QConfig, load_w2q_config
from pinqi.w2q.data import BandedProtocolDataset, build_dataset, contrast_availability
from pinqi.w2q.model import LOG_BOUNDS, W2Q, from_log_maps, to_log_maps
from pinqi.w2q.networks import MAP_LOWER, MAP_UPPER, maps_from_raw, raw_from_maps
from pinqi.w2q.protocols import PARAMETERS
from pinqi.w2q.scale import WM_REFERENCE, fit_scale, normalise_images, white_matter_reference
from pinqi.w2q.signal import MultiContrastSignal, protocol_features
from pinqi.w2q.training import W2QTrainer, load_w2q, phase_factor
from simulation.protocol_ranges import LEGACY_PROTOCOL_RANGES
from simulation import load_anatomy
from solvers.nonlinear_fit import nonlinear_fit

TINY = W2QConfig(n_iterations=1, features=(8, 16), embed_dim=8, group_size=4, fit_max_iter=5, protocol_version=2)


def _protocol(batch: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """T1w spin echo (sample 0) / spoiled GRE (others), T2w spin echo, FLAIR."""
    rows, types = [], []
    for b in range(batch):
        t1w = [0.5 + 0.1 * b, 0.01, 0.0, 90.0] if b == 0 else [0.02, 0.004, 0.0, 15.0 + 5 * b]
        rows.append([t1w, [5.0, 0.1 + 0.01 * b, 0.0, 90.0], [9.0, 0.12, 2.4, 90.0]])
        types.append([0 if b == 0 else 1, 0, 2])
    return torch.tensor(rows, dtype=dtype), torch.tensor(types)


def _maps(batch: int, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Smooth random (PD, T1, T2) maps around grey/white matter values."""
    base = torch.tensor([0.75, 1.2, 0.085], dtype=dtype).view(1, 3, 1, 1)
    noise = torch.rand(batch, 3, n, n, generator=generator, dtype=torch.float64).to(dtype)
    return base * (0.8 + 0.4 * noise)


def test_fit_scale_closed_form_and_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64) + 0.1
    mask = torch.rand(2, 6, 6, generator=g) > 0.3
    s_true = torch.tensor([[2.0, 0.5, 1.3], [0.9, 4.0, 1.0]], dtype=torch.float64)
    images = s_true[..., None, None] * q
    images = torch.where(mask[:, None], images, torch.full_like(images, 99.0))  # outside the mask: ignored
    assert torch.allclose(fit_scale(q, images, mask), s_true, rtol=1e-12)
    # least squares with noise equals the normal-equation solution
    noisy = images + 0.01 * torch.randn(images.shape, generator=g, dtype=torch.float64)
    m = mask[:, None].double()
    expected = (m * q * noisy).sum((-2, -1)) / (m * q * q).sum((-2, -1))
    assert torch.allclose(fit_scale(q, noisy, mask), expected, rtol=1e-12)
    # bounded to ±20 % around a reference
    ref = torch.tensor([[1.0, 0.5, 1.3], [0.9, 2.0, 1.1]], dtype=torch.float64)
    bounded = fit_scale(q, images, mask, reference=ref, rel_bound=0.2)
    assert torch.allclose(bounded, torch.tensor([[1.2, 0.5, 1.3], [0.9, 2.4, 1.0]], dtype=torch.float64), rtol=1e-12)
    # differentiable in both arguments (inside the bounds)
    q_ = q[:1, :2, :4, :4].clone().requires_grad_(True)
    y_ = noisy[:1, :2, :4, :4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: fit_scale(a, b, mask[:1, :4, :4]), (q_, y_))
    with pytest.raises(ValueError, match="same shape"):
        fit_scale(q, images[:, :2], mask)


def test_normalise_images_percentile_in_mask() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 10, 10, generator=g) * torch.tensor([1.0, 100.0, 0.01]).view(1, 3, 1, 1)
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[:, 2:8, 2:8] = True
    images[:, :, 0, 0] = 1e6  # a hot pixel outside the mask does not matter
    images[1, 2] = 0.0  # a missing contrast
    normalised, factors = normalise_images(images, mask)
    inside = normalised[0, 1][mask[0]]
    assert torch.quantile(inside, 0.95) == pytest.approx(1.0, rel=1e-5)
    assert factors[1, 2] == 1.0 and torch.all(normalised[1, 2] == 0)
    assert torch.allclose(normalised * factors[..., None, None], images)


def test_white_matter_reference_recovers_scale() -> None:
    """Images of maps whose white-matter-like pixels have PD 0.7: the reference is the true scale."""
    seq, types = _protocol(2, torch.float64)
    signal = MultiContrastSignal(seq, types)
    n = 8
    p = torch.empty(2, 3, n, n, dtype=torch.float64)
    p[:, 0], p[:, 1], p[:, 2] = 0.9, 3.0, 1.5  # CSF-like
    p[:, 0, :, :4], p[:, 1, :, :4], p[:, 2, :, :4] = WM_REFERENCE[0], 1.1, 0.075  # white matter, half the brain
    s_true = torch.tensor([[3.0, 0.7, 1.5], [12.0, 2.0, 0.4]], dtype=torch.float64)
    images = s_true[..., None, None] * signal(p)
    mask = torch.ones(2, n, n, dtype=torch.bool)
    ref = white_matter_reference(images, p, mask, signal, fraction=0.25)
    assert torch.allclose(ref, s_true, rtol=1e-6)
    # with a wrong PD everywhere the fit is still bounded to ±20 % of this reference
    scale = fit_scale(signal(p * torch.tensor([0.5, 1, 1], dtype=torch.float64).view(1, 3, 1, 1)), images, mask, ref)
    assert torch.allclose(scale, 1.2 * s_true)


def test_head_bounds_roundtrip() -> None:
    p = torch.tensor([[0.7, 1.1, 0.08], [1.5, 4.0, 2.0]]).view(2, 3, 1, 1)
    assert torch.allclose(maps_from_raw(raw_from_maps(p)), p, rtol=1e-4)
    extreme = maps_from_raw(torch.tensor([-50.0, 50.0, 0.0]).view(1, 3, 1, 1))
    assert extreme[0, 0] >= 0 and extreme[0, 1] <= 6.0


def _randomise_film(model: nn.Module) -> None:
    """FiLM starts as the identity (zero init) and the blocks' gates near 0: make both matter."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "film" in name or "head" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=g))
            elif name.endswith("gate"):
                param.fill_(1.0)


def test_embedding_changes_output_with_sequence_parameters() -> None:
    g = torch.Generator().manual_seed(2)
    seq, types = _protocol(2)
    images = torch.rand(2, 3, 8, 8, generator=g) + 0.1
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    outputs = {}
    for name, cfg in (("embedding", W2QConfig(**{**TINY.to_dict(), "n_iterations": 0, "features": (8, 16)})),
                      ("plain", W2QConfig(network="plain", n_iterations=0, features=(8, 16), group_size=4))):
        torch.manual_seed(0)
        model = W2Q(cfg).eval()
        _randomise_film(model)
        with torch.no_grad():
            a = model(images, seq, types, mask).final
            seq2 = seq.clone()
            seq2[:, 1, 1] += 0.03  # a longer T2w echo time, same images
            b = model(images, seq2, types, mask).final
        outputs[name] = (a - b).abs().max()
    assert outputs["embedding"] > 1e-3  # the protocol embedding reaches the maps
    assert outputs["plain"] == 0  # the baseline cannot see the protocol
    feats = protocol_features(seq, types)
    assert feats.shape == (2, 3, 13) and torch.isfinite(feats).all()


def test_fit_layer_gradcheck_with_w2q_signal_models() -> None:
    """Implicit gradients of the W2Q fit layer (mixed SE / GRE / FLAIR models) w.r.t. data, prior,
    λ and a sequence parameter, float64 on 2x2 images (fast-mode gradcheck: random projections)."""
    g = torch.Generator().manual_seed(4)
    seq, types = _protocol(2, torch.float64)
    p_true = _maps(2, 2, g, torch.float64)
    y0 = MultiContrastSignal(seq, types)(p_true).detach()
    weight = torch.ones_like(y0)
    weight[1, 0] = 0.0  # one contrast unavailable

    def fit(y: torch.Tensor, u_reg: torch.Tensor, lam: torch.Tensor, te_t2w: torch.Tensor) -> torch.Tensor:
        s = torch.cat([seq[:, :1], torch.cat([seq[:, 1:2, :1], te_t2w.view(2, 1, 1), seq[:, 1:2, 2:]], -1), seq[:, 2:]], 1)
        signal = MultiContrastSignal(s, types)
        return nonlinear_fit(lambda u: weight * signal(from_log_maps(u)), weight * y, u_reg, lam.view(1, 3, 1, 1),
                             bounds=LOG_BOUNDS, solver="gauss-newton", max_iter=50, tol=1e-11)

    y = (y0 * 1.02).requires_grad_(True)
    u_reg = (to_log_maps(p_true) + 0.05).requires_grad_(True)
    lam = torch.tensor([0.05, 0.1, 0.2], dtype=torch.float64, requires_grad=True)
    te = seq[:, 1, 1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fit, (y, u_reg, lam, te), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.fixture(scope="module")
def phantom_batch() -> dict[str, torch.Tensor]:
    anatomy = load_anatomy("phantom", "test", shape=(16, 16))
    # map-mixed partial volumes: every pixel is then exactly one (PD, T1, T2), which these fit tests need
    data = BandedProtocolDataset(anatomy, length=2, seed=5, image_size=16, part="held_out", partial_volume="maps",
                                 protocols=LEGACY_PROTOCOL_RANGES)
    return default_collate([data[0], data[1]])


def test_w2q_output_is_consistent_with_inputs(phantom_batch: dict[str, torch.Tensor]) -> None:
    """With a negligible prior the fit reproduces the (noisy) inputs to the noise level."""
    b = phantom_batch
    torch.manual_seed(0)
    model = W2Q(W2QConfig(**{**TINY.to_dict(), "lambda_init": 1e-4, "fit_max_iter": 30})).double().eval()
    available = torch.tensor([[True, True, True], [True, False, True]])
    with torch.no_grad():
        out = model(b["images"].double(), b["sequence_params"], b["sequence_types"], b["brain_mask"], available)
        synth, scales = model.synthesise(out)
    assert out.final.shape == (2, 3, 16, 16) and len(out.fits) == 1 and len(out.network) == 1
    m = (out.brain_mask[:, None] & available[..., None, None]).expand_as(synth)
    fitted = out.scales[-1][..., None, None] * out.fields[-1] * out.signal(out.final)
    rel = (fitted - out.normalised)[m].abs().mean() / out.normalised[m].abs().mean()
    start = out.scales[-1][..., None, None] * out.signal(out.network[0])
    rel_start = (start - out.normalised)[m].abs().mean() / out.normalised[m].abs().mean()
    assert rel < 0.05 < rel_start  # physically consistent; the untrained network's guess is not
    lower, upper = torch.tensor(MAP_LOWER), torch.tensor(MAP_UPPER)
    assert torch.all(out.final > lower.view(1, 3, 1, 1)) and torch.all(out.final < upper.view(1, 3, 1, 1))
    ratio = out.scales[-1] / out.reference
    assert torch.all((ratio >= 0.8 - 1e-9) & (ratio <= 1.2 + 1e-9))
    # an unavailable contrast's image does not matter, even NaN
    images = b["images"].double().clone()
    images[1, 1] = math.nan
    with torch.no_grad():
        again = model(images, b["sequence_params"], b["sequence_types"], b["brain_mask"], available).final
    assert torch.allclose(again, out.final)


def test_known_intensity_scale_replaces_the_closed_form_scale(phantom_batch: dict[str, torch.Tensor]) -> None:
    """Given the true receiver scale, the fit explains the images with exactly that scale; the
    untrained network's maps then move towards the truth, and a bad scale is refused."""
    b = phantom_batch
    torch.manual_seed(0)
    model = W2Q(W2QConfig(**{**TINY.to_dict(), "lambda_init": 1e-4, "fit_max_iter": 30})).double().eval()
    bias = b["bias"].double()
    images = b["images"].double() / bias  # bias-free, so that the global scale is the whole intensity
    with torch.no_grad():
        known = model(images, b["sequence_params"], b["sequence_types"], b["brain_mask"],
                      intensity_scale=b["scale"].double())
        fitted = model(images, b["sequence_params"], b["sequence_types"], b["brain_mask"])
    torch.testing.assert_close(known.scales[-1] * known.factors, b["scale"].double())
    assert not torch.allclose(fitted.scales[-1] * fitted.factors, b["scale"].double(), rtol=1e-2)
    mask = b["brain_mask"]
    err = (known.final[:, 1] - b["params"][:, 1].double()).abs()[mask].mean()
    err_network = (known.network[0][:, 1] - b["params"][:, 1].double()).abs()[mask].mean()
    assert err < 0.5 * err_network
    for bad in (b["scale"][:, :2], -b["scale"]):
        with pytest.raises(ValueError, match="intensity_scale must be a positive tensor"):
            model(images, b["sequence_params"], b["sequence_types"], b["brain_mask"], intensity_scale=bad)
    # refit (pinqi map's native-resolution fit) takes the known scale too
    with torch.no_grad():
        refit_known = model.refit(images, b["sequence_params"], b["sequence_types"], mask, known.network[0],
                                  intensity_scale=b["scale"].double())
        refit_free = model.refit(images, b["sequence_params"], b["sequence_types"], mask, known.network[0])
    truth = b["params"][:, 1].double()
    assert (refit_known[:, 1] - truth).abs()[mask].mean() < 0.5 * (refit_free[:, 1] - truth).abs()[mask].mean()
    # with a smooth receive field in the model, a known global scale still leaves the relative field to the fit
    field_model = W2Q(W2QConfig(**{**TINY.to_dict(), "field_degree": 2})).double().eval()
    with torch.no_grad():
        biased = field_model(b["images"].double(), b["sequence_params"], b["sequence_types"], mask,
                             intensity_scale=b["scale"].double())
    torch.testing.assert_close(biased.scales[-1] * biased.factors, b["scale"].double())
    assert float((biased.fields[-1] - 1).abs()[mask[:, None].expand_as(biased.fields[-1])].max()) > 1e-3


def test_w2q_rejects_bad_input(phantom_batch: dict[str, torch.Tensor]) -> None:
    b = phantom_batch
    model = W2Q(TINY)
    with pytest.raises(ValueError, match=r"images must be a real tensor \(B, 3, Y, X\)"):
        model(b["images"][:, :2], b["sequence_params"], b["sequence_types"], b["brain_mask"])
    with pytest.raises(ValueError, match="at least one available"):
        model(b["images"], b["sequence_params"], b["sequence_types"], b["brain_mask"], torch.zeros(2, 3, dtype=torch.bool))
    ms = b["sequence_params"].clone()
    ms[:, 1, 0] = 5000.0
    with pytest.raises(ValueError, match="milliseconds"):
        model(b["images"], ms, b["sequence_types"], b["brain_mask"])
    with pytest.raises(TypeError, match="sequence_types"):
        model(b["images"], b["sequence_params"], b["sequence_types"].float(), b["brain_mask"])
    bad = b["images"].clone()
    bad[0, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="images hold 1 NaN or inf"):
        model(bad, b["sequence_params"], b["sequence_types"], b["brain_mask"])
    zero = b["images"].clone()
    zero[1, 2] = 0
    with pytest.raises(ValueError, match="contrast flair of sample 1 is zero everywhere"):
        model(zero, b["sequence_params"], b["sequence_types"], b["brain_mask"])
    model(zero, b["sequence_params"], b["sequence_types"], b["brain_mask"], torch.tensor([[True] * 3, [True, True, False]]))
    with pytest.raises(ValueError, match=r"brain_mask is empty .* samples \[0\]"):
        model(b["images"], b["sequence_params"], b["sequence_types"], torch.cat([b["brain_mask"][:1] & False, b["brain_mask"][1:]]))


def test_shipped_weights_load_and_map_mprage() -> None:
    """The shipped weights (ship preset, protocol features v2) load and map an MP-RAGE T1w; the v1
    weights they replaced refuse MP-RAGE with a clear error (checked on a v1 configuration)."""
    from pinqi.cli.map import SHIPPED_WEIGHTS

    model, config, _ = load_w2q(SHIPPED_WEIGHTS)
    assert config.model.protocol_version == 2
    seq, types = _protocol(2)
    seq = torch.cat([seq, torch.zeros(2, 3, 2)], -1)
    images = MultiContrastSignal(seq, types)(_maps(2, 16, torch.Generator().manual_seed(0))) * 100
    mask = torch.ones(2, 16, 16, dtype=torch.bool)
    seq[0, 0] = torch.tensor([2.3, 0.003, 0.9, 9.0, 0.007, 176.0])
    types[0, 0] = 3
    images = MultiContrastSignal(seq, types)(_maps(2, 16, torch.Generator().manual_seed(0))) * 100
    with torch.no_grad():
        out = model(images, seq, types, mask).final
    assert torch.isfinite(out).all()
    legacy = W2Q(config.model.replace(protocol_version=1))
    with pytest.raises(ValueError, match="predate MP-RAGE"):
        legacy(images, seq, types, mask)


def test_fit_uncertainty_scales_with_the_noise() -> None:
    """The curvature std is proportional to the residual noise and larger for a weaker prior."""
    from pinqi.w2q.uncertainty import fit_uncertainty

    seq, types = _protocol(1, torch.float64)
    signal = MultiContrastSignal(seq, types)
    u = to_log_maps(_maps(1, 8, torch.Generator().manual_seed(1), torch.float64))
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    weight = torch.ones(1, 3, 8, 8, dtype=torch.float64)

    def model(v: torch.Tensor) -> torch.Tensor:
        return signal(from_log_maps(v))

    lam = torch.full((3,), 1e-3, dtype=torch.float64)
    small = fit_uncertainty(model, model(u) + 0.001 * noise, u, lam, weight)
    large = fit_uncertainty(model, model(u) + 0.01 * noise, u, lam, weight)
    torch.testing.assert_close(large, 10 * small)
    assert bool((small > 0).all())
    assert bool((fit_uncertainty(model, model(u) + 0.01 * noise, u, lam * 1e3, weight) < large).all())


def test_banded_protocols_hold_out_the_middle_band() -> None:
    anatomy = load_anatomy("phantom", "train", shape=(8, 8))
    train = BandedProtocolDataset(anatomy, length=1, image_size=8, held_out=(0.4, 0.6), part="train")
    test = BandedProtocolDataset(anatomy, length=1, image_size=8, held_out=(0.4, 0.6), part="held_out")
    pr = train.protocols
    for data, inside in ((train, False), (test, True)):
        for seed in range(40):
            seq, types = data.draw_protocol(torch.Generator().manual_seed(seed))
            tr_range = pr.t2w_tr
            f = (float(seq[1, 0]) - tr_range[0]) / (tr_range[1] - tr_range[0])
            assert (0.4 <= f <= 0.6) == inside and 0 <= f <= 1
            assert types.tolist()[1:] == [0, 2]


def test_contrast_availability_never_empty() -> None:
    avail = contrast_availability(400, 3, 0.5, torch.Generator().manual_seed(0))
    assert avail.any(1).all()
    dropped = (~avail.all(1)).float().mean()
    assert 0.4 < dropped < 0.6


def test_map_metrics() -> None:
    target = torch.full((1, 3, 4, 4), 2.0)
    pred = target * 1.1
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    m = map_metrics(pred, target, mask, PARAMETERS)
    assert m["t1"]["mpe"] == pytest.approx(10.0) and m["t1"]["mape"] == pytest.approx(10.0)
    assert m["pd"]["mae"] == pytest.approx(0.2) and m["t2"]["psnr"] == pytest.approx(20.0)


def test_training_resume_and_trained_marker(tmp_path) -> None:
    config = load_w2q_config("micro")
    assert config.model.n_iterations == 1 and config.total_steps == 3
    full = W2QTrainer(config, tmp_path / "a", progress=False)
    full.run()
    half = W2QTrainer(config, tmp_path / "b", progress=False)
    half.run(stop_after=2)
    with pytest.raises(ValueError, match="not a trained W2Q model"):
        load_w2q(tmp_path / "b" / "checkpoint.pt")
    resumed = W2QTrainer(config, tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 2
    resumed.run()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    model, cfg, payload = load_w2q(tmp_path / "b" / "checkpoint.pt")
    assert payload["trained"] is True and payload["step"] == 3 and set(json.loads(payload["validation"])) == {"pd", "t1", "t2"}
    lines = (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="different configuration"):
        W2QTrainer(config.replace(lr=1.0), tmp_path / "b", resume=True, progress=False)


def test_init_from_copies_the_learned_lambdas_only_when_asked(tmp_path) -> None:
    config = load_w2q_config("micro")
    source = W2QTrainer(config, tmp_path / "src", progress=False)
    source.run()
    with torch.no_grad():
        source.model.raw_lambda.add_(1.0)  # make the source's λ distinct from any fresh start
    save = {"kind": "w2q", "config": json.dumps(config.to_dict()), "model": source.model.state_dict()}
    from pinqi.common.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "src.pt", save)
    fresh = W2QTrainer(config, tmp_path / "fresh", progress=False).model.raw_lambda.detach().clone()
    kept = W2QTrainer(config.replace(init_from=str(tmp_path / "src.pt")), tmp_path / "k", progress=False)
    reset = W2QTrainer(config.replace(init_from=str(tmp_path / "src.pt"), init_lambdas=False), tmp_path / "r",
                       progress=False)
    assert torch.equal(kept.model.raw_lambda, source.model.raw_lambda)
    assert torch.equal(reset.model.raw_lambda, fresh)
    name = next(k for k in source.model.state_dict() if k != "raw_lambda")
    assert torch.equal(reset.model.state_dict()[name], source.model.state_dict()[name])


def test_self_supervised_and_baseline_configs(tmp_path) -> None:
    config = load_w2q_config("micro", mode="self-supervised").replace(steps=1, pretrain_steps=1)
    trainer = W2QTrainer(config, tmp_path / "ss", progress=False)
    records = trainer.run(stop_after=2)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert [r["phase"] for r in records] == ["network", "full"]
    unet = load_w2q_config("micro", model_type="unet")
    assert unet.model.network == "plain" and unet.model.n_iterations == 0 and unet.steps == 0
    assert unet.pretrain_steps == load_w2q_config("micro").total_steps
    with pytest.raises(ValueError, match="model_type"):
        load_w2q_config("micro", model_type="resnet")
    val = build_dataset(config, "val", 1)
    assert val.part == "held_out"


def test_refinement_starts_as_identity_and_phase_schedule(phantom_batch: dict[str, torch.Tensor]) -> None:
    b = phantom_batch
    model = W2Q(W2QConfig(**{**TINY.to_dict(), "n_iterations": 2})).eval()
    with torch.no_grad():
        out = model(b["images"], b["sequence_params"], b["sequence_types"], b["brain_mask"])
    assert len(out.fits) == 2 and len(out.network) == 2
    assert torch.allclose(out.network[1], out.fits[0], rtol=1e-5)  # zero-initialised refinement head
    config = load_w2q_config("micro").replace(pretrain_steps=10, steps=20, warmup_steps=2, full_warmup_steps=5,
                                               lr=2e-3, lr_full=1e-3)
    assert phase_factor(1, config, True) == pytest.approx(1.0)
    assert phase_factor(10, config, True) == pytest.approx(0.2 * 0.5)  # fresh warm-up at the full phase
    assert phase_factor(10, config, False) == pytest.approx(0.2)
    assert phase_factor(14, config, True) == pytest.approx(0.5)


def test_fit_state_is_built_by_the_network() -> None:
    from pinqi.w2q.networks import FIT_STATE_T2_UNIT, W2QNet

    net = W2QNet(13, 3, (8, 16), 8, 4)
    p = torch.tensor([0.7, 1.2, 0.08]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    residual = torch.zeros(2, 3, 4, 4)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    state = net.fit_state(p, residual, mask)
    assert state.shape == (2, net.fit_channels, 4, 4)
    torch.testing.assert_close(state[0, :3, 0, 0], torch.tensor([0.7, math.log(1.2), math.log(0.08 / FIT_STATE_T2_UNIT)]))
