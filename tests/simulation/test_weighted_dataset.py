"""WeightedImageDataset: shapes, determinism, protocols, image formation."""

from __future__ import annotations

import math

import pytest
import torch

from simulation.anatomy import load_anatomy
from simulation.augmentation import AugmentationConfig
from simulation.mprage import MPRAGE
from simulation.tissues import TISSUE_RANGES
from simulation.weighted_dataset import SEQUENCE_TYPES, ProtocolRanges, WeightedImageDataset, water_weighted_relaxation


@pytest.fixture(scope="module")
def anatomy():
    return load_anatomy("phantom", "train", shape=(32, 32), n_slices=3)


def test_shapes_dtypes_and_determinism(anatomy):
    ds = WeightedImageDataset(anatomy, length=6, seed=5, image_size=24)
    s = ds[2]
    assert s["images"].shape == (3, 24, 24) and s["images"].dtype == torch.float32
    assert s["sequence_params"].shape == (3, 6) and s["sequence_params"].dtype == torch.float32
    assert s["fractions"].shape == (3, 24, 24) and float(s["fractions"].sum(0).max()) <= 1 + 1e-5
    assert s["sequence_types"].shape == (3,) and s["sequence_types"].dtype == torch.long
    assert s["params"].shape == (3, 24, 24) and s["params"].dtype == torch.float32
    assert s["brain_mask"].shape == (24, 24) and s["brain_mask"].dtype == torch.bool
    assert s["scale"].shape == (3,) and s["sigma"].shape == (3,)
    again = WeightedImageDataset(anatomy, length=6, seed=5, image_size=24)[2]
    for k in s:
        assert torch.equal(s[k], again[k]), k
    other = ds[3]
    assert not torch.equal(s["images"], other["images"])
    assert not torch.equal(s["sequence_params"], other["sequence_params"])
    assert not torch.equal(s["images"], WeightedImageDataset(anatomy, length=6, seed=6, image_size=24)[2]["images"])
    assert bool((s["images"] >= 0).all())
    with pytest.raises(IndexError):
        ds[6]


def test_protocols_within_ranges_and_both_t1w_kinds(anatomy):
    pr = ProtocolRanges()
    ds = WeightedImageDataset(anatomy, length=60, seed=0, image_size=8)
    kinds = set()
    for i in range(60):
        seq, types = ds.draw_protocol(torch.Generator().manual_seed(i))
        tr, te, ti, fa, tau, n = seq.T.tolist()
        kind = SEQUENCE_TYPES[types[0]]
        kinds.add(kind)
        if kind == "mprage":
            assert pr.mprage_tr[0] <= tr[0] <= pr.mprage_tr[1] and pr.mprage_ti[0] <= ti[0] <= pr.mprage_ti[1]
            assert pr.mprage_fa[0] <= fa[0] <= pr.mprage_fa[1] and pr.mprage_n[0] <= n[0] <= pr.mprage_n[1]
            assert 0 < tau[0] <= pr.mprage_tau[1] and te[0] < tau[0]
            MPRAGE(tr[0], te[0], ti[0], fa[0], tau[0], n[0])  # a consistent echo train
        elif kind == "spin_echo":
            assert pr.t1w_se_tr[0] <= tr[0] <= pr.t1w_se_tr[1] and pr.t1w_se_te[0] <= te[0] <= pr.t1w_se_te[1]
            assert fa[0] == 90.0
        else:
            assert kind == "spoiled_gre"
            assert pr.t1w_gre_tr[0] <= tr[0] <= pr.t1w_gre_tr[1]
            assert pr.t1w_gre_fa[0] <= fa[0] <= pr.t1w_gre_fa[1]
        assert SEQUENCE_TYPES[types[1]] == "spin_echo" and SEQUENCE_TYPES[types[2]] == "flair"
        assert pr.t2w_tr[0] <= tr[1] <= pr.t2w_tr[1] and pr.t2w_te[0] <= te[1] <= pr.t2w_te[1]
        assert pr.flair_ti[0] <= ti[2] <= pr.flair_ti[1] and ti[1] == 0.0 and (ti[0] == 0.0) == (kind != "mprage")
        assert pr.flair_tr[0] <= tr[2] <= pr.flair_tr[1]
    assert kinds == {"spin_echo", "spoiled_gre", "mprage"}
    only_se = WeightedImageDataset(anatomy, length=5, image_size=8,
                                   protocols=ProtocolRanges(t1w_gre_prob=0.0, t1w_mprage_prob=0.0))
    assert all(int(only_se[i]["sequence_types"][0]) == 0 for i in range(5))


