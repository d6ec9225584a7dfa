"""NUFFT backends: selection, agreement, finufft plans (caching, processes, DataLoader workers,
pickling), and MultiCoilNUFFTOp as the composition ``nufft @ sensitivity``."""

from __future__ import annotations

import copy
import math
import multiprocessing
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from operators import finufft_backend
from operators.linear_operator import ProductOperator
from operators.nufft import MultiCoilNUFFTOp, NUFFTOp
from operators.sensitivity import SensitivityOp
from tests.helpers import random_complex

pytestmark = pytest.mark.skipif(not finufft_backend.available(), reason="finufft not installed")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _trajectory(shape: tuple[int, ...], k: int, seed: int = 1) -> torch.Tensor:
    uniform = torch.rand(*shape, 2, k, generator=_gen(seed), dtype=torch.float64)
    return ((2 * uniform - 1) * math.pi).to(torch.float32)


def test_auto_uses_finufft_on_cpu_and_both_backends_agree() -> None:
    traj = _trajectory((2, 3), 200)
    density = 0.5 + torch.rand(2, 3, 200, generator=_gen(2))
    fast = NUFFTOp(traj, (12, 10), density=density)
    slow = NUFFTOp(traj, (12, 10), density=density, backend="gridding")
    assert fast.uses_finufft(torch.complex64, "cpu") and not slow.uses_finufft(torch.complex64, "cpu")
    x = random_complex((2, 3, 4, 12, 10), _gen(3))
    k = fast(x)
    for name, a, b in [("forward", k, slow(x)), ("adjoint", fast.H(k), slow.H(k)),
                       ("gram", fast.gram(x), slow.gram(x))]:
        err = float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))
        assert err < 5e-5, f"{name}: backends differ by {err:.1e}"


def test_bad_backend_and_eps_raise() -> None:
    traj = _trajectory((2,), 10)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'finufft', 'gridding'\); got 'fft'"):
        NUFFTOp(traj, (8, 8), backend="fft")
    with pytest.raises(ValueError, match=r"eps must be None or a number in \(1e-15, 0.1\); got 0.5"):
        NUFFTOp(traj, (8, 8), eps=0.5)
    op = NUFFTOp(traj, (8, 8), backend="finufft")
    with pytest.raises(ValueError, match=r"CPU complex64/complex128 tensors; got torch.complex32"):
        op.uses_finufft(torch.complex32, "cpu")


def test_plans_are_cached_per_coil_count_and_rebuilt_after_in_place_change() -> None:
    traj = _trajectory((3,), 50)
    op = NUFFTOp(traj, (8, 8))
    x = random_complex((3, 2, 8, 8), _gen(4))
    first = op(x)
    plans = op._plans(2, torch.complex64)
    op(x)
    assert op._plans(2, torch.complex64) is plans  # reused, not rebuilt
    assert op._plans(1, torch.complex64) is not plans
    with torch.no_grad():
        op.trajectory.mul_(-1)  # k -> -k: the transform of conj(x) conjugated
    flipped = op(x.conj()).conj()
    assert op._plans(2, torch.complex64) is not plans
    torch.testing.assert_close(flipped, first, rtol=1e-4, atol=1e-5)


def test_eps_sets_the_accuracy() -> None:
    traj = _trajectory((1,), 300).double()
    x = random_complex((1, 1, 16, 16), _gen(5), torch.complex128)
    exact = NUFFTOp(traj, (16, 16), eps=1e-14)(x)
    errors = [float(torch.linalg.vector_norm(NUFFTOp(traj, (16, 16), eps=eps)(x) - exact)
                    / torch.linalg.vector_norm(exact)) for eps in (1e-3, 1e-9)]
    assert 1e-6 < errors[0] < 1e-2 and errors[1] < 1e-8, errors


def test_pickle_and_deepcopy_after_use() -> None:
    op = MultiCoilNUFFTOp(random_complex((1, 2, 8, 8), _gen(6)), _trajectory((2,), 40))
    x = random_complex((1, 2, 8, 8), _gen(7))
    want = op(x)
    for clone in (pickle.loads(pickle.dumps(op)), copy.deepcopy(op)):
        torch.testing.assert_close(clone(x), want)


class _Operated(Dataset):
    """Item ``i``: the parent's operator applied to image ``i`` and a fresh operator's gram."""

    def __init__(self, op: MultiCoilNUFFTOp, images: torch.Tensor) -> None:
        self.op, self.images = op, images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.images[i:i + 1]
        fresh = MultiCoilNUFFTOp(self.op.csm, self.op.nufft.trajectory)
        return self.op(x)[0], fresh.gram(x)[0], torch.tensor(finufft_backend.n_threads())


