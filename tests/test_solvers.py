"""ISTA / FISTA against scikit-learn's Lasso, and the duality-gap certificate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

import latentebm as le


def random_problem(seed: int, n_features: int = 30, n_atoms: int = 50, batch: int = 8):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_features, n_atoms))
    W /= np.linalg.norm(W, axis=0)
    Y = rng.standard_normal((batch, n_features))
    lam_max = np.abs(Y @ W).max()
    return Y, W, 0.1 * lam_max


def sklearn_energy(Y, W, lam, positive=False):
    energies = []
    for y in Y:
        # Lasso divides the squared error by n_samples (= n_features here): alpha = λ / n.
        model = Lasso(alpha=lam / W.shape[0], fit_intercept=False, tol=1e-14, max_iter=200_000,
                      positive=positive)
        coef = model.fit(W, y).coef_
        energies.append(0.5 * np.sum((y - W @ coef) ** 2) + lam * np.abs(coef).sum())
    return np.array(energies)


@pytest.mark.parametrize("solver", [le.fista, le.ista])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_lasso(solver, nonneg, seed):
    Y, W, lam = random_problem(seed)
    result = solver(Y, W, lam, tol=1e-12, max_iter=50_000, nonneg=nonneg)
    reference = sklearn_energy(Y, W, lam, positive=nonneg)
    energy = le.lasso_energy(Y, W, result.z, lam)
    np.testing.assert_array_less(np.abs(energy - reference) / reference, 1e-6)
    assert result.all_converged
    if nonneg:
        assert result.z.min() >= 0


def test_gap_nonnegative_and_reaches_tol():
    Y, W, lam = random_problem(3, batch=16)
    for max_iter in (1, 5, 20, 100):
        result = le.fista(Y, W, lam, max_iter=max_iter, tol=0.0, polish=False)
        gap = le.duality_gap(Y, W, result.z, lam)
        assert np.all(gap >= 0)
        energy = le.lasso_energy(Y, W, result.z, lam)
        optimum = sklearn_energy(Y, W, lam)
        # the gap bounds the suboptimality from above
        assert np.all(gap >= energy - optimum - 1e-9)
    result = le.fista(Y, W, lam, tol=1e-7)
    assert result.all_converged
    np.testing.assert_array_less(result.gap, 1e-7 * result.energy + 1e-15)


def assert_ista_energy_never_increases(Y, W, lam, steps: int, **options) -> None:
    z = np.zeros((Y.shape[0], W.shape[1]))
    previous = le.lasso_energy(Y, W, z, lam)
    for _ in range(steps):
        z = le.ista(Y, W, lam, tol=0.0, z0=z, **options).z
        energy = le.lasso_energy(Y, W, z, lam)
        assert np.all(energy <= previous + 1e-12)
        previous = energy


def test_ista_energy_never_increases():
    Y, W, lam = random_problem(4, batch=4)
    L = float(np.linalg.eigvalsh(W.T @ W).max())
    assert_ista_energy_never_increases(Y, W, lam, 200, max_iter=1, lipschitz=L)


def test_power_iteration_bounds_spectral_norm():
    _, W, _ = random_problem(5)
    L = float(le.DenseDictionary(W).lipschitz((W.shape[0],)))
    exact = float(np.linalg.eigvalsh(W.T @ W).max())
    assert exact <= L <= 1.02 * exact


def test_backtracking_without_step_size():
    Y, W, lam = random_problem(6)
    result = le.fista(Y, W, lam, backtracking=True, tol=1e-10, max_iter=20_000)
    reference = sklearn_energy(Y, W, lam)
    np.testing.assert_allclose(result.energy, reference, rtol=1e-8)


def test_warm_start_from_solution_stops_at_first_check():
    Y, W, lam = random_problem(7)
    z_star = le.fista(Y, W, lam, tol=1e-10).z
    warm = le.fista(Y, W, lam, tol=1e-8, z0=z_star, check_every=1)
    assert warm.n_iter == 1


def test_polish_and_restart_do_not_change_the_answer():
    Y, W, lam = random_problem(8, batch=12)
    plain = le.fista(Y, W, lam, tol=1e-11, polish=False, restart=False, max_iter=50_000)
    fancy = le.fista(Y, W, lam, tol=1e-11)
    np.testing.assert_allclose(fancy.energy, plain.energy, rtol=1e-9)
    assert fancy.n_iter <= plain.n_iter


def test_torch_in_torch_out_keeps_dtype():
    Y, W, lam = random_problem(9)
    for dtype in (torch.float32, torch.float64):
        Yt, Wt = torch.tensor(Y, dtype=dtype), torch.tensor(W, dtype=dtype)
        result = le.fista(Yt, Wt, lam)
        assert isinstance(result.z, torch.Tensor) and result.z.dtype == dtype
        assert result.gap.shape == (Y.shape[0],)
    result = le.fista(Y.astype(np.float32), W, lam)
    assert isinstance(result.z, np.ndarray) and result.z.dtype == np.float32


def test_operator_object_accepted():
    Y, W, lam = random_problem(10)
    a = le.fista(Y, le.DenseDictionary(W), lam, tol=1e-10)
    b = le.fista(Y, W, lam, tol=1e-10)
    np.testing.assert_allclose(a.z, b.z, atol=1e-8)


def test_zero_signal_gives_zero_code():
    _, W, lam = random_problem(11)
    result = le.fista(np.zeros((3, W.shape[0])), W, lam)
    assert np.all(result.z == 0) and result.all_converged


def test_lam_zero_is_least_squares():
    rng = np.random.default_rng(12)
    W = rng.standard_normal((40, 10))
    Y = rng.standard_normal((5, 40))
    result = le.fista(Y, W, 0.0, tol=1e-12, max_iter=100_000)
    assert result.all_converged and result.n_iter < 100_000
    z = result.z
    expected = np.linalg.lstsq(W, Y.T, rcond=None)[0].T
    np.testing.assert_allclose(z, expected, atol=1e-6)


def coherent_problem(seed: int, n_features: int = 64, n_atoms: int = 96, batch: int = 20):
    """Non-negative, mutually correlated atoms (like pen strokes): λ_max(WᵀW) far above the
    curvature on any sparse support, where a fixed step 1/L is slow."""
    rng = np.random.default_rng(seed)
    W = np.abs(rng.standard_normal((n_features, n_atoms))) + 0.3
    W /= np.linalg.norm(W, axis=0)
    Z = rng.standard_normal((batch, n_atoms)) * (rng.random((batch, n_atoms)) < 0.1)
    Y = Z @ W.T + 0.05 * rng.standard_normal((batch, n_features))
    return Y, W, 0.05 * np.abs(Y @ W).max()


@pytest.mark.parametrize("nonneg", [False, True])
def test_adaptive_steps_and_active_set_finish_agree_with_textbook_fista(nonneg):
    Y, W, lam = coherent_problem(13)
    textbook = le.fista(Y, W, lam, tol=1e-12, polish=False, backtracking=False,
                        max_iter=200_000, nonneg=nonneg)
    default = le.fista(Y, W, lam, tol=1e-12, max_iter=200_000, nonneg=nonneg)
    assert textbook.all_converged and default.all_converged
    np.testing.assert_allclose(default.energy, textbook.energy, rtol=1e-10)
    assert default.n_iter < textbook.n_iter / 3


def test_ista_with_backtracking_never_increases_energy():
    Y, W, lam = coherent_problem(14, batch=6)
    assert_ista_energy_never_increases(Y, W, lam, 100, max_iter=3, backtracking=True)


def test_active_set_rounds_exact_from_the_right_signs_and_repair_most_wrong_ones():
    from latentebm.solvers.active_set import active_set_rounds

    Y, W, lam = coherent_problem(15, batch=40)
    Yt, Wt = torch.tensor(Y), torch.tensor(W)
    z_star = le.fista(Yt, Wt, lam, tol=1e-13, max_iter=200_000).z
    signs = torch.sign(z_star).to(torch.int8)
    G, b = Wt.T @ Wt, Yt @ Wt
    codes, G_codes, found = active_set_rounds(G, b, signs, lam, rounds=1)
    assert bool(found.all())
    torch.testing.assert_close(codes, z_star, atol=1e-9, rtol=0)
    torch.testing.assert_close(G_codes, codes @ G)

    # From the signs of early FISTA iterates (the solver's use): few are right, most get fixed.
    for n_iter, least in ((20, 0.75), (40, 1.0)):
        z = le.fista(Yt, Wt, lam, max_iter=n_iter, tol=0.0, polish=False).z
        guess = torch.sign(z).to(torch.int8)
        right = (guess == signs).all(1).double().mean()
        codes, _, found = active_set_rounds(G, b, guess, lam)
        exact = (codes - z_star).abs().amax(1) < 1e-9
        assert float(exact.double().mean()) >= max(least, float(right))
        assert bool((exact <= found).all())