def test_protocol_ranges_validation():
    with pytest.raises(ValueError, match="flair_ti"):
        ProtocolRanges(flair_ti=(1.0, 7.0))
    with pytest.raises(ValueError, match="t2w_te"):
        ProtocolRanges(t2w_te=(0.2, 0.1))
    with pytest.raises(ValueError, match="t1w_gre_prob"):
        ProtocolRanges(t1w_gre_prob=2.0)
    with pytest.raises(ValueError, match="t1w_mprage_prob"):
        ProtocolRanges(t1w_gre_prob=0.6, t1w_mprage_prob=0.6)
    with pytest.raises(ValueError, match="partial_volume"):
        WeightedImageDataset(load_anatomy("phantom", "train", shape=(8, 8)), partial_volume="voxels")


def test_images_follow_signal_models_up_to_scale(anatomy):
    aug = AugmentationConfig(bias_max_log=0.0)
    ds = WeightedImageDataset(anatomy, length=4, seed=1, image_size=32, augmentation=aug, partial_volume="maps",
                              protocols=ProtocolRanges(noise_rel=(0.0, 0.0)), dtype=torch.float64)
    for i in range(4):
        s = ds[i]
        clean = ds.signal(s["params"][None], s["sequence_params"], s["sequence_types"])[0].abs()
        torch.testing.assert_close(s["images"], clean * s["scale"][:, None, None], rtol=1e-10, atol=1e-12)
        assert bool((s["sigma"] == 0).all())
        # an independent closed form for the T2w spin echo
        pd, t1, t2 = s["params"]
        tr, te = s["sequence_params"][1, :2].tolist()
        expected = pd * (1 - torch.exp(-tr / t1)) * torch.exp(-te / t2) * s["scale"][1]
        torch.testing.assert_close(s["images"][1], expected)


def test_physical_partial_volumes_add_tissue_signals(anatomy):
    """signal = sum_k f_k q(tissue_k), which differs from the signal of the mixed maps in partial volumes."""
    aug = AugmentationConfig(bias_max_log=0.0, t1_max_rel=0.0)
    kw = dict(length=3, seed=4, image_size=32, augmentation=aug, protocols=ProtocolRanges(noise_rel=(0.0, 0.0)),
              dtype=torch.float64)
    physical = WeightedImageDataset(anatomy, **kw)
    mixed = WeightedImageDataset(anatomy, partial_volume="maps", **kw)
    for i in range(3):
        s, m = physical[i], mixed[i]
        torch.testing.assert_close(s["params"], m["params"])
        f = s["fractions"]
        partial = (f.amax(0) < 0.7) & s["brain_mask"]
        assert int(partial.sum()) > 5
        assert float((s["images"][:, partial] - m["images"][:, partial]).abs().max()) > 1e-3
        # by hand: the fraction-weighted sum of each class's signal
        g = torch.Generator().manual_seed(0)
        values = torch.tensor([[4.0, 1.8, 1.0], [1.3, 0.09, 0.8], [0.85, 0.07, 0.7]])
        frac = torch.rand(3, 2, 2, generator=g, dtype=torch.float64) / 3
        got = physical.tissue_signal_sum(values, frac, torch.zeros(2, 2, 2), s["sequence_params"], s["sequence_types"])
        one = torch.ones(1, 1, 2, 2, dtype=torch.float64)
        want = sum(frac[k] * physical.signal(torch.cat([v * one for v in values[k].double()[[2, 0, 1]]], 1),
                                             s["sequence_params"], s["sequence_types"])[0] for k in range(3))
        torch.testing.assert_close(got, want)


