"""Tests of the shared pieces: bounded maps, inverse softplus, ConfigMixin, seeding, the trainer base."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pinqi.common.bounded import BoundedMap, inverse_softplus
from pinqi.common.config_mixin import ConfigMixin
from pinqi.common.seeding import seeded
from pinqi.w2q.config import load_w2q_config
from pinqi.w2q.training import W2QTrainer


def test_inverse_softplus_inverts_softplus_for_any_beta():
    for value, beta in ((0.05, 5.0), (3.0, 5.0), (1.0, 1.0), (800.0, 1.0)):
        z = torch.tensor(inverse_softplus(value, beta), dtype=torch.float64)
        assert float(F.softplus(z, beta=beta)) == pytest.approx(value, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        inverse_softplus(0.0)


def test_bounded_map_kinds_and_its_inverse():
    bounded = BoundedMap([0.0, 0.05, -1.0, -math.inf], [2.0, 6.0, math.inf, math.inf], log_scale=(1,))
    raw = torch.linspace(-6, 6, 13, dtype=torch.float64)
    p = bounded(raw.view(1, 1, -1).expand(1, 4, -1))
    assert bool((p[:, 0] > 0).all() and (p[:, 0] < 2).all() and (p[:, 2] > -1).all())
    torch.testing.assert_close(p[:, 1], torch.exp(math.log(0.05) + math.log(120.0) * torch.sigmoid(raw)).view(1, -1))
    torch.testing.assert_close(p[:, 3], raw.view(1, -1))
    two_sided = BoundedMap([0.0, 0.05], [2.0, 6.0], log_scale=(1,))
    maps = torch.tensor([[[0.3, 1.7]], [[0.08, 4.0]]], dtype=torch.float64).transpose(0, 1)
    torch.testing.assert_close(two_sided(two_sided.inverse(maps)), maps)
    for k, value in enumerate((0.5, 1.2, 0.0, 7.0)):
        r = torch.tensor([[bounded.raw_value(value, k)]], dtype=torch.float64)
        assert float(bounded._column(r, k)) == pytest.approx(value, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="log-scale"):
        BoundedMap([0.0], [1.0], log_scale=(0,))


@dataclass(frozen=True)
class _Inner(ConfigMixin):
    widths: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Outer(ConfigMixin):
    inner: _Inner = field(default_factory=_Inner)
    rate: float = 0.5
    band: tuple[float, float] = (0.1, 0.2)


def test_config_mixin_round_trips_through_json_and_refuses_unknown_keys():
    config = _Outer(inner=_Inner((3, 4)), band=(0.3, 0.4))
    values = json.loads(json.dumps(config.to_dict()))
    assert values == {"inner": {"widths": [3, 4]}, "rate": 0.5, "band": [0.3, 0.4]}
    assert _Outer.from_dict(values) == config
    assert config.replace(rate=1.0).rate == 1.0
    with pytest.raises(ValueError, match="unknown _Outer keys"):
        _Outer.from_dict({"rat": 1.0})


def test_seeded_construction_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    a = seeded(3, lambda: torch.nn.Linear(2, 2))
    assert torch.equal(torch.get_rng_state(), before)
    b = seeded(3, lambda: torch.nn.Linear(2, 2))
    assert torch.equal(a.weight, b.weight)


def test_w2q_trainer_shares_the_run_folder_rules(tmp_path: Path):
    config = load_w2q_config("micro").replace(steps=1, pretrain_steps=1, checkpoint_every=1)
    W2QTrainer(config, tmp_path, progress=False).run(stop_after=1)
    with pytest.raises(ValueError, match="--resume .* --overwrite"):
        W2QTrainer(config, tmp_path, progress=False)
    log_path = tmp_path / "train_log.jsonl"
    log_path.write_text(log_path.read_text() + '{"step": 1, "lo')
    resumed = W2QTrainer(config, tmp_path, resume=True, progress=False)
    assert resumed.step == 1
    assert [json.loads(line)["step"] for line in log_path.read_text().splitlines()] == [0]
    fresh = W2QTrainer(config, tmp_path, progress=False, overwrite=True)
    assert fresh.step == 0 and not log_path.exists()
