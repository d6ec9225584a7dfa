"""``pinqi map``: T1, T2 and PD maps from T1w / T2w / FLAIR NIfTI volumes with W2Q.

Inputs
    Any non-empty subset of ``--t1w``, ``--t2w``, ``--flair`` (NIfTI, 3-D, same shape and affine),
    each with its sequence parameters from the BIDS JSON sidecar next to it (``X.nii.gz`` ->
    ``X.json``): ``RepetitionTime``, ``EchoTime``, ``InversionTime`` (seconds), ``FlipAngle``
    (degrees) and the sequence type — ``SequenceType`` (``spin_echo``/``SE``/``TSE``,
    ``spoiled_gre``/``GRE``/``SPGR``/``FLASH``, ``flair``) or, failing that, BIDS
    ``ScanningSequence`` (``SE``, ``GR``, ``IR`` + ``SE``). The T2w slot defaults to spin echo and
    the FLAIR slot to FLAIR; the T1w type must be given. Command-line values
    (``args.tr_t1w``, ``args.te_t1w``, ``args.ti_t1w``, ``args.fa_t1w``, ``args.seq_t1w``, same for
    t2w / flair, and ``args.tr_exc_t1w``, ``args.n_shots_t1w`` for MP-RAGE, when the parser defines
    them) override the sidecar. Optional ``--brain-mask``;
    without it a mask is made by thresholding the mean normalised image at 10 % (fine for
    skull-stripped or simulated data; give a mask for anything else).
Processing
    The volumes are reoriented to RAS and processed axial slice by axial slice (tqdm progress
    bar). Each slice is zero-padded to a square, resampled (antialiased) to the training grid of the checkpoint
    (128 x 128 for the shipped weights), run through W2Q, and the maps are resampled back; a final fit layer at the
    native resolution (:meth:`pinqi.w2q.model.W2Q.refit`) makes them consistent with the native images.
Intensity calibration (``--calibrate tissue``, the default)
    Then the native maps of the whole volume are segmented, the unknown scale of each contrast is
    solved from the pure CSF and WM pixels of all slices and, with in-plane pixels of at most
    2 mm, the pure grey-matter signal found as the corner of the partial-volume triangle
    (:mod:`pinqi.w2q.partial_volume`), together with a literature 3 T prior
    (:mod:`pinqi.w2q.calibration`); the network and the native fit run again told those scales,
    and the maps are re-centred so that CSF, WM (and GM) take the calibrated values (with coarser
    pixels grey matter keeps the network's level). Without enough pure CSF or WM (fewer
    than 8 pixels each) it warns and keeps the network's own calibration. ``--calibrate none``: the
    network alone. The sidecars record which was used (``IntensityCalibration``).
Outputs (qMRI-BIDS)
    ``<prefix>T1map.nii.gz`` and ``<prefix>T2map.nii.gz`` (seconds), ``<prefix>PDmap.nii.gz``
    (arbitrary units, white matter ≈ 0.7), each with a JSON sidecar (``Units``, provenance), in
    the input's orientation with its affine; zero outside the brain mask; plus
    ``<prefix>W2Q_overview.png``; and the per-pixel standard deviations from the curvature of the
    final fit (:mod:`pinqi.w2q.uncertainty`) as ``<prefix>desc-std_PDmap``, ``..._T1map``,
    ``..._T2map.nii.gz`` (same units). ``prefix`` keeps the BIDS entities of the first input (e.g.
    ``sub-01_ses-1_``). All files are written through :class:`pinqi.io.outputs.OutputSet`
    (exclusive temporary names, renamed only when all are complete, none left after a failure).
Refused (ValueError)
    missing sidecar keys, values that look like milliseconds, mismatched shapes or affines, a
    checkpoint that is not a trained W2Q model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from simulation.sequence_checks import check_sequence

from ..io.outputs import OutputSet, check_output_folder
from ..w2q.calibration import TissueCalibration
from ..w2q.model import W2Q
from ..w2q.protocols import CONTRASTS, DEFAULT_PROTOCOL, DEFAULT_TYPES, SEQUENCE_TYPES, ProtocolRanges, trained_ranges
from ..w2q.training import load_w2q
from ..w2q.volume import map_volume

__all__ = ["SHIPPED_WEIGHTS", "Protocol", "read_protocol", "outside_training", "load_volumes", "load_map_model",
           "run_map"]

log = logging.getLogger("pinqi")
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "w2q.pt"
_KIND_ALIASES = {
    "spin_echo": "spin_echo", "se": "spin_echo", "tse": "spin_echo", "fse": "spin_echo", "spinecho": "spin_echo",
    "spoiled_gre": "spoiled_gre", "gre": "spoiled_gre", "gr": "spoiled_gre", "spgr": "spoiled_gre",
    "flash": "spoiled_gre", "t1_ffe": "spoiled_gre", "flair": "flair", "ir_se": "flair", "irse": "flair",
    "mprage": "mprage", "mp_rage": "mprage", "ir_gr": "mprage", "ir_gre": "mprage", "tfl": "mprage", "tfe": "mprage",
}
_SLOT_DEFAULT = {"t2w": "spin_echo", "flair": "flair"}
# Upper limits (s) above which a time is taken for milliseconds.
_MS_LIMITS = {"RepetitionTime": 30.0, "EchoTime": 1.0, "InversionTime": 10.0, "RepetitionTimePreparation": 30.0,
              "RepetitionTimeExcitation": 0.1}
_MAP_FILES = (("PDmap", "arbitrary"), ("T1map", "s"), ("T2map", "s"))


@dataclass(frozen=True)
class Protocol:
    """Sequence parameters of one input: TR (MP-RAGE: between inversions), TE, TI (0 if none) in
    seconds, FA in degrees, type, and for MP-RAGE the readout spacing τ [s] and readouts N."""

    tr: float
    te: float
    ti: float
    fa: float
    kind: str
    tau: float = 0.0
    n: float = 0.0

    def as_row(self) -> list[float]:
        """The W2Q protocol row (TR, TE, TI, FA, τ, N)."""
        return [self.tr, self.te, self.ti, self.fa, self.tau, self.n]


def sidecar_path(image: Path) -> Path:
    """``X.nii.gz`` / ``X.nii`` -> ``X.json``."""
    name = image.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return image.with_name(name[: -len(ext)] + ".json")
    return image.with_suffix(".json")


def _kind(value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip().lower() not in _KIND_ALIASES:
        value = [v for v in re.split(r"[\\_/, ]+", value) if v]  # DICOM multi-values, e.g. "SE\\IR", "SE_IR"
    if isinstance(value, (list, tuple)):
        parts = {str(v).strip().lower() for v in value}
        if "ir" in parts and "gr" in parts:
            return "mprage"
        if "ir" in parts and parts & {"se", "tse"}:
            return "flair"
        if "gr" in parts:
            return "spoiled_gre"
        if "se" in parts:
            return "spin_echo"
        value = "_".join(sorted(parts))
    key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _KIND_ALIASES:
        raise ValueError(f"{where}: unknown sequence type {value!r}; expected one of {sorted(set(_KIND_ALIASES))}")
    return _KIND_ALIASES[key]


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{where}: {key} must be a finite number; got {value!r}")
    return float(value)


def read_protocol(contrast: str, image: Path, overrides: dict[str, Any] | None = None) -> Protocol:
    """The protocol of ``image`` (slot ``contrast``) from its sidecar and ``overrides``.

    ``overrides`` may hold ``RepetitionTime``, ``EchoTime``, ``InversionTime``, ``FlipAngle``,
    ``SequenceType`` (None values are ignored).
    """
    side = sidecar_path(image)
    meta: dict[str, Any] = {}
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{side}: not valid JSON ({error})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{side}: expected a JSON object; got {type(meta).__name__}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    meta.update(given)
    where = f"{contrast} ({side if side.is_file() else image})"
    for key in ("SequenceType", "PulseSequenceType", "ScanningSequence"):
        if key in meta:
            kind = _kind(meta[key], where)
            break
    else:
        if contrast not in _SLOT_DEFAULT:
            raise ValueError(f"{where}: missing the sequence type: give SequenceType (spin_echo | spoiled_gre | mprage), "
                             f"PulseSequenceType or ScanningSequence in the sidecar {side}, or --seq-{contrast}")
        kind = _SLOT_DEFAULT[contrast]
    if kind == "mprage" and "RepetitionTime" in meta and ("RepetitionTimePreparation" not in meta
                                                          or "RepetitionTime" in given):
        meta["RepetitionTimePreparation"] = meta["RepetitionTime"]  # dcm2niix writes the inversion TR there
    tr_key = "RepetitionTimePreparation" if kind == "mprage" else "RepetitionTime"
    required = [tr_key, "EchoTime"] + (["InversionTime"] if kind in ("flair", "mprage") else []) \
        + (["FlipAngle"] if kind in ("spoiled_gre", "mprage") else []) \
        + (["RepetitionTimeExcitation", "NumberShots"] if kind == "mprage" else [])
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"{where}: missing sidecar keys {missing} for a {kind} image (times in seconds, FlipAngle "
                         f"in degrees); expected them in {side} or as command-line options")
    values = {k: _number(meta[k], k, where) for k in required}
    for key, limit in _MS_LIMITS.items():
        if key in values and values[key] > limit:
            raise ValueError(f"{where}: {key} = {values[key]:g} looks like milliseconds; BIDS times are in seconds "
                             f"(expected <= {limit:g} s, e.g. {values[key] / 1000:g})")
    if kind == "spoiled_gre" and values["RepetitionTime"] > 1.0:
        raise ValueError(f"{where}: RepetitionTime = {values['RepetitionTime']:g} s for a spoiled gradient echo looks "
                         f"like milliseconds; BIDS times are in seconds (e.g. {values['RepetitionTime'] / 1000:g})")
    gre = kind in ("spoiled_gre", "mprage")
    fa = values["FlipAngle"] if gre else _number(meta.get("FlipAngle", 90.0), "FlipAngle", where)
    if gre and fa < 1.0:
        raise ValueError(f"{where}: FlipAngle = {fa:g} looks like radians; it must be in degrees")
    ti = values.get("InversionTime", 0.0)
    params = {"tr": values[tr_key], "te": values["EchoTime"]}
    tau, n = values.get("RepetitionTimeExcitation", 0.0), values.get("NumberShots", 0.0)
    try:
        if kind == "flair":
            check_sequence("flair", ti=ti, **params)
        elif kind == "mprage":
            check_sequence("mprage", ti=ti, flip_angle_deg=fa, tr_excitation=tau, n_readouts=n, **params)
        elif kind == "spoiled_gre":
            check_sequence("gre", flip_angle_deg=fa, **params)
        else:
            check_sequence("se", **params)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return Protocol(values[tr_key], values["EchoTime"], ti, fa, kind, tau, n)


def outside_training(contrast: str, p: Protocol, ranges: ProtocolRanges | None = None) -> list[str]:
    """The parameters of ``p`` (slot ``contrast``) outside the training ``ranges``, one text each
    (e.g. ``"TR 0.004 not in [0.006, 0.03]"``); a sequence type never trained in that slot is one too."""
    r = ProtocolRanges() if ranges is None else ranges
    if contrast == "t1w":
        by_kind = {"spin_echo": {"tr": r.t1w_se_tr, "te": r.t1w_se_te},
                   "spoiled_gre": {"tr": r.t1w_gre_tr, "te": r.t1w_gre_te, "fa": r.t1w_gre_fa},
                   "mprage": {"tr": r.mprage_tr, "te": r.mprage_te, "ti": r.mprage_ti, "fa": r.mprage_fa,
                              "n": r.mprage_n, "tau": r.mprage_tau}}
        if p.kind == "mprage" and r.t1w_mprage_prob == 0:
            return ["sequence type mprage (never seen in training)"]
    else:
        by_kind = {"spin_echo": {"tr": r.t2w_tr, "te": r.t2w_te}, "flair": {"tr": r.flair_tr, "te": r.flair_te, "ti": r.flair_ti}}
    return [f"{k.upper()} {getattr(p, k):g} not in [{lo:g}, {hi:g}]" for k, (lo, hi) in by_kind.get(p.kind, {}).items()
            if not lo <= getattr(p, k) <= hi]


def _check_trained_ranges(protocols: dict[str, Protocol], ranges: ProtocolRanges, strict: bool) -> None:
    """Warn (or, ``strict``, refuse) for every protocol outside the training ranges, naming the parameters."""
    for contrast, p in protocols.items():
        if (outside := outside_training(contrast, p, ranges)) and strict:
            raise ValueError(f"{contrast}: protocol outside the ranges the model was trained on ({'; '.join(outside)}); "
                             "refused because of --strict")
        if outside:
            log.warning("%s: protocol outside the simulated training ranges (%s); maps may be unreliable",
                        contrast, "; ".join(outside))


def _load_nifti(path: Path, what: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} image {path} does not exist")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises several types for foreign files
        raise ValueError(f"{what}: {path} is not a readable NIfTI file ({error})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ValueError(f"{what}: {path} must be a 3-D volume; got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"{what}: {path} contains {int((~np.isfinite(data)).sum())} non-finite voxels")
    return data, img


def load_volumes(paths: dict[str, Path | None], mask_path: Path | None) -> tuple[dict[str, np.ndarray], np.ndarray, nib.Nifti1Image]:
    """Read the given contrasts (and the mask), checking shapes and affines; returns the arrays,
    the bool mask (automatic if not given) and the reference image."""
    given = {c: Path(p) for c, p in paths.items() if p is not None}
    if not given:
        raise ValueError("give at least one of --t1w, --t2w, --flair")
    arrays: dict[str, np.ndarray] = {}
    ref_name, ref = None, None
    for contrast, path in given.items():
        data, img = _load_nifti(path, contrast)
        if ref is None:
            ref_name, ref, ref_shape = contrast, img, data.shape
        elif data.shape != ref_shape:
            raise ValueError(f"shape mismatch: {contrast} {path} has shape {data.shape}, {ref_name} has {ref_shape}")
        elif not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise ValueError(f"affine mismatch: {contrast} {path} is not on the voxel grid of {ref_name} "
                             f"(affines differ: {img.affine.tolist()} vs {ref.affine.tolist()}); resample first")
        if (data < 0).any():
            log.warning("%s: %d negative voxels set to 0 (magnitude images expected)", contrast, int((data < 0).sum()))
            data = np.clip(data, 0, None)
        arrays[contrast] = data
    assert ref is not None
    if mask_path is not None:
        mdata, mimg = _load_nifti(Path(mask_path), "brain mask")
        if mdata.shape != ref_shape:
            raise ValueError(f"shape mismatch: brain mask {mask_path} has shape {mdata.shape}, the images {ref_shape}")
        if not np.allclose(mimg.affine, ref.affine, atol=1e-3):
            raise ValueError(f"affine mismatch: brain mask {mask_path} is not on the voxel grid of the images")
        mask = mdata > 0.5
    else:
        normed = [a / max(float(np.percentile(a[a > 0], 99)) if (a > 0).any() else 1.0, 1e-12) for a in arrays.values()]
        mask = np.mean(normed, axis=0) > 0.1
        log.info("no --brain-mask: automatic mask of %d voxels", int(mask.sum()))
    if not mask.any():
        raise ValueError("the brain mask is empty")
    return arrays, mask, ref


def load_map_model(checkpoint: Path | None) -> tuple[W2Q, int, dict[str, Any]]:
    """The trained W2Q of ``checkpoint`` (default: the shipped weights), its training image size
    and the checkpoint payload; refuses anything else."""
    path = SHIPPED_WEIGHTS if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" +
                                (" (the package was installed without its weights)" if checkpoint is None else ""))
    model, config, payload = load_w2q(path, require_trained=True)
    if payload.get("model_type") != "w2q" or config.model.n_iterations < 1:
        raise ValueError(f"{path} is a {payload.get('model_type')!r} baseline, not a W2Q model with a fit layer")
    return model, config.image_size, payload


def _calibration_meta(requested: bool, calibration: TissueCalibration | None) -> dict[str, Any]:
    """The sidecar's record of the intensity calibration."""
    if not requested:
        return {"Method": "none (--calibrate none): the network's own calibration"}
    if calibration is None:
        return {"Method": "none: too few pure CSF or WM pixels for the tissue calibration; the network's own"}
    names = ("csf", "gm", "wm")
    grey = "gm" in calibration.calibrated
    return {"Method": "tissue (pinqi.w2q.calibration): MAP of the per-contrast scales from pure CSF and WM"
                      + (" and the grey-matter corner of the partial-volume triangle" if grey else "")
                      + ", literature 3 T prior; maps re-centred on it"
                      + ("" if grey else ", grey matter at the network's level"),
            "PurePixels": {n: int(calibration.pixels[k]) for k, n in enumerate(names)
                           if n in calibration.calibrated and n != "gm"},
            "TissueValues": {n: {"PD": float(calibration.values[k, 0]), "T1": float(calibration.values[k, 1]),
                                 "T2": float(calibration.values[k, 2])}
                             for k, n in enumerate(names) if n in calibration.calibrated}}


