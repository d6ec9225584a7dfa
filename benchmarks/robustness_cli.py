"""File and command cases of the hostile-input harness (:mod:`benchmarks.robustness`), and a few
library cases of dtypes and foreign checkpoints: raw-data
reading (missing, empty, foreign, corrupt, truncated files; NaN k-space; times in ms),
reconstruction, and the ``pinqi`` verbs simulate, train, evaluate, reconstruct, map and demo.

A command case returns the ``argv`` of ``pinqi``; the harness runs :func:`pinqi.cli.main` and
expects exit status 2 with one line ``pinqi <verb>: error: ...`` matching ``expect``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from .robustness import register

SHIPPED_PINQI = Path(__file__).resolve().parent.parent / "pinqi" / "weights" / "pinqi_t1.pt"
NOT_READABLE = r"(?i)(not a|cannot|unable|could not|corrupt|truncated|unknown|expected|empty|signature|layout|hdf5)"


def _file(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


@functools.cache
def _scan_bytes() -> bytes:
    """A small ISMRMRD file of the nine-tube phantom (32x32, 4 coils, 5 times, 4x), as bytes."""
    import tempfile

    from pinqi.io.examples import write_example_scan

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.h5"
        write_example_scan(path, "phantom", size=32, n_coils=4, acceleration=4.0, calibration_lines=8)
        return path.read_bytes()


def scan(tmp: Path, name: str = "scan.h5") -> Path:
    """A fresh copy of the example ISMRMRD scan in ``tmp``."""
    return _file(tmp, name, _scan_bytes())


def _nifti(tmp: Path, name: str, data: np.ndarray, sidecar: dict | None = None) -> Path:
    import nibabel as nib

    path = tmp / name
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(path))
    if sidecar is not None:
        (tmp / name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def _read(path: Path, **kw: object) -> object:
    from pinqi.io import read_raw

    return read_raw(path, **kw)


# -- raw data ---------------------------------------------------------------------------------
@register("io", r"raw data file not found: .*missing.h5")
def read_raw_of_a_missing_file(tmp: Path) -> object:
    return _read(tmp / "missing.h5")


@register("io", NOT_READABLE)
def read_raw_of_an_empty_file(tmp: Path) -> object:
    return _read(_file(tmp, "empty.h5", b""))


@register("io", NOT_READABLE)
def read_raw_of_random_bytes(tmp: Path) -> object:
    return _read(_file(tmp, "noise.h5", np.random.default_rng(0).bytes(4096)))


@register("io", NOT_READABLE)
def read_raw_of_a_text_file(tmp: Path) -> object:
    return _read(_file(tmp, "notes.h5", b"saturation times 0.5 1 1.5 2 8\n"))


@register("io", NOT_READABLE)
def read_raw_of_a_truncated_ismrmrd_file(tmp: Path) -> object:
    return _read(_file(tmp, "cut.h5", _scan_bytes()[: len(_scan_bytes()) // 2]))


@register("io", NOT_READABLE)
def read_raw_of_a_foreign_hdf5(tmp: Path) -> object:
    path = tmp / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 4))
    return _read(path)


@register("io", r"is a folder; expected a raw data file")
def read_raw_of_a_directory(tmp: Path) -> object:
    return _read(tmp)


@register("io", r"(?i)(finite|nan)")
def read_raw_of_nan_kspace(tmp: Path) -> object:
    path = tmp / "nan.h5"
    kspace = np.ones((1, 3, 2, 8, 8), np.complex64)
    kspace[0, 1, 0, 2, 2] = np.nan
    with h5py.File(path, "w") as f:
        f["kspace"], f["mask"], f["times"] = kspace, np.ones((1, 3, 8, 8), bool), np.array([[0.5, 1.0, 3.0]], np.float32)
    return _read(path)


@register("io", r"must be in seconds.*look like milliseconds")
def read_raw_with_times_in_ms(tmp: Path) -> object:
    return _read(scan(tmp), times=[500, 1000, 1500, 2000, 8000])


@register("io", r"(?i)(5|count|contrasts)")
def read_raw_with_too_few_times(tmp: Path) -> object:
    return _read(scan(tmp), times=[0.5, 1.0])


@register("reconstruct", r"(?i)saturation times")
def reconstruct_with_a_model_of_other_times(tmp: Path) -> object:
    from pinqi.reconstruction import reconstruct
    from pinqi.training import load_pinqi

    raw = _read(scan(tmp), times=[0.3, 0.6, 1.2, 2.4, 6.0])
    return reconstruct(raw, load_pinqi(SHIPPED_PINQI))


@register("reconstruct", r"csm is all zero")
def reconstruct_with_all_zero_coil_maps(tmp: Path) -> object:
    from pinqi.reconstruction import reconstruct

    raw = _read(scan(tmp))
    return reconstruct(raw, baseline="cg-sense", csm=torch.zeros(raw.kspace.shape[0], *raw.kspace.shape[2:],
                                                                  dtype=torch.complex64))


# -- the command ------------------------------------------------------------------------------
@register("cli", r"--size: must be >= 1", cli=True)
def simulate_size_zero(tmp: Path) -> list:
    return ["simulate", "--out", tmp / "data", "--size", "0"]


@register("cli", r"--out .* exists and is not a folder", cli=True)
def simulate_out_is_a_file(tmp: Path) -> list:
    return ["simulate", "--out", _file(tmp, "taken", b"x")]


@register("cli", r"looks like milliseconds", cli=True)
def simulate_times_in_ms(tmp: Path) -> list:
    return ["simulate", "--out", tmp / "data", "--times", "500", "1000", "2000"]


@register("cli", r"--accelerations: must be >= 1", cli=True)
def simulate_acceleration_below_one(tmp: Path) -> list:
    return ["simulate", "--out", tmp / "data", "--accelerations", "0.5"]


@register("cli", r"(?i)(cannot create|not writable|not a folder)", cli=True)
def simulate_out_below_a_file(tmp: Path) -> list:
    return ["simulate", "--out", _file(tmp, "taken", b"x") / "data"]


CONFIG_FILES = {  # pinqi train --config FILE: name -> (file content, expected message)
    "unknown_key": ('{"stepz": 3}', r"unknown key 'stepz'; allowed keys"),
    "checkpoint_every_zero": ('{"checkpoint_every": 0}', r"checkpoint_every must be an integer >= 1; got 0"),
    "batch_size_zero": ('{"batch_size": 0}', r"batch_size must be an integer >= 1; got 0"),
    "unknown_choice": ('{"model": {"fit_mode": "newton"}}', r"fit_mode must be one of"),
    "wrong_type": ('{"model": {"n_iterations": "3"}}', r"model.n_iterations must be an integer"),
    "not_json": ("{steps: 3", r"is not valid JSON"),
    "w2q_batch_size_zero": ('{"batch_size": 0}', r"batch_size must be an integer >= 1; got 0"),
    "w2q_not_an_object": ("[1]", r"the file must be a JSON object; got a list"),
    "w2q_unknown_model_key": ('{"model": {"zzz": 1}}', r"unknown key 'model.zzz'; allowed keys"),
}


def _config_case(name: str, text: str) -> Callable[[Path], list]:
    task = ["--task", "w2q"] if name.startswith("w2q") else []

    def case(tmp: Path) -> list:
        return ["train", *task, "--config", _file(tmp, "c.json", text.encode()), "--out", tmp / "run", "--no-progress"]

    case.__name__ = f"train_config_{name}"
    return case


for _name, (_text, _expect) in CONFIG_FILES.items():
    register("cli", _expect, cli=True)(_config_case(_name, _text))


@register("cli", r"allowed: cpu, gpu, micro, paper, ship", cli=True)
def train_unknown_preset(tmp: Path) -> list:
    return ["train", "--preset", "huge", "--out", tmp / "run"]


@register("cli", r"--steps: must be >= 0", cli=True)
def train_negative_steps(tmp: Path) -> list:
    return ["train", "--steps", "-1", "--out", tmp / "run"]


@register("cli", r"checkpoint .* does not exist", cli=True)
def evaluate_missing_checkpoint(tmp: Path) -> list:
    return ["evaluate", tmp / "none.pt", "--data", tmp / "none.h5", "--out", tmp / "eval"]


@register("cli", r"bad.pt is not a readable checkpoint \(corrupt", cli=True)
def evaluate_corrupt_checkpoint(tmp: Path) -> list:
    return ["evaluate", _file(tmp, "bad.pt", b"not a checkpoint"), "--data", _file(tmp, "d.h5", b"x"), "--out", tmp / "e"]


@register("cli", r"--data .*test.h5 is not a readable test set", cli=True)
def evaluate_corrupt_test_set(tmp: Path) -> list:
    return ["evaluate", SHIPPED_PINQI, "--data", _file(tmp, "test.h5", b"\x89HDF\r\n\x1a\n garbage"), "--out", tmp / "e"]


@register("cli", r"--batch-size: must be >= 1", cli=True)
def evaluate_batch_size_zero(tmp: Path) -> list:
    return ["evaluate", SHIPPED_PINQI, "--data", tmp / "test.h5", "--batch-size", "0"]


@register("cli", NOT_READABLE, cli=True)
def reconstruct_truncated_raw(tmp: Path) -> list:
    return ["reconstruct", _file(tmp, "cut.h5", _scan_bytes()[:5000]), "--out", tmp / "maps"]


@register("cli", r"raw data file not found: .*missing.h5", cli=True)
def reconstruct_missing_raw(tmp: Path) -> list:
    return ["reconstruct", tmp / "missing.h5", "--out", tmp / "maps"]


@register("cli", r"--out .* exists and is not a folder", cli=True)
def reconstruct_out_is_a_file(tmp: Path) -> list:
    return ["reconstruct", scan(tmp), "--out", _file(tmp, "taken", b"x")]


@register("cli", r"must be in seconds.*look like milliseconds", cli=True)
def reconstruct_times_in_ms(tmp: Path) -> list:
    return ["reconstruct", scan(tmp), "--out", tmp / "maps", "--times", "500", "1000", "1500", "2000", "8000"]


@register("cli", r"bad.pt is not a readable checkpoint \(corrupt", cli=True)
def reconstruct_corrupt_checkpoint(tmp: Path) -> list:
    return ["reconstruct", scan(tmp), "--out", tmp / "maps", "--checkpoint", _file(tmp, "bad.pt", b"\0" * 64)]


@register("cli", r"give at least one of --t1w, --t2w, --flair", cli=True)
def map_without_inputs(tmp: Path) -> list:
    return ["map", "--out", tmp / "maps"]


@register("cli", r"does not exist", cli=True)
def map_missing_image(tmp: Path) -> list:
    return ["map", "--t2w", tmp / "none_T2w.nii.gz", "--out", tmp / "maps"]


@register("cli", r"not a readable NIfTI", cli=True)
def map_corrupt_nifti(tmp: Path) -> list:
    return ["map", "--t2w", _file(tmp, "x_T2w.nii.gz", b"garbage"), "--out", tmp / "maps"]


@register("cli", r"non-finite voxels", cli=True)
def map_nan_nifti(tmp: Path) -> list:
    data = np.ones((8, 8, 2))
    data[2, 2, 0] = np.nan
    return ["map", "--t2w", _nifti(tmp, "x_T2w.nii.gz", data, {"RepetitionTime": 4.0, "EchoTime": 0.1}), "--out", tmp / "m"]


@register("cli", r"looks like milliseconds", cli=True)
def map_sidecar_in_ms(tmp: Path) -> list:
    path = _nifti(tmp, "x_T2w.nii.gz", np.ones((8, 8, 2)), {"RepetitionTime": 4000, "EchoTime": 100})
    return ["map", "--t2w", path, "--out", tmp / "maps"]


@register("cli", r"brain mask is empty", cli=True)
def map_empty_brain_mask(tmp: Path) -> list:
    path = _nifti(tmp, "x_T2w.nii.gz", np.ones((8, 8, 2)), {"RepetitionTime": 4.0, "EchoTime": 0.1})
    return ["map", "--t2w", path, "--brain-mask", _nifti(tmp, "mask.nii.gz", np.zeros((8, 8, 2))), "--out", tmp / "m"]


@register("cli", r"--out .* exists and is not a folder", cli=True)
def map_out_is_a_file(tmp: Path) -> list:
    return ["map", "--t2w", tmp / "x.nii.gz", "--out", _file(tmp, "taken", b"x")]


@register("cli", r"--out .* exists and is not a folder", cli=True)
def demo_out_is_a_file(tmp: Path) -> list:
    return ["demo", "--out", _file(tmp, "taken", b"x")]


@register("cli", r"invalid choice: 'fit'", cli=True)
def unknown_verb(tmp: Path) -> list:
    return ["fit", "--out", tmp]


# -- dtypes and foreign checkpoints -----------------------------------------------------------
@register("pinqi", r"does not match the model's torch.float32 parameters")
def pinqi_complex128_kspace_into_a_float32_model(tmp: Path) -> object:
    from .robustness_library import pinqi_model, tiny

    return pinqi_model()(tiny().k.to(torch.complex128), tiny().csm.to(torch.complex128), tiny().mask)


@register("metrics", r"floating-point tensor")
def nrmse_of_integer_maps(tmp: Path) -> object:
    from pinqi.metrics import nrmse

    return nrmse(torch.ones(4, 4, dtype=torch.int64), torch.ones(4, 4, dtype=torch.int64))


@register("io", r"(?i)finite|> 0|seconds")
def read_raw_with_nan_times(tmp: Path) -> object:
    return _read(scan(tmp), times=[0.5, float("nan"), 1.5, 2.0, 8.0])


@register("cli", r"--coils: expected an integer; got 'eight'", cli=True)
def simulate_coils_not_a_number(tmp: Path) -> list:
    return ["simulate", "--out", tmp / "data", "--coils", "eight"]


@register("cli", r"(?i)w2q.*(expected|pinqi)|not a pinqi|kind", cli=True)
def evaluate_with_a_w2q_checkpoint(tmp: Path) -> list:
    w2q = SHIPPED_PINQI.with_name("w2q.pt")
    return ["evaluate", w2q, "--data", _file(tmp, "d.h5", b"x"), "--out", tmp / "e"]


@register("cli", r"(?i)w2q.*(expected|pinqi)|not a pinqi|kind", cli=True)
def reconstruct_with_a_w2q_checkpoint(tmp: Path) -> list:
    return ["reconstruct", scan(tmp), "--out", tmp / "maps", "--checkpoint", SHIPPED_PINQI.with_name("w2q.pt")]