def test_dataloader_fork_workers_after_parent_used_the_operator() -> None:
    """Parent runs finufft multi-threaded first; forked workers inherit its plans and OpenMP
    state, must not hang (DataLoader timeout) and must give the parent's results."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    csm = random_complex((1, 3, 16, 16), _gen(8))
    op = MultiCoilNUFFTOp(csm, _trajectory((2,), 120))
    images = random_complex((4, 2, 16, 16), _gen(9))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want_k, want_gram = op(images), op.gram(images)
    finally:
        torch.set_num_threads(threads)
    loader = DataLoader(_Operated(op, images), batch_size=2, num_workers=2, timeout=120,
                        multiprocessing_context="fork")
    got = list(loader)
    k = torch.cat([batch[0] for batch in got])
    gram = torch.cat([batch[1] for batch in got])
    assert all(int(n) == 1 for batch in got for n in batch[2])  # one OpenMP thread in a fork child
    torch.testing.assert_close(k, want_k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gram, want_gram, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op(images), want_k)  # the parent's plans still work


def test_multicoil_is_the_composition_and_its_factors_can_be_reassigned() -> None:
    csm = random_complex((2, 3, 8, 8), _gen(10), torch.complex128)
    traj = _trajectory((2,), 40).double()
    op = MultiCoilNUFFTOp(csm, traj)
    assert isinstance(op, ProductOperator) and op.outer is op.nufft and op.inner is op.sensitivity
    x = random_complex((2, 2, 8, 8), _gen(11), torch.complex128)
    composed = NUFFTOp(traj, (8, 8)) @ SensitivityOp(csm)
    torch.testing.assert_close(op(x), composed(x))
    torch.testing.assert_close(op.gram(x), composed.gram(x))
    other = NUFFTOp(-traj, (8, 8))
    op.nufft = other
    assert op.nufft is other and op.outer is other
    torch.testing.assert_close(op(x), (other @ SensitivityOp(csm))(x))


def test_multicoil_gram_uses_the_toeplitz_kernel_not_forward_adjoint(monkeypatch: pytest.MonkeyPatch) -> None:
    csm = random_complex((1, 2, 8, 8), _gen(12), torch.complex128)
    op = MultiCoilNUFFTOp(csm, _trajectory((2,), 40).double())
    x = random_complex((1, 2, 8, 8), _gen(13), torch.complex128)
    want = op.H(op(x))

    def fail(*args: object) -> None:
        raise AssertionError("gram must not run the NUFFT itself")

    op.gram(x)  # builds the kernel (that runs one type-1 transform)
    monkeypatch.setattr(op.nufft, "_transform", fail)
    got = op.gram(x)
    assert float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)) < 1e-10


def test_tensors_lists_what_the_operator_is_built_from() -> None:
    csm = random_complex((1, 2, 8, 8), _gen(14))
    traj, density = _trajectory((2,), 40), torch.ones(2, 40)
    op = MultiCoilNUFFTOp(csm, traj, density=density)
    op.gram(random_complex((1, 2, 8, 8), _gen(15)))  # fills the kernel and plan caches
    scale = torch.tensor(2.0)
    ids = {id(t) for t in (scale * op).H.tensors()}
    assert ids == {id(csm), id(traj), id(density), id(scale)}


def test_type1_plans_replace_execute_adjoint_on_older_finufft(monkeypatch: pytest.MonkeyPatch) -> None:
    traj = _trajectory((2,), 60).double()
    x = random_complex((2, 3, 8, 8), _gen(16), torch.complex128)
    y = random_complex((2, 3, 60), _gen(17), torch.complex128)
    want = NUFFTOp(traj, (8, 8)).H(y)
    monkeypatch.setattr(finufft_backend, "_HAS_EXECUTE_ADJOINT", False)
    op = NUFFTOp(traj, (8, 8))
    torch.testing.assert_close(op.H(y), want, rtol=1e-10, atol=1e-12)
    assert len(op._plans(3, torch.complex128)._type1) == 2
    lhs, rhs = torch.vdot(op(x).flatten(), y.flatten()), torch.vdot(x.flatten(), op.H(y).flatten())
    assert abs(complex(lhs - rhs)) < 1e-10 * abs(complex(lhs))