def _overrides(args: argparse.Namespace, contrast: str) -> dict[str, Any]:
    names = {"RepetitionTime": "tr", "EchoTime": "te", "InversionTime": "ti", "FlipAngle": "fa", "SequenceType": "seq",
             "RepetitionTimeExcitation": "tr_exc", "NumberShots": "n_shots"}
    return {key: getattr(args, f"{short}_{contrast}", None) for key, short in names.items()}


def _prefix(path: Path) -> str:
    name = sidecar_path(path).stem
    parts = name.split("_")
    return "_".join(parts[:-1]) + "_" if len(parts) > 1 and all("-" in p for p in parts[:-1]) else ""


def _save_nifti(data: np.ndarray, ref: nib.Nifti1Image, path: Path) -> None:
    """``data`` on the grid of ``ref`` as float32 NIfTI at ``path`` (a name reserved in an OutputSet)."""
    header = ref.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(data.astype(np.float32), ref.affine, header), str(path))


def _overview(path: Path, inputs: dict[str, np.ndarray], maps: np.ndarray, mask: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argmax(mask.sum(axis=(0, 1))))
    panels = [(f"{c} (input)", a[:, :, z], "gray", None) for c, a in inputs.items()]
    limits = {"PD [a.u.]": 1.2, "T1 [s]": 4.0, "T2 [s]": 0.3}
    panels += [(name, maps[i][:, :, z], "viridis", vmax) for i, (name, vmax) in enumerate(limits.items())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, img, cmap, vmax) in zip(np.atleast_1d(axes), panels):
        im = ax.imshow(np.rot90(img), cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(title)
        ax.axis("off")
        if vmax is not None:
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"W2Q maps, slice {z}")
    try:
        fig.savefig(path, dpi=80, format="png")
    finally:
        plt.close(fig)


