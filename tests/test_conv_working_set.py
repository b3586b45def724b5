"""The working-set finish of convolutional solvers (coordinate descent on a working set)."""

import sys

import pytest
import torch
from helpers import conv_problem

import latentebm as le
import latentebm.solvers._conv_cd_kernel  # noqa: F401  (the compiled sweeps, patched below)
from latentebm.operators import ConvDictionary
from latentebm.regularizers import L1, NonNegL1
from latentebm.solvers import solve
from latentebm.solvers.conv_working_set import MAX_SWEEPS, WorkingSetFinish, working_set_finish

LAM = 1.0
"""About one code in ten is non-zero on these random images: sparse enough for the finish."""


def _problem(boundary, channels=1, n_atoms=4, k=3, hw=(12, 11), batch=2, seed=0):
    return conv_problem(boundary, channels, n_atoms, k, hw, batch, seed)


@pytest.mark.parametrize("boundary", ["circular", "full"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("nonneg", [False, True])
def test_finish_reaches_the_optimum_and_its_gap_bounds_the_error(boundary, channels, nonneg):
    """From rough ADMM codes the finish reaches the optimum of a long FISTA run (every footprint
    wrapped or clipped at the edges) and certifies a gap that bounds its true error."""
    op, Y = _problem(boundary, channels)
    reg = NonNegL1() if nonneg else L1()
    reference = le.fista(Y, op, LAM, tol=1e-14, max_iter=100000, nonneg=nonneg)
    rough = solve(Y, op, LAM, method="admm", tol=0.0, max_iter=8, nonneg=nonneg)
    assert float(((rough.energy - reference.energy) / reference.energy).min()) > 1e-4
    z, energy, gap, _ = working_set_finish(op, Y, rough.z, LAM, reg, tol=1e-12)
    direct = le.lasso_energy(Y, op, z, LAM, nonneg=nonneg)
    assert torch.allclose(energy, direct.double(), rtol=1e-12)
    error = energy - reference.energy
    assert float((error / reference.energy).abs().max()) < 1e-9
    assert bool((error <= gap + 1e-12 * reference.energy).all())
    assert float((gap / energy).max()) < 1e-6
    if nonneg:
        assert float(z.min()) >= 0


def test_on_dense_codes_the_finish_gives_up_early_with_a_valid_certificate(monkeypatch):
    """λ = 0.3 (a quarter of the codes non-zero): coordinate descent on the working set
    converges slowly, the attempt ends well before its sweep budget, and its gap still
    bounds the error of the codes it returns, which are no worse than its input."""
    op, Y = _problem("full", channels=2)
    lam = 0.3
    reference = le.fista(Y, op, lam, tol=1e-14, max_iter=100000)
    rough = solve(Y, op, lam, method="admm", tol=0.0, max_iter=8)
    kernel_module = sys.modules["latentebm.solvers._conv_cd_kernel"]
    sweeps = []

    def counted(*args):
        sweeps.append(args[-1])
        return compiled(*args)

    compiled = kernel_module.working_set_cd
    monkeypatch.setattr(kernel_module, "working_set_cd", counted)
    z, energy, gap, _ = working_set_finish(op, Y, rough.z, lam, L1(), tol=1e-12)
    assert sum(sweeps) < 0.5 * MAX_SWEEPS * len(Y)
    assert bool((energy <= rough.energy).all())
    assert bool((energy - reference.energy <= gap + 1e-12 * reference.energy).all())
    assert float((gap / energy).min()) > 1e-6


def test_finish_leaves_its_input_alone_and_keeps_codes_where_the_optimum_is_zero():
    op, Y = _problem("circular")
    rough = solve(Y, op, LAM, method="admm", tol=0.0, max_iter=8)
    before = rough.z.clone()
    z, _, _, _ = working_set_finish(op, Y, rough.z, LAM, L1(), tol=1e-10)
    assert torch.equal(rough.z, before)
    zero = working_set_finish(op, Y, torch.zeros_like(rough.z), 1e3, L1(), tol=1e-10)
    assert not bool(zero[0].any()) and float(zero[2].max()) == 0.0


def test_admm_certifies_sooner_with_the_finish(monkeypatch):
    """A larger image: ADMM with the finish certifies 1e-6 in fewer iterations than without,
    and both certificates bound the true error."""
    op, Y = _problem("circular", n_atoms=6, k=5, hw=(48, 40), batch=2, seed=3)
    reference = le.fista(Y, op, LAM, tol=1e-14, max_iter=100000)
    finished = solve(Y, op, LAM, method="admm", tol=1e-6, max_iter=3000)
    admm_module = sys.modules["latentebm.solvers.admm_fourier"]
    monkeypatch.setattr(admm_module, "WorkingSetFinish", _NoFinish)
    plain = solve(Y, op, LAM, method="admm", tol=1e-6, max_iter=3000)
    for result in (finished, plain):
        assert bool(result.converged.all())
        assert bool((result.energy - reference.energy <= result.gap + 1e-12).all())
    assert finished.n_iter < plain.n_iter


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fista_certifies_sooner_with_the_finish(dtype):
    """FISTA on convolutions takes the finish's codes into its iterate (``polish``, on by
    default); in float32 too, the flag it reports after its final revaluation agrees with the
    stop, and every certificate bounds the true error."""
    op, Y = _problem("full", n_atoms=6, k=5, hw=(40, 36), batch=2, seed=5)
    reference = le.fista(Y, op, LAM, tol=1e-14, max_iter=100000)
    op, Y = ConvDictionary(op.kernels.to(dtype)), Y.to(dtype)
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    finished = le.fista(Y, op, LAM, tol=tol, max_iter=5000)
    plain = le.fista(Y, op, LAM, tol=tol, max_iter=5000, polish=False)
    for result in (finished, plain):
        assert bool(result.converged.all())
        error = result.energy.double() - reference.energy
        assert bool((error <= result.gap.double() + 1e-6 * reference.energy).all())
    assert finished.n_iter < plain.n_iter


def test_the_finish_applies_only_where_it_can_run():
    op, Y = _problem("full")
    assert WorkingSetFinish.when_applicable(op, Y, LAM, L1(), 1e-4) is not None
    assert WorkingSetFinish.when_applicable(op, Y, LAM, L1(), 0.0) is None  # fixed iterations
    assert WorkingSetFinish.when_applicable(op, Y, 0.0, L1(), 1e-4) is None
    dense = le.DenseDictionary(torch.randn(6, 4, dtype=torch.float64))
    assert WorkingSetFinish.when_applicable(dense, torch.randn(2, 6), LAM, L1(), 1e-4) is None


class _NoFinish:
    @staticmethod
    def when_applicable(*args):
        return None