def test_water_weighted_relaxation_closed_form():
    # (T1 [s], T2 [s], PD) of CSF, GM, WM; one voxel of 97 % GM + 3 % CSF, one pure WM, one empty
    values = torch.tensor([[4.0, 1.8, 1.0], [1.3, 0.09, 0.8], [0.85, 0.07, 0.7]], dtype=torch.float64)
    frac = torch.tensor([[0.03, 0.0, 0.0], [0.97, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)[:, None, :]
    fallback = torch.full((1, 3), 7.0, dtype=torch.float64)
    t1, t2 = water_weighted_relaxation(values, frac, fallback, fallback)
    w_csf, w_gm = 0.03 * 1.0 / (0.03 + 0.97 * 0.8), 0.97 * 0.8 / (0.03 + 0.97 * 0.8)
    assert t2[0, 0].item() == pytest.approx(1 / (w_csf / 1.8 + w_gm / 0.09), rel=1e-12)
    assert t1[0, 0].item() == pytest.approx(1 / (w_csf / 4.0 + w_gm / 1.3), rel=1e-12)
    # 3 % CSF moves the rate-weighted T2 by under 4 %; the fraction-weighted label by over 50 %
    assert 0.09 < t2[0, 0].item() < 0.0935 and 0.03 * 1.8 + 0.97 * 0.09 > 0.135
    assert (t1[0, 1].item(), t2[0, 1].item()) == pytest.approx((0.85, 0.07), rel=1e-12)
    assert (t1[0, 2].item(), t2[0, 2].item()) == (7.0, 7.0)


def test_water_rate_targets_change_only_mixed_voxels(anatomy):
    kw = dict(length=2, seed=3, image_size=32, protocols=ProtocolRanges(noise_rel=(0.0, 0.0)), dtype=torch.float64)
    plain = WeightedImageDataset(anatomy, **kw)
    rates = WeightedImageDataset(anatomy, relaxation_targets="water_rates", **kw)
    for i in range(2):
        a, b = plain[i], rates[i]
        torch.testing.assert_close(a["images"], b["images"])
        torch.testing.assert_close(a["params"][0], b["params"][0])
        pure = a["fractions"].amax(0) > 0.999
        torch.testing.assert_close(a["params"][1:, pure], b["params"][1:, pure], rtol=1e-3, atol=1e-6)
        mixed = (a["fractions"].amax(0) < 0.7) & a["brain_mask"]
        assert float((a["params"][2, mixed] - b["params"][2, mixed]).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="relaxation_targets"):
        WeightedImageDataset(anatomy, relaxation_targets="rates")


def test_bias_and_noise_are_bounded(anatomy):
    pr = ProtocolRanges()
    ds = WeightedImageDataset(anatomy, length=3, seed=2, image_size=32, protocols=pr, fov_mm=56.0)
    nb = WeightedImageDataset(anatomy, length=3, seed=2, image_size=32, fov_mm=56.0,
                              protocols=ProtocolRanges(noise_rel=(0.0, 0.0)),
                              augmentation=AugmentationConfig(bias_max_log=0.0))
    noise_free = WeightedImageDataset(anatomy, length=3, seed=2, image_size=32, fov_mm=56.0,
                                      protocols=ProtocolRanges(noise_rel=(0.0, 0.0)))
    for i in range(3):
        s, ref = ds[i], nb[i]
        assert bool((s["scale"] >= pr.scale[0]).all() and (s["scale"] <= pr.scale[1]).all())
        # σ relative to the mean noise-free, bias-free signal in the brain
        level = (ref["images"] / ref["scale"][:, None, None])[:, s["brain_mask"]].mean(-1)
        rel = s["sigma"] / (s["scale"] * level)
        assert bool((rel >= pr.noise_rel[0] - 1e-6).all() and (rel <= pr.noise_rel[1] + 1e-6).all())
        # in air the image is pure Rician noise: mean ≈ σ sqrt(pi/2)
        air = s["params"][0] < 1e-5
        assert int(air.sum()) > 50
        for c in range(3):
            m = float(s["images"][c][air].mean())
            rayleigh_mean = float(s["sigma"][c]) * math.sqrt(math.pi / 2)
            assert 0.6 * rayleigh_mean < m < 1.5 * rayleigh_mean
        # noise-free twins with and without bias: their ratio is the bias field, within exp(±0.3)
        nf = noise_free[i]
        inside = s["brain_mask"] & (ref["images"].amin(0) > 1e-3)
        ratio = (nf["images"] / ref["images"].clamp_min(1e-6))[:, inside]
        assert float(ratio.min()) >= math.exp(-0.3) - 1e-4 and float(ratio.max()) <= math.exp(0.3) + 1e-4
        assert float(ratio.std()) > 1e-3
        # the reported bias field is that ratio, and the same for the noisy sample
        torch.testing.assert_close(ratio, nf["bias"][:, inside], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s["bias"], nf["bias"])
        assert s["bias"].shape == (3, 32, 32) and torch.equal(ref["bias"], torch.ones_like(ref["bias"]))


def test_targets_within_tissue_ranges(anatomy):
    ds = WeightedImageDataset(anatomy, length=5, seed=3, image_size=32)
    t1_lo = min(TISSUE_RANGES[n].t1[0] for n in anatomy.class_names) * 0.9
    t1_hi = max(TISSUE_RANGES[n].t1[1] for n in anatomy.class_names) * 1.1
    t2_lo = min(TISSUE_RANGES[n].t2[0] for n in anatomy.class_names) * 0.9
    t2_hi = max(TISSUE_RANGES[n].t2[1] for n in anatomy.class_names) * 1.1
    for i in range(5):
        s = ds[i]
        pd, t1, t2 = s["params"]
        b = s["brain_mask"]
        assert int(b.sum()) > 100
        assert float(t1[b].min()) >= t1_lo - 1e-4 and float(t1[b].max()) <= t1_hi + 1e-4
        assert float(t2[b].min()) >= t2_lo * 0.5 and float(t2[b].max()) <= t2_hi + 1e-4
        assert float(pd.min()) >= 0 and float(pd.max()) <= 1.0 + 1e-6
