"""``pinqi reconstruct``: an ISMRMRD example scan in, BIDS NIfTI + sidecars + HDF5 + overview out, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.io.examples import write_example_scan
from simulation.tube_phantom import TABLE_I_T1


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    return write_example_scan(folder / "phantom.h5", "phantom", size=48, n_coils=4, acceleration=1, seed=2)


def test_baseline_writes_the_bids_set(scan, tmp_path: Path, capsys):
    out = tmp_path / "maps"
    assert main(["reconstruct", str(scan.path), "--out", str(out), "--baseline", "cg-sense"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["phantom_T1map.nii.gz", "phantom_T1map.json", "phantom_M0map.nii.gz", "phantom_M0map.json",
                            "phantom_maps.h5", "phantom_overview.png", "phantom_overview.pdf"])
    t1 = nib.load(str(out / "phantom_T1map.nii.gz"))
    assert t1.shape == (48, 48, 1)
    assert np.allclose(np.diag(t1.affine)[:3], [220 / 48, 220 / 48, 5.0])
    volume = np.asarray(t1.dataobj)[:, :, 0].T  # back to (Y, X)
    means = [volume[roi.numpy()].mean() for roi in scan.rois]
    assert np.sqrt(np.mean((np.array(means) - np.array(TABLE_I_T1)) ** 2)) < 0.015
    side = json.loads((out / "phantom_T1map.json").read_text())
    assert side["Units"] == "s" and side["SaturationTimes"] == [0.5, 1.0, 1.5, 2.0, 8.0]
    with h5py.File(out / "phantom_maps.h5") as f:
        m0 = torch.from_numpy(f["m0"][0])
    # prewhitening changes the unit and the normalised maps of whitened coils leave a smooth receive
    # modulation |W c(r)|: |M0| follows the truth up to that
    ratio = m0.abs()[scan.rois.any(0)] / torch.complex(scan.params[0], scan.params[1]).abs()[scan.rois.any(0)]
    assert float(ratio.std() / ratio.mean()) < 0.1
    assert "slice 1/1" in capsys.readouterr().err


def test_bad_input_is_one_line_and_writes_nothing(scan, tmp_path: Path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["reconstruct", str(scan.path), "--out", str(target), "--baseline", "cg-sense"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    out = tmp_path / "maps"
    assert main(["reconstruct", str(tmp_path / "missing.h5"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pinqi reconstruct: error:") and err.count("\n") == 1
    assert not out.exists() or list(out.iterdir()) == []


def test_a_model_trained_for_other_times_is_refused(scan, tmp_path: Path, capsys):
    from pinqi.config import micro_preset
    from pinqi.training import Trainer

    config = micro_preset().replace(steps=1, checkpoint_every=1, times=(0.3, 0.6, 1.0, 2.0, 5.0))
    Trainer(config, tmp_path / "run", progress=False).run()
    out = tmp_path / "maps"
    code = main(["reconstruct", str(scan.path), "--out", str(out), "--checkpoint", str(tmp_path / "run" / "checkpoint.pt")])
    assert code == 2
    assert "trained with saturation times [0.3, 0.6, 1.0, 2.0, 5.0] s; the data have [0.5, 1.0, 1.5, 2.0, 8.0] s" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_simulate_ismrmrd_then_reconstruct(tmp_path: Path):
    raw = tmp_path / "raw"
    assert main(["simulate", "--format", "ismrmrd", "--anatomy", "tubes", "--splits", "test", "--accelerations", "1",
                 "--n-per-acceleration", "1", "--size", "32", "--coils", "4", "--out", str(raw)]) == 0
    files = sorted(raw.iterdir())
    assert [p.name for p in files] == ["test_1x_000.h5"]
    assert main(["reconstruct", str(files[0]), "--out", str(tmp_path / "maps"), "--baseline", "cg-sense"]) == 0
    assert (tmp_path / "maps" / "test_1x_000_T1map.nii.gz").is_file()


def test_prior_strength_reaches_the_model_and_the_sidecar(scan, tmp_path: Path, capsys, monkeypatch):
    import pinqi.model

    seen = []
    original = pinqi.model.PINQI.forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("prior_strength"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pinqi.model.PINQI, "forward", spy)
    out = tmp_path / "maps"
    assert main(["reconstruct", str(scan.path), "--out", str(out), "--prior-strength", "0", "--no-progress"]) == 0
    assert seen == [0.0]
    assert json.loads((out / "phantom_T1map.json").read_text())["PriorStrength"] == [0.0]
    seen.clear()
    assert main(["reconstruct", str(scan.path), "--out", str(tmp_path / "auto"), "--no-progress"]) == 0
    chosen = json.loads((tmp_path / "auto" / "phantom_T1map.json").read_text())["PriorStrength"]
    assert seen[0] == 0.0 and chosen[0] in seen and chosen[0] in (1.0, 0.5, 0.25, 0.0)
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", str(scan.path), "--out", str(tmp_path / "m2"), "--prior-strength", "-1"])
    assert exit_info.value.code == 2
    assert "expected 'auto' or a finite number >= 0; got '-1'" in capsys.readouterr().err
