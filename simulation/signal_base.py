"""Common base of the differentiable MR signal models (shape handling and validation).

A signal model maps pixel-wise parameter maps ``p`` of shape ``(B, P, Y, X)`` (real) to an
image series ``(B, T, Y, X)``. Its sequence parameters (times in seconds, flip angles in degrees)
are held as tensors exactly as given, so that gradients reach them when they require grad; they
are cast to the dtype / device of ``p`` at every call. Each sequence parameter may be

* a scalar — one value for every contrast and every sample;
* 1-D ``(T,)`` — one value per contrast, shared by the batch (with ``per_sample=True`` a 1-D
  tensor is instead one value per sample, ``(B,)``, i.e. ``(B, 1)``: one contrast);
* 2-D ``(B, T)`` — a protocol per batch element; B must then equal the batch of ``p``.

All sequence parameters of a model are broadcast together (e.g. one TR with several TEs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .sequence_checks import as_sequence_tensor

__all__ = ["SignalModel"]


class SignalModel(nn.Module):
    """Base class: validation of ``p`` and of the sequence-parameter shapes.

    Subclasses set the class attributes and implement :meth:`_signal`.

    Attributes
    ----------
    parameter_names, parameter_units : tuple of str
        Names and units of the P parameters, in the order of ``p``'s dim 1.
    bounds : (tuple of P floats, tuple of P floats)
        Plausible (lower, upper) box for fitting.
    initial_value : tuple of P floats
        A neutral starting point for fitting.
    complex_output : bool
        Whether the signal is complex (T1-mapping models) or real (weighted models).
    linear_parameters : tuple of int
        Indices of the parameters that enter the signal linearly (the amplitude: complex M0 as
        (Re M0, Im M0), or PD); () if none. Fitting code (``solvers.nonlinear_fit``) eliminates
        them in closed form.
    complex_amplitude : bool
        ``linear_parameters`` are (Re, Im) of one complex amplitude: ``q(p) = (p_re + i p_im) g(θ)``.
    nonnegative_amplitude : bool
        The (single, real) amplitude enters linearly only where it is >= 0 (magnitude images:
        ``|PD g| = PD |g|`` for PD >= 0).
    spatially_uniform : bool
        The signal of a pixel depends only on its parameters and on the sample's protocol (no
        per-pixel state), so a model may be evaluated on any ``(Y, X)``, e.g. a ``(1, G)`` grid.
    """

    parameter_names: ClassVar[tuple[str, ...]] = ()
    parameter_units: ClassVar[tuple[str, ...]] = ()
    bounds: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    initial_value: tuple[float, ...] = ()
    complex_output: ClassVar[bool] = False
    linear_parameters: tuple[int, ...] = ()
    complex_amplitude: bool = False
    nonnegative_amplitude: bool = False
    spatially_uniform: ClassVar[bool] = True

    def __init__(self, *, per_sample: bool = False, **sequence: Any) -> None:
        super().__init__()
        self.per_sample = bool(per_sample)
        # the tensors as given (not copies, not views): gradients reach the caller's leaves
        self._sequence: dict[str, torch.Tensor] = {
            k: as_sequence_tensor(k, v) for k, v in sequence.items() if v is not None
        }
        shapes = {k: self._as_2d(k, v).shape for k, v in self._sequence.items()}
        try:
            common = torch.broadcast_shapes(*shapes.values())
        except RuntimeError:
            desc = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self._sequence.items())
            raise ValueError(
                "sequence parameters must broadcast to one (B, T) protocol "
                f"(scalars, (T,) or (B, T)); got {desc}"
            ) from None
        self._protocol_shape: tuple[int, int] = (int(common[0]), int(common[1]))

    # ---------------------------------------------------------------- shapes
    def _as_2d(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty; got shape {tuple(t.shape)}")
        if t.ndim == 0:
            return t.reshape(1, 1)
        if t.ndim == 1:
            return t.reshape(-1, 1) if self.per_sample else t.reshape(1, -1)
        if t.ndim == 2:
            return t
        raise ValueError(f"{name} must be a scalar, (T,) or (B, T); got shape {tuple(t.shape)}")

    @property
    def n_parameters(self) -> int:
        """Number of parameters P."""
        return len(self.parameter_names)

    @property
    def n_contrasts(self) -> int:
        """Number of images T in the output series."""
        return self._protocol_shape[1]

    @property
    def batch_size(self) -> int | None:
        """B of a per-sample protocol, or None when the protocol is shared by the batch."""
        b = self._protocol_shape[0]
        return b if self._has_batch_dim() else None

    def _has_batch_dim(self) -> bool:
        return any(v.ndim == 2 or (self.per_sample and v.ndim == 1) for v in self._sequence.values())

    def __getattr__(self, name: str) -> Any:
        # model.tr, model.te, ... : the sequence-parameter tensors as given
        try:
            return super().__getattr__(name)
        except AttributeError:
            seq = self.__dict__.get("_sequence", {})
            if name in seq:
                return seq[name]
            raise

    def sequence_parameters(self) -> dict[str, torch.Tensor]:
        """The sequence-parameter tensors as given (same objects; gradients reach them)."""
        return dict(self._sequence)

    def _broadcast_sequence(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sequence parameters as ``(Bs, T, 1, 1)`` tensors in p's dtype / device (Bs = 1 or B)."""
        bs, t = self._protocol_shape
        return {
            k: self._as_2d(k, v).to(dtype=p.dtype, device=p.device).expand(bs, t)[..., None, None]
            for k, v in self._sequence.items()
        }

    def _check_p(self, p: torch.Tensor) -> None:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"p must be a tensor of shape (B, P, Y, X); got {type(p).__name__}")
        if p.is_complex() or not p.is_floating_point():
            raise TypeError(f"p must be a real floating tensor (float32/float64); got dtype {p.dtype}")
        if p.ndim != 4 or p.shape[1] != self.n_parameters:
            names = ", ".join(self.parameter_names)
            raise ValueError(
                f"p must have shape (B, P, Y, X) with P = {self.n_parameters} ({names}); "
                f"got {tuple(p.shape)}"
            )
        if self.batch_size is not None and p.shape[0] != self.batch_size:
            raise ValueError(
                f"this model has a per-sample protocol for B = {self.batch_size} samples "
                f"(sequence parameters of shape {self._protocol_shape}); p has batch "
                f"{p.shape[0]}: shape {tuple(p.shape)}"
            )

    # ---------------------------------------------------------------- forward
    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Signal of the parameter maps.

        Parameters
        ----------
        p : torch.Tensor
            ``(B, P, Y, X)`` real (float32 or float64), parameters in :attr:`parameter_names`
            order and :attr:`parameter_units` units.

        Returns
        -------
        torch.Tensor
            ``(B, T, Y, X)``; complex (complex64 / complex128 matching p) for the T1-mapping
            models, real for the weighted models.
        """
        self._check_p(p)
        return self._signal(p, self._broadcast_sequence(p))

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        shape = "per-sample " if self.batch_size is not None else ""
        return f"{shape}protocol {self._protocol_shape}, parameters {self.parameter_names}"
