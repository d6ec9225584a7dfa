"""T1MappingDataset: determinism, shapes, forward model, noise, masks, maps; the benchmark --quick."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from operators import MultiCoilCartesianOp, MultiCoilNUFFTOp
from simulation.anatomy import load_anatomy
from simulation.augmentation import AugmentationConfig
from simulation.signal_models import SaturationRecovery
from simulation.t1_dataset import ABLATION_TIMES, T1MappingDataset, sample_seed
from simulation.tissues import TISSUE_RANGES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def anatomy():
    return load_anatomy("phantom", "train", shape=(32, 32), n_slices=4)


def _ds(anatomy, **kw):
    args = dict(length=8, seed=3, image_size=32, n_coils=3)
    args.update(kw)
    return T1MappingDataset(anatomy, **args)


def test_shapes_and_dtypes(anatomy):
    ds = _ds(anatomy)
    s = ds[0]
    assert s["kspace"].shape == (5, 3, 32, 32) and s["kspace"].dtype == torch.complex64
    assert s["mask"].shape == (5, 32, 32) and s["mask"].dtype == torch.bool
    assert s["csm"].shape == (3, 32, 32) and s["csm"].dtype == torch.complex64
    assert s["params"].shape == (3, 32, 32) and s["params"].dtype == torch.float32
    assert s["images"].shape == (5, 32, 32) and s["images"].dtype == torch.complex64
    assert s["brain_mask"].shape == (32, 32) and s["brain_mask"].dtype == torch.bool
    assert s["times"].dtype == torch.float32 and s["times"].tolist() == [0.5, 1.0, 1.5, 2.0, 8.0]
    assert s["sigma"].shape == () and s["acceleration"].shape == () and s["sigma"].dtype == torch.float32
    s8 = _ds(anatomy, times=ABLATION_TIMES, image_size=(32, 24), dtype=torch.complex128)[1]
    assert s8["kspace"].shape == (8, 3, 32, 24) and s8["kspace"].dtype == torch.complex128
    assert s8["params"].dtype == torch.float64
    assert len(ds) == 8
    with pytest.raises(IndexError):
        ds[8]


def test_deterministic_per_seed_and_index(anatomy):
    a, b = _ds(anatomy), _ds(anatomy)
    s1, s2 = a[5], b[5]
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert torch.equal(a[5]["kspace"], s1["kspace"])  # repeated call
    assert not torch.equal(a[4]["params"], s1["params"])
    assert not torch.equal(a[4]["mask"], s1["mask"])
    assert not torch.equal(_ds(anatomy, seed=4)[5]["kspace"], s1["kspace"])
    assert sample_seed(3, 5) == 3 * 1_000_003 + 5
    # the index, not the order of access, defines a sample
    c = _ds(anatomy)
    c[0], c[7]
    assert torch.equal(c[5]["kspace"], s1["kspace"])


def test_kspace_is_forward_model_plus_noise_on_samples(anatomy):
    ds = _ds(anatomy, length=4, noise_sigma=(0.01, 0.03), n_coils=4)
    for i in range(4):
        s = ds[i]
        k, mask = s["kspace"], s["mask"]
        assert 0.01 <= float(s["sigma"]) <= 0.03
        assert bool((k[~mask[:, None].expand_as(k)] == 0).all())  # zero where not sampled
        ref = MultiCoilCartesianOp(s["csm"][None], mask[None])(s["images"][None])[0]
        noise = (k - ref)[mask[:, None].expand_as(k)]
        assert noise.numel() > 500
        for part in (noise.real, noise.imag):  # σ in the real and in the imaginary part
            assert abs(float(part.std()) / float(s["sigma"]) - 1) < 0.1
            assert abs(float(part.mean())) < 4 * float(s["sigma"]) / math.sqrt(noise.numel())
    # noise-free: exactly the operator (up to float rounding), also for odd sizes
    for size in (32, (31, 29)):
        s = _ds(anatomy, noise_sigma=0.0, image_size=size)[2]
        ref = MultiCoilCartesianOp(s["csm"][None], s["mask"][None])(s["images"][None])[0]
        torch.testing.assert_close(s["kspace"], ref, rtol=1e-5, atol=1e-6)


def test_images_are_saturation_recovery_of_params(anatomy):
    s = _ds(anatomy)[1]
    torch.testing.assert_close(s["images"], SaturationRecovery(s["times"])(s["params"][None])[0])


def test_coil_maps_normalised_in_object(anatomy):
    s = _ds(anatomy, n_coils=4)[2]
    m0 = torch.complex(s["params"][0], s["params"][1]).abs()
    obj = m0 > 0.2
    ssq = (s["csm"].abs() ** 2).sum(0)
    torch.testing.assert_close(ssq[obj], torch.ones_like(ssq[obj]), rtol=1e-4, atol=1e-4)
    assert not torch.equal(_ds(anatomy, n_coils=4)[3]["csm"], s["csm"])  # fresh maps per sample


@pytest.mark.parametrize("acc", [4, (2, 4, 8), [3, 5], (3.0, 6.0)])
def test_acceleration_honoured(anatomy, acc):
    ds = _ds(anatomy, length=8, acceleration=acc, image_size=48, n_coils=2)
    seen = set()
    for i in range(8):
        s = ds[i]
        r = float(s["acceleration"])
        seen.add(r)
        if isinstance(acc, tuple) and len(acc) == 2:
            assert acc[0] <= r <= acc[1]
        else:
            assert r in (acc if isinstance(acc, (list, tuple)) else (acc,))
        lines = s["mask"].any(-1)  # (T, Y)
        assert bool((s["mask"] == lines[..., None]).all())  # 1-D undersampling along Y
        n_lines = lines.sum(-1).double()
        assert bool(((48 / n_lines - r).abs() <= 0.25 * r).all()), (n_lines, r)
        assert bool(lines[:, 23:25].all())  # k-space centre always sampled
        assert len({tuple(line.tolist()) for line in lines}) > 1  # a different mask per time
    if not isinstance(acc, int):
        assert len(seen) > 1


def test_maps_inside_tissue_ranges_and_brain_mask(anatomy):
    ds = _ds(anatomy, length=6)
    names = anatomy.class_names
    t1_lo = min(TISSUE_RANGES[n].t1[0] for n in names) * 0.9
    t1_hi = max(TISSUE_RANGES[n].t1[1] for n in names) * 1.1
    pd_hi = max(TISSUE_RANGES[n].pd[1] for n in names) * math.exp(0.3)
    for i in range(6):
        s = ds[i]
        p, brain = s["params"], s["brain_mask"]
        assert bool(torch.isfinite(p).all())
        t1 = 1 / p[2]
        assert int(brain.sum()) > 200
        assert float(t1[brain].min()) >= t1_lo - 1e-4 and float(t1[brain].max()) <= t1_hi + 1e-4
        # background: T1 = 1 s up to the ±10 % polynomial
        m0 = torch.complex(p[0], p[1]).abs()
        air = m0 < 1e-3
        assert int(air.sum()) > 0
        assert float((t1[air] - 1).abs().max()) <= 0.1 + 0.02
        assert float(m0.max()) <= pd_hi + 1e-5
        # brain mask = where the tissue is, with M0 clearly above zero inside
        assert float(m0[brain].min()) > 0.2
        assert float(m0[~brain].mean()) < float(m0[brain].mean())
        # the phase varies: Im M0 is not identically zero
        assert float(p[1].abs().max()) > 0


def test_t1_polynomial_factor_within_ten_percent(anatomy):
    ds_aug = _ds(anatomy, length=3, augmentation=AugmentationConfig(geometric=False))
    ds_flat = _ds(anatomy, length=3, augmentation=AugmentationConfig(geometric=False, t1_max_rel=0.0))
    for i in range(3):
        ratio = ds_flat[i]["params"][2] / ds_aug[i]["params"][2]  # T1_aug / T1_flat
        assert float((ratio - 1).abs().max()) <= 0.1 + 1e-5
        assert float((ratio - 1).abs().max()) > 0  # it does vary


def test_radial_variant(anatomy):
    ds = _ds(anatomy, length=2, trajectory="radial", image_size=16, n_coils=2, n_spokes=6, n_readout=24,
             noise_sigma=0.0)
    s = ds[0]
    assert s["kspace"].shape == (5, 2, 6 * 24) and s["trajectory"].shape == (5, 2, 6 * 24)
    assert "mask" not in s
    assert float(s["trajectory"].abs().max()) <= math.pi
    ref = MultiCoilNUFFTOp(s["csm"][None], s["trajectory"][None])(s["images"][None])[0]
    torch.testing.assert_close(s["kspace"], ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(ds[0]["kspace"], s["kspace"])
    assert not torch.equal(ds[1]["trajectory"], s["trajectory"])  # random rotation per sample
    torch.testing.assert_close(s["acceleration"], torch.tensor(math.pi / 2 * 16 / 6))


def test_radial_works_in_dataloader_workers(anatomy):
    ds = _ds(anatomy, length=2, trajectory="radial", image_size=16, n_coils=2, n_spokes=4, n_readout=16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)))
    torch.testing.assert_close(batch["kspace"][1], ds[1]["kspace"], rtol=0, atol=0)


def test_cartesian_works_in_dataloader_workers(anatomy):
    ds = _ds(anatomy, length=2)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)))
    assert batch["kspace"].shape == (2, 5, 3, 32, 32)
    torch.testing.assert_close(batch["kspace"][1], ds[1]["kspace"], rtol=0, atol=0)


def test_bad_arguments(anatomy):
    with pytest.raises(ValueError, match="acceleration"):
        _ds(anatomy, acceleration=0.5)
    with pytest.raises(ValueError, match="noise_sigma"):
        _ds(anatomy, noise_sigma=(0.04, 0.001))
    with pytest.raises(ValueError, match="trajectory"):
        _ds(anatomy, trajectory="spiral")
    with pytest.raises(ValueError, match="times"):
        _ds(anatomy, times=(0.5, -1.0))
    with pytest.raises(TypeError, match="dtype"):
        _ds(anatomy, dtype=torch.float32)
    with pytest.raises(TypeError, match="Anatomy"):
        T1MappingDataset("phantom")


def test_benchmark_quick(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.simulation", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "samples/s" in out.stdout
    assert (tmp_path / "simulation.md").read_text().count("|") > 10
    assert (tmp_path / "simulation_samples.png").stat().st_size > 10_000


def test_realism_switches_off_leave_samples_unchanged(anatomy):
    plain, switched = _ds(anatomy)[2], _ds(anatomy, wide_t1=0.0, inserts=0.0, intensity_scale=(1, 1))[2]
    for key in plain:
        assert torch.equal(plain[key], switched[key]), key


def test_intensity_scale_and_phase_scale_everything_but_r1(anatomy):
    ref = _ds(anatomy, noise_sigma=0.0)[1]
    s = _ds(anatomy, noise_sigma=0.0, intensity_scale=(1e-3, 1e3), global_phase=True)[1]
    m0, m0_ref = torch.complex(s["params"][0], s["params"][1]), torch.complex(ref["params"][0], ref["params"][1])
    factor = (m0.flatten() @ m0_ref.flatten().conj()) / m0_ref.abs().square().sum()
    assert abs(abs(factor) - 1) > 1e-3  # a scale was drawn
    assert torch.allclose(m0, factor * m0_ref, rtol=1e-4, atol=1e-6 * m0.abs().max())
    assert torch.allclose(s["kspace"], factor * ref["kspace"], rtol=1e-4, atol=1e-6 * s["kspace"].abs().max())
    assert torch.equal(s["params"][2], ref["params"][2])


def test_wide_t1_and_inserts_leave_the_brain_ranges(anatomy):
    r1 = torch.cat([s["params"][2][s["brain_mask"]] for s in _ds(anatomy, wide_t1=1.0, inserts=1.0, length=6)])
    t1 = 1 / r1
    assert float(t1.min()) < 0.5 and float(t1.max()) > 2.0
    plain = torch.cat([s["params"][2][s["brain_mask"]] for s in _ds(anatomy, length=6)])
    assert float((1 / plain).min()) > 0.5


def test_estimated_coil_maps_target_what_the_maps_can_see(anatomy):
    """Fully sampled and noise-free, the SENSE image under the estimated maps is the γ-weighted target."""
    s = _ds(anatomy, estimated_csm=1.0, acceleration=1, noise_sigma=0.0)[0]
    assert not torch.allclose(s["csm"], s["csm_true"])
    op = MultiCoilCartesianOp(s["csm"][None], s["mask"][None])
    recon = op.H(s["kspace"][None])[0]
    inside = s["csm"].abs().square().sum(0) > 0.5
    err = (recon - s["images"])[:, inside].norm() / s["images"][:, inside].norm()
    assert err < 1e-4
    q = SaturationRecovery(s["times"])
    assert torch.allclose(q(s["params"][None])[0], s["images"], atol=1e-5)


def test_calibration_lines_and_espirit_maps(anatomy):
    s = _ds(anatomy, acceleration=8, calibration_lines=12, estimated_csm=1.0, csm_method="espirit")[0]
    lines = s["mask"].any(-1)  # (T, Y)
    longest = int(s["times"].argmax())
    assert bool(lines[longest, 16 - 6 : 16 + 6].all())
    assert int(lines[0].sum()) == 4  # the other contrasts keep their round(32 / 8) lines
    inner = (s["csm"].conj() * s["csm_true"]).sum(0).abs()[s["brain_mask"]]
    assert float(inner.mean()) > 0.95
