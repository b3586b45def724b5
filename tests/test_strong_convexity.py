"""The strong-convexity certificate ‖g‖²/(2μ) shared by ``"gram_cd"``, FISTA and ``"cd"``."""

import numpy as np
import pytest
import torch

import latentebm as le
from latentebm.solvers import solve
from latentebm.solvers.strong_convexity import strong_convexity, strong_convexity_bound


def undercomplete(seed: int, n: int = 200, features: int = 40, atoms: int = 20):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((features, atoms))
    W /= np.linalg.norm(W, axis=0)
    Y = rng.standard_normal((n, features))
    return Y, W, 0.1 * float(np.abs(Y @ W).max())


def test_the_smallest_eigenvalue_is_bounded_from_below():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((40, 20))
    G = W.T @ W
    smallest = np.linalg.eigvalsh(G)[0]
    for gram in (G, torch.from_numpy(G)):
        mu = strong_convexity(gram, 40, 1000)
        assert 0.99 * smallest < mu <= smallest
    singular = np.column_stack([W, W[:, :1]])
    assert strong_convexity(singular.T @ singular, 40, 1000) == 0.0
    assert strong_convexity(G, 19, 1000) == 0.0  # more atoms than dimensions
    assert strong_convexity(G, 40, 159) == 0.0  # fewer than 8 samples per atom


@pytest.mark.parametrize("positive", [False, True])
def test_the_bound_is_the_least_norm_subgradient(positive):
    """Against the subdifferential written out coordinate by coordinate, at codes that are
    zero, positive and negative."""
    z = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0] + ([] if positive else [-1.0])],
                     dtype=torch.float64)
    c = torch.tensor([[0.5, 1.5, -1.5, 0.75, 1.0] + ([] if positive else [-1.25])],
                     dtype=torch.float64)
    lam, mu = 1.0, 0.5
    g = [0.0, 0.5, 0.0 if positive else 0.5, 0.25, 0.0] + ([] if positive else [0.25])
    expected = sum(v * v for v in g) / (2 * mu)
    assert float(strong_convexity_bound(c, z, lam, positive, mu)) == pytest.approx(expected)


SOLVERS = {
    "fista": lambda Y, W, lam, **kw: le.fista(Y, W, lam, max_iter=20000, **kw),
    # without its dual extrapolation and exact finish, "cd"'s certificate is the gap or the bound
    "cd": lambda Y, W, lam, **kw: solve(Y, W, lam, method="cd", polish=False,
                                        extrapolate=False, max_iter=5000, **kw),
}


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("method", SOLVERS)
def test_the_torch_solvers_certify_with_the_bound_in_float64(method, positive):
    Y, W, lam = undercomplete(7)
    res = SOLVERS[method](Y, W, lam, tol=1e-4, nonneg=positive)
    ref = le.fista(Y, W, lam, tol=1e-13, nonneg=positive, max_iter=200000).energy
    energy = le.lasso_energy(Y, W, res.z, lam, nonneg=positive)
    assert res.converged.all()
    np.testing.assert_allclose(res.energy, energy, rtol=1e-12)
    assert np.all(res.gap >= energy - ref - 1e-12 * ref)
    dual_gap = le.duality_gap(Y, W, res.z, lam, nonneg=positive)
    unfinished = dual_gap > 1e-8 * res.energy
    assert unfinished.sum() >= 20
    assert np.median(res.gap[unfinished] / dual_gap[unfinished]) < 0.1


@pytest.mark.parametrize("method", SOLVERS)
def test_the_torch_solvers_keep_the_duality_gap_in_float32_and_on_small_batches(method):
    for n, dtype in ((200, np.float32), (20, np.float64)):
        Y, W, lam = undercomplete(8, n=n)
        Y, W = Y.astype(dtype), W.astype(dtype)
        res = SOLVERS[method](Y, W, lam, tol=1e-4)
        plain = le.duality_gap(Y, W, res.z, lam)
        np.testing.assert_allclose(res.gap, plain, rtol=1e-3, atol=1e-6 * float(res.energy.max()))


def test_fista_certifies_exactly_represented_signals_from_their_residual():
    """A residual below the share of ``‖y‖²`` that code-space arithmetic resolves: the energy
    and certificate come from the residual itself, the bound included (the optimum in closed
    form, the signs of the planted codes holding)."""
    rng = np.random.default_rng(9)
    W = rng.standard_normal((30, 10))
    W /= np.linalg.norm(W, axis=0)
    Z = rng.uniform(1, 2, size=(100, 10)) * rng.choice([-1.0, 1.0], size=(100, 10))
    Y, lam = Z @ W.T, 1e-9
    Z_star = Z - lam * np.linalg.solve(W.T @ W, np.sign(Z).T).T
    optimum = le.lasso_energy(Y, W, Z_star, lam)
    res = solve(Y, W, lam, method="fista", tol=1e-3, max_iter=20000)
    energy = le.lasso_energy(Y, W, res.z, lam)
    np.testing.assert_allclose(res.energy, energy, rtol=1e-9)
    assert np.all(res.gap >= energy - optimum - 1e-9 * optimum)
    assert res.converged.all()

