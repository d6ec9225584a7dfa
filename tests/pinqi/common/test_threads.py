"""Tests of the safe CPU threading setup (pinqi.common.threads)."""

from __future__ import annotations

import pytest
import torch

from pinqi.common import threads


def test_choose_threads_uses_only_idle_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "idle_cores", lambda window: 0.4)  # another process on most cores
    assert threads.choose_threads(4) == 1
    monkeypatch.setattr(threads, "idle_cores", lambda window: 2.8)
    assert threads.choose_threads(4) == 3  # 2.8 idle cores: three of them count as idle
    assert threads.choose_threads(2) == 2
    monkeypatch.setattr(threads, "idle_cores", lambda window: None)  # no /proc/stat: trust the request
    assert threads.choose_threads(8) == 4
    assert threads.choose_threads(1) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            threads.choose_threads(bad)


def test_idle_cores_from_proc_stat(monkeypatch):
    samples = iter([(100.0, 400.0), (250.0, 600.0)])  # (idle, total) jiffies: 75 % idle in between
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: next(samples))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    assert threads.idle_cores(0.001) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="positive"):
        threads.idle_cores(0)


def test_real_proc_stat_gives_a_plausible_idle_count():
    idle = threads.idle_cores(0.02)
    assert idle is None or 0.0 <= idle <= threads.available_cores()


def test_inference_threads_sets_and_restores(monkeypatch):
    monkeypatch.setattr(threads, "choose_threads", lambda requested, window: 1)
    before = torch.get_num_threads()
    with threads.inference_threads(2) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), threads.inference_threads(2):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_prefer_passive_wait_respects_the_user(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.prefer_passive_wait() is False  # torch is already imported here: too late to matter
    assert threads.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.prefer_passive_wait()
    assert threads.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
