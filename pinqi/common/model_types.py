"""Types shared by the PINQI model: the signal-model protocol, the λ of every iteration, the priors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["Lambdas", "SignalModel"]


class SignalModel(Protocol):
    """What PINQI needs of a signal model ``q`` (e.g. :class:`simulation.SaturationRecovery`).

    ``q(p)`` maps parameters ``(B, P, Y, X)`` real to images ``(B, T, Y, X)`` complex,
    differentiably; ``bounds`` are ``P`` lower and ``P`` upper values, ``initial_value`` ``P``
    values inside them, ``parameter_units`` ``P`` unit strings ("a.u." marks an amplitude such as
    M0, which scales with the data).
    """

    bounds: tuple[tuple[float, ...], tuple[float, ...]]
    initial_value: tuple[float, ...]
    parameter_units: tuple[str, ...]

    @property
    def n_parameters(self) -> int: ...

    @property
    def n_contrasts(self) -> int: ...

    def __call__(self, p: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Lambdas:
    """The positive regularisation strengths of every iteration, each ``(T,)``.

    Attributes
    ----------
    p
        λ_p, the weight of the parameter prior ``||p − P_θ(y)||²`` in the fit.
    y
        λ_y, the weight of the image prior ``||y − Y_θ(y)||²`` in data consistency.
    q
        λ_q, the weight of the signal-model term ``||y − q(p)||²`` in data consistency.
    """

    p: torch.Tensor
    y: torch.Tensor
    q: torch.Tensor

    def as_lists(self) -> dict[str, list[float]]:
        """``{"lambda_p": [...], "lambda_y": [...], "lambda_q": [...]}`` (the training log's keys)."""
        return {f"lambda_{k}": v.detach().cpu().tolist() for k, v in (("p", self.p), ("y", self.y), ("q", self.q))}


@dataclass
class _Priors:
    """The learned priors of one forward call, ``Y_θ`` (or None) and ``P_θ``: (y, i) -> tensor."""

    image: Callable[[torch.Tensor, int], torch.Tensor] | None
    parameters: Callable[[torch.Tensor, int], torch.Tensor]
