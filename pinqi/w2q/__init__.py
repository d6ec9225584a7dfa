"""W2Q: quantitative maps (PD, T1 [s], T2 [s]) from weighted images (T1w, T2w, FLAIR).

``model`` (the model, :class:`W2Q`), ``networks`` (its protocol-conditioned network and the
plain U-Net baseline), ``signal`` (per-sample weighted signal models, protocol features),
``scale`` (intensity normalisation and the bounded global scale), ``protocols`` (contrast slots,
sequence types, ranges, defaults), ``config``, ``data`` (held-out protocol bands, contrast
dropout), ``losses`` and ``training``. The command ``pinqi map`` lives in :mod:`pinqi.cli.map`.
"""

from __future__ import annotations

from .config import W2QConfig, W2QTrainConfig
from .model import W2Q, W2QOutput

__all__ = ["W2Q", "W2QConfig", "W2QOutput", "W2QTrainConfig"]
