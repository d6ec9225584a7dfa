"""``pinqi map`` end to end on tiny NIfTI volumes with BIDS sidecars written here, and refusals."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli.map import SHIPPED_WEIGHTS, Protocol, outside_training, read_protocol, run_map
from pinqi.common.checkpoint import save_checkpoint
from pinqi.w2q.config import load_w2q_config
from pinqi.w2q.model import W2Q
from pinqi.w2q.protocols import trained_ranges
from pinqi.w2q.signal import MultiContrastSignal
from simulation import load_anatomy

SHAPE = (16, 16, 2)
# an oblique-free but flipped (LPS-like) affine with 2 mm voxels: exercises the RAS reorientation
AFFINE = np.array([[-2.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
MPRAGE_SIDECAR = {"RepetitionTimePreparation": 2.3, "RepetitionTimeExcitation": 0.007, "EchoTime": 0.003,
                  "InversionTime": 0.9, "FlipAngle": 9, "NumberShots": 176, "PulseSequenceType": "MPRAGE"}
SIDECARS = {
    "T1w": {"RepetitionTime": 0.02, "EchoTime": 0.004, "FlipAngle": 20, "SequenceType": "GRE"},
    "T2w": {"RepetitionTime": 5.0, "EchoTime": 0.1, "ScanningSequence": "SE"},
    "FLAIR": {"RepetitionTime": 9.0, "EchoTime": 0.12, "InversionTime": 2.4, "ScanningSequence": "SE_IR"},
}


def _write_tiny_checkpoint(path: Path, trained: bool = True, model_type: str = "w2q") -> Path:
    """Tiny micro-preset weights (random init), marked as trained unless told otherwise."""
    config = load_w2q_config("micro", model_type=model_type)
    torch.manual_seed(0)
    model = W2Q(config.model)
    save_checkpoint(path, {
        "kind": "w2q", "model_type": model_type, "config": json.dumps(config.to_dict()), "model": model.state_dict(),
        "step": config.total_steps if trained else 0, "trained": trained,
        "validation": json.dumps({"t1": {"mape": 1.0}}) if trained else "",
    })
    return path


def _volumes() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weighted images of a two-tissue object (white-matter-like core, grey-matter-like rim)."""
    yy, xx = np.mgrid[:16, :16]
    r = np.hypot(yy - 7.5, xx - 8.5)
    mask2d = r < 6.5
    pd = np.where(r < 3.5, 0.7, 0.85)
    t1 = np.where(r < 3.5, 1.1, 1.6)
    t2 = np.where(r < 3.5, 0.08, 0.1)
    p = torch.tensor(np.stack([pd, t1, t2]))[None].float()
    out = {}
    for i, (name, side) in enumerate(SIDECARS.items()):
        seq = torch.tensor([[[side["RepetitionTime"], side["EchoTime"], side.get("InversionTime", 0.0), side.get("FlipAngle", 90.0),
                              0.0, 0.0]]])
        kind = {"T1w": 1, "T2w": 0, "FLAIR": 2}[name]
        img = MultiContrastSignal(seq, torch.tensor([[kind]]))(p)[0, 0].numpy() * 1000.0 * (i + 1)
        img = np.where(mask2d, img, 0.0)
        out[name] = np.stack([img, img * 0.9], axis=-1).astype(np.float32)
    mask = np.stack([mask2d, mask2d & (xx < 12)], axis=-1)  # asymmetric: checks the orientation round trip
    return out, mask


def _write_inputs(folder: Path, sidecars: dict | None = None, affine: np.ndarray = AFFINE) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    vols, mask = _volumes()
    paths = {}
    for name, data in vols.items():
        path = folder / f"sub-01_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        side = (sidecars or SIDECARS)[name]
        if side is not None:
            (folder / f"sub-01_{name}.json").write_text(json.dumps(side))
        paths[name] = path
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(folder / "mask.nii.gz"))
    paths["mask"] = folder / "mask.nii.gz"
    return paths


def _args(paths: dict[str, Path], out: Path, checkpoint: Path | None, **extra) -> argparse.Namespace:
    values = {"t1w": paths.get("T1w"), "t2w": paths.get("T2w"), "flair": paths.get("FLAIR"),
              "brain_mask": paths.get("mask"), "checkpoint": checkpoint, "out": out, "no_progress": True}
    values.update(extra)
    return argparse.Namespace(**values)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return _write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "w2q.pt")