def run_map(args: argparse.Namespace) -> dict[str, Path]:
    """``pinqi map``: args.t1w, args.t2w, args.flair (Paths or None), args.brain_mask, args.checkpoint
    (None: shipped weights), args.out; optional overrides ``args.tr_t1w`` ... (module docstring).
    Returns the written files by name."""
    check_output_folder(args.out)
    paths = {c: getattr(args, c, None) for c in CONTRASTS}
    arrays, mask, ref = load_volumes(paths, getattr(args, "brain_mask", None))
    protocols = {c: read_protocol(c, Path(p), _overrides(args, c)) for c, p in paths.items() if p is not None}
    for c, prot in protocols.items():
        allowed = ("spin_echo", "spoiled_gre", "mprage") if c == "t1w" else (_SLOT_DEFAULT[c],)
        if prot.kind not in allowed:
            raise ValueError(f"{c}: a {prot.kind} image cannot fill the {c} slot (expected {' or '.join(allowed)})")
    model, image_size, payload = load_map_model(getattr(args, "checkpoint", None))
    data_version = int(json.loads(payload["config"]).get("data_version", 1))
    _check_trained_ranges(protocols, trained_ranges(data_version), bool(getattr(args, "strict", False)))
    ornt = nib.io_orientation(ref.affine)
    shape = next(iter(arrays.values())).shape

    def to_slices(a: np.ndarray) -> torch.Tensor:  # array grid -> RAS -> (Z, Y, X) with anterior rows first
        ras = nib.orientations.apply_orientation(a, ornt)
        return torch.from_numpy(np.ascontiguousarray(np.flip(ras.transpose(2, 1, 0), axis=1)).astype(np.float32))

    mask_t = to_slices(mask.astype(np.float32)) > 0.5
    full = torch.zeros(3, *mask_t.shape)
    seq = torch.tensor(DEFAULT_PROTOCOL, dtype=torch.float32)
    types = torch.tensor(DEFAULT_TYPES)
    available = torch.zeros(3, dtype=torch.bool)
    for i, c in enumerate(CONTRASTS):
        if c in arrays:
            full[i] = to_slices(arrays[c])
            seq[i] = torch.tensor(protocols[c].as_row())
            types[i] = SEQUENCE_TYPES.index(protocols[c].kind)
            available[i] = True
    calibrate = getattr(args, "calibrate", "tissue") == "tissue"
    zooms = nib.affines.voxel_sizes(ref.affine)
    pixel_size = float(max(zooms[i] for i in range(3) if int(ornt[i, 0]) in (0, 1)))  # the slices' R and A sides [mm]
    maps, stds, calibration = map_volume(model, image_size, full, mask_t, seq, types, available,
                                         progress=not getattr(args, "no_progress", False), return_std=True,
                                         calibrate=calibrate, pixel_size=pixel_size)
    inverse = nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), ornt)

    def to_array(v: torch.Tensor) -> np.ndarray:
        ras = np.flip(v.numpy(), axis=1).transpose(2, 1, 0)
        out = nib.orientations.apply_orientation(ras, inverse)
        assert out.shape == shape
        return np.ascontiguousarray(out)

    out_maps = np.stack([to_array(maps[i]) for i in range(3)])
    out_stds = np.stack([to_array(stds[i]) for i in range(3)])
    out_dir = Path(args.out)
    prefix = _prefix(Path(next(p for p in paths.values() if p is not None)))
    with OutputSet(out_dir) as outputs:  # all files appear together, or none
        for i, (name, units) in enumerate(_MAP_FILES):
            _save_nifti(out_maps[i], ref, outputs.reserve(f"{prefix}{name}.nii.gz"))
            meta = {"Units": units, "EstimationMethod": "W2Q (pinqi): protocol-conditioned network + pixel-wise fit "
                    "of the weighted signal models", "BasedOn": [str(p) for p in paths.values() if p is not None],
                    "SequenceParameters": {c: p.__dict__ for c, p in protocols.items()},
                    "TrainedSteps": int(payload.get("step", 0)),
                    "IntensityCalibration": _calibration_meta(calibrate, calibration)}
            outputs.reserve(f"{prefix}{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
            _save_nifti(out_stds[i], ref, outputs.reserve(f"{prefix}desc-std_{name}.nii.gz"))
            std_meta = {"Units": units, "Description": f"per-pixel std of the {name}: fit curvature x residual noise "
                        "(pinqi.w2q.uncertainty); excludes prior and scale biases"}
            outputs.reserve(f"{prefix}desc-std_{name}.json").write_text(json.dumps(std_meta, indent=2) + "\n")
        _overview(outputs.reserve(f"{prefix}W2Q_overview.png"), arrays, out_maps, mask)
    written = {path.name: path for path in outputs.written}
    print(f"wrote {', '.join(sorted(written))} to {out_dir}")
    return written