def test_map_end_to_end_through_cli(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from pinqi.cli import main

    paths = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["map", "--t1w", str(paths["T1w"]), "--t2w", str(paths["T2w"]), "--flair", str(paths["FLAIR"]),
                 "--brain-mask", str(paths["mask"]), "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert code == 0
    _, mask = _volumes()
    for name, units in (("T1map", "s"), ("T2map", "s"), ("PDmap", "arbitrary")):
        img = nib.load(str(out / f"sub-01_{name}.nii.gz"))
        data = np.asarray(img.dataobj)
        assert data.shape == SHAPE and data.dtype == np.float32
        np.testing.assert_allclose(img.affine, AFFINE)
        assert np.all(data[~mask] == 0) and np.all(data[mask] > 0)  # zero exactly outside the mask
        assert json.loads((out / f"sub-01_{name}.json").read_text())["Units"] == units
    t1 = np.asarray(nib.load(str(out / "sub-01_T1map.nii.gz")).dataobj)
    assert np.all((t1[mask] > 0.05) & (t1[mask] < 6.0))
    assert (out / "sub-01_W2Q_overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".tmp-*"))


def test_map_subset_of_contrasts_and_overrides(tmp_path: Path, tiny_checkpoint: Path) -> None:
    sidecars = dict(SIDECARS, T1w={"EchoTime": 0.004})  # TR, FA and type come from the command line
    paths = _write_inputs(tmp_path / "in", sidecars)
    paths.pop("FLAIR")
    written = run_map(_args(paths, tmp_path / "out", tiny_checkpoint, tr_t1w=0.02, fa_t1w=20.0, seq_t1w="spoiled_gre"))
    maps = {f"sub-01_{d}{m}.{e}" for d in ("", "desc-std_") for m in ("T1map", "T2map", "PDmap") for e in ("nii.gz", "json")}
    assert set(written) == maps | {"sub-01_W2Q_overview.png"}
    meta = json.loads((tmp_path / "out" / "sub-01_T1map.json").read_text())
    assert meta["SequenceParameters"]["t1w"] == {"tr": 0.02, "te": 0.004, "ti": 0.0, "fa": 20.0, "kind": "spoiled_gre",
                                                 "tau": 0.0, "n": 0.0}
    _, mask = _volumes()
    std = np.asarray(nib.load(str(tmp_path / "out" / "sub-01_desc-std_T1map.nii.gz")).dataobj)
    assert np.isfinite(std).all() and np.all(std[~mask] == 0) and np.all(std[mask] > 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"T2w": {"RepetitionTime": 5.0}}, r"missing sidecar keys \['EchoTime'\]"),
        ({"FLAIR": {"RepetitionTime": 9.0, "EchoTime": 0.12, "ScanningSequence": "EP"}}, "unknown sequence type"),
        ({"FLAIR": {"RepetitionTime": 9.0, "EchoTime": 0.12}}, r"missing sidecar keys \['InversionTime'\]"),
        ({"T2w": {"RepetitionTime": 5000.0, "EchoTime": 100.0}}, "looks like milliseconds"),
        ({"T1w": {"RepetitionTime": 20, "EchoTime": 4, "FlipAngle": 20, "SequenceType": "GRE"}}, "looks like milliseconds"),
        ({"T1w": {"RepetitionTime": 20, "EchoTime": 0.004, "FlipAngle": 20, "SequenceType": "GRE"}}, "looks like milliseconds"),
        ({"T1w": {"RepetitionTime": 0.02, "EchoTime": 0.004, "FlipAngle": 20}}, "missing the sequence type"),
        ({"T1w": {"RepetitionTime": 2.0, "EchoTime": 0.003, "InversionTime": 0.9, "FlipAngle": 9,
                  "ScanningSequence": "GR_IR"}}, r"missing sidecar keys \['RepetitionTimeExcitation', 'NumberShots'\]"),
        ({"T1w": dict(MPRAGE_SIDECAR, RepetitionTimeExcitation=7.0)}, "RepetitionTimeExcitation = 7 looks like milliseconds"),
        ({"T1w": dict(MPRAGE_SIDECAR, InversionTime=0.4)}, "TI must exceed"),
        ({"T1w": {"RepetitionTime": 0.02, "EchoTime": 0.004, "FlipAngle": 0.3, "SequenceType": "GRE"}}, "radians"),
        ({"T2w": {"RepetitionTime": 0.5, "EchoTime": 0.6}}, "TE must be shorter than TR"),
        ({"T2w": None}, r"missing sidecar keys \['RepetitionTime', 'EchoTime'\]"),
        ({"T2w": {"RepetitionTime": 9.0, "EchoTime": 0.1, "InversionTime": 2.0, "SequenceType": "flair"}}, "cannot fill the t2w slot"),
    ],
)
def test_bad_sidecars_refused(tmp_path: Path, tiny_checkpoint: Path, change: dict, message: str) -> None:
    paths = _write_inputs(tmp_path / "in", dict(SIDECARS, **change))
    with pytest.raises(ValueError, match=message):
        run_map(_args(paths, tmp_path / "out", tiny_checkpoint))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_mismatched_shapes_affines_and_no_input_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    paths = _write_inputs(tmp_path / "in")
    other = _write_inputs(tmp_path / "other")
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), shifted), str(other["T2w"]))
    with pytest.raises(ValueError, match="affine mismatch"):
        run_map(_args(dict(paths, T2w=other["T2w"]), tmp_path / "out", tiny_checkpoint))
    nib.save(nib.Nifti1Image(np.ones((16, 15, 2), np.float32), AFFINE), str(other["T2w"]))
    with pytest.raises(ValueError, match="shape mismatch"):
        run_map(_args(dict(paths, T2w=other["T2w"]), tmp_path / "out", tiny_checkpoint))
    nib.save(nib.Nifti1Image(np.ones((16, 16, 3), np.uint8), AFFINE), str(other["mask"]))
    with pytest.raises(ValueError, match="brain mask .* has shape"):
        run_map(_args(dict(paths, mask=other["mask"]), tmp_path / "out", tiny_checkpoint))
    with pytest.raises(ValueError, match="at least one of --t1w, --t2w, --flair"):
        run_map(_args({}, tmp_path / "out", tiny_checkpoint))


def test_untrained_or_foreign_checkpoints_refused(tmp_path: Path) -> None:
    paths = _write_inputs(tmp_path / "in")
    untrained = _write_tiny_checkpoint(tmp_path / "untrained.pt", trained=False)
    with pytest.raises(ValueError, match="not a trained W2Q model"):
        run_map(_args(paths, tmp_path / "out", untrained))
    baseline = _write_tiny_checkpoint(tmp_path / "unet.pt", model_type="unet")
    with pytest.raises(ValueError, match="baseline, not a W2Q model"):
        run_map(_args(paths, tmp_path / "out", baseline))
    save_checkpoint(tmp_path / "pinqi.pt", {"kind": "pinqi", "model": {}})
    with pytest.raises(ValueError, match="expected a 'w2q' checkpoint"):
        run_map(_args(paths, tmp_path / "out", tmp_path / "pinqi.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        run_map(_args(paths, tmp_path / "out", tmp_path / "junk.pt"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_read_protocol_defaults_and_training_ranges(tmp_path: Path) -> None:
    image = tmp_path / "x_T2w.nii.gz"
    (tmp_path / "x_T2w.json").write_text(json.dumps({"RepetitionTime": 4.0, "EchoTime": 0.09}))
    prot = read_protocol("t2w", image)
    assert (prot.tr, prot.te, prot.ti, prot.fa, prot.kind) == (4.0, 0.09, 0.0, 90.0, "spin_echo")
    assert outside_training("t2w", prot) == []
    short = read_protocol("t2w", image, {"EchoTime": 0.03})  # a short-TE "T2w": outside the training ranges
    assert outside_training("t2w", short) == ["TE 0.03 not in [0.06, 0.4]"]
    # clinical protocols are inside the ranges of the MP-RAGE-era weights, not all inside the legacy ones
    clinical = [("t1w", Protocol(0.005, 0.002, 0.0, 12.0, "spoiled_gre")), ("t1w", Protocol(0.25, 0.01, 0.0, 90.0, "spin_echo")),
                ("t2w", Protocol(3.0, 0.4, 0.0, 90.0, "spin_echo")), ("flair", Protocol(4.8, 0.12, 1.7, 90.0, "flair")),
                ("t1w", Protocol(2.3, 0.003, 0.9, 9.0, "mprage", 0.007, 176))]
    assert all(outside_training(c, p, trained_ranges(2)) == [] for c, p in clinical)
    assert outside_training("t1w", clinical[-1][1], trained_ranges(1)) == ["sequence type mprage (never seen in training)"]
    assert outside_training("flair", clinical[3][1], trained_ranges(1)) == ["TR 4.8 not in [6, 12]", "TI 1.7 not in [1.8, 3]"]


def test_mprage_from_bids_keys_warnings_and_strict(tmp_path: Path, tiny_checkpoint: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """MP-RAGE from RepetitionTimePreparation / RepetitionTimeExcitation / InversionTime / NumberShots and
    PulseSequenceType; command-line values override; outside the ranges a warning names the parameter,
    --strict refuses."""
    paths = _write_inputs(tmp_path / "in", dict(SIDECARS, T1w=MPRAGE_SIDECAR))
    prot = read_protocol("t1w", paths["T1w"])
    assert prot == Protocol(2.3, 0.003, 0.9, 9.0, "mprage", 0.007, 176.0)
    assert read_protocol("t1w", paths["T1w"], {"RepetitionTime": 2.0, "NumberShots": 160}).as_row() == \
        [2.0, 0.003, 0.9, 9.0, 0.007, 160.0]
    with caplog.at_level("WARNING", logger="pinqi"):  # (an untrained network segments no tissue to calibrate on)
        run_map(_args(paths, tmp_path / "out", tiny_checkpoint, calibrate="none"))
    assert not caplog.records
    slow = _write_inputs(tmp_path / "slow", dict(SIDECARS, T1w=dict(MPRAGE_SIDECAR, FlipAngle=15)))
    with caplog.at_level("WARNING", logger="pinqi"):
        run_map(_args(slow, tmp_path / "out2", tiny_checkpoint))
    assert "FA 15 not in [6, 12]" in caplog.text
    with pytest.raises(ValueError, match=r"FA 15 not in \[6, 12\].*--strict"):
        run_map(_args(slow, tmp_path / "out3", tiny_checkpoint, strict=True))
    assert not (tmp_path / "out3").exists() or not any((tmp_path / "out3").iterdir())


def test_shipped_weights_map_a_tiny_volume(tmp_path: Path) -> None:
    """`pinqi map` works out of the box: the shipped checkpoint loads, is trained, and maps 16x16x2."""
    assert SHIPPED_WEIGHTS.is_file(), f"{SHIPPED_WEIGHTS} is missing"
    paths = _write_inputs(tmp_path / "in")
    run_map(_args(paths, tmp_path / "out", None))
    t1 = np.asarray(nib.load(str(tmp_path / "out" / "sub-01_T1map.nii.gz")).dataobj)
    _, mask = _volumes()
    assert np.isfinite(t1).all() and np.all((t1[mask] > 0.05) & (t1[mask] < 6.0))


def _write_textbook_brain(folder: Path, subject: str, images: torch.Tensor, fr: torch.Tensor,
                          to_array: Callable[[torch.Tensor], np.ndarray], affine: np.ndarray) -> dict[str, Path]:
    """Write the textbook images ``(S, 3, Y, X)`` of ``tests.pinqi.w2q.test_calibration`` (spin-echo
    T1w/T2w, FLAIR of its PROTOCOL) as NIfTI with BIDS sidecars, and the brain mask of the fractions
    ``fr`` ``(S, K, Y, X)``; ``to_array`` turns ``(S, Y, X)`` slices into the stored array."""
    folder.mkdir()
    sidecars = {"T1w": {"RepetitionTime": 0.55, "EchoTime": 0.012, "ScanningSequence": "SE", "SequenceType": "SE"},
                "T2w": {"RepetitionTime": 5.0, "EchoTime": 0.11, "ScanningSequence": "SE"},
                "FLAIR": {"RepetitionTime": 9.0, "EchoTime": 0.12, "InversionTime": 2.4, "ScanningSequence": "SE_IR"}}
    paths = {}
    for i, name in enumerate(("T1w", "T2w", "FLAIR")):
        paths[name] = folder / f"{subject}_{name}.nii.gz"
        nib.save(nib.Nifti1Image(to_array(images[:, i]), affine), str(paths[name]))
        (folder / f"{subject}_{name}.json").write_text(json.dumps(sidecars[name]))
    paths["mask"] = folder / "mask.nii.gz"
    nib.save(nib.Nifti1Image(to_array((fr.sum(1) >= 0.5).double()).astype(np.uint8), affine), str(paths["mask"]))
    return paths


def test_shipped_weights_calibrate_a_brain_volume(tmp_path: Path) -> None:
    """`pinqi map` on 4 MNI152 slices (80², 2.9 mm: not the 64² training grid, so the native fit and the
    re-centring of the written maps run) with images from textbook spin-echo / FLAIR equations (not W2Q's
    models) and unknown receiver gains: by default the tissue calibration runs (recorded in the sidecar)
    and reads the pure-WM T1 within 5 % of 0.85 s; ``--calibrate none`` is the network alone."""
    from tests.pinqi.w2q.test_calibration import _mni_fractions, _textbook_images

    fr = _mni_fractions(4, 80)  # (S, K, Y, X) csf, gm, wm
    images = _textbook_images(fr, torch.tensor([1.7, 0.6, 3.1], dtype=torch.float64), torch.Generator().manual_seed(2))

    def to_array(v: torch.Tensor) -> np.ndarray:  # (S, Y, X) slices, Y anterior first -> RAS array (X, Y, Z)
        return np.ascontiguousarray(np.flip(v.numpy(), axis=1).transpose(2, 1, 0)).astype(np.float32)

    paths = _write_textbook_brain(tmp_path / "in", "sub-02", images, fr, to_array, np.diag([2.9, 2.9, 2.9, 1.0]))
    wm = to_array((fr[:, 2] > 0.95).double()) > 0.5
    t1 = {}
    for mode in ("tissue", "none"):
        out = tmp_path / mode
        run_map(_args(paths, out, None, calibrate=mode))
        t1[mode] = float(np.asarray(nib.load(str(out / "sub-02_T1map.nii.gz")).dataobj)[wm].mean())
        meta = json.loads((out / "sub-02_T1map.json").read_text())["IntensityCalibration"]
        assert meta["Method"].startswith(mode)
        if mode == "tissue":
            assert abs(meta["TissueValues"]["wm"]["T1"] / t1[mode] - 1) < 0.03  # the written maps carry it
    assert abs(t1["tissue"] / 0.85 - 1) < 0.05 < abs(t1["none"] / 0.85 - 1), t1
    assert meta == {"Method": "none (--calibrate none): the network's own calibration"}


def test_pinqi_map_at_1_mm_calibrates_grey_matter_through_its_corner(tmp_path: Path) -> None:
    """Two MNI152 slices at the template's 1 mm, stored slice-axis first (array axes S, A, R) with
    4 mm slices: the in-plane pixel size is read along R and A (1 mm), so grey matter joins the
    calibration through its corner (sidecar) and its pure-ROI T1 and T2 come out within 5 % of the
    literature values the textbook images were made from."""
    from tests.pinqi.w2q.test_calibration import _textbook_images

    anatomy = load_anatomy("mni152", "test")
    fr = anatomy.fractions[[anatomy.class_names.index(c) for c in ("csf", "gm", "wm")]][:, [4, 7]].transpose(0, 1).double()
    images = _textbook_images(fr, torch.tensor([1.7, 0.6, 3.1], dtype=torch.float64), torch.Generator().manual_seed(2))
    affine = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

    def to_array(v: torch.Tensor) -> np.ndarray:  # (S, Y, X) slices, Y anterior first -> array (S, A, R)
        return np.ascontiguousarray(np.flip(v.numpy(), axis=1)).astype(np.float32)

    paths = _write_textbook_brain(tmp_path / "in", "sub-03", images, fr, to_array, affine)
    run_map(_args(paths, tmp_path / "out", None))
    meta = json.loads((tmp_path / "out" / "sub-03_T1map.json").read_text())["IntensityCalibration"]
    assert "grey-matter corner" in meta["Method"] and set(meta["TissueValues"]) == {"csf", "gm", "wm"}
    gm = to_array((fr[:, 1] > 0.95).double()) > 0.5
    for name, truth in (("T1map", 1.30), ("T2map", 0.09)):
        value = float(np.asarray(nib.load(str(tmp_path / "out" / f"sub-03_{name}.nii.gz")).dataobj)[gm].mean())
        assert abs(value / truth - 1) < 0.05, (name, value)
