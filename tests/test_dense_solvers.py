"""Dense-dictionary solvers behind ``solve``: coordinate descent (``"cd"``), ``"auto"``, and the
dual-extrapolation certificate, against scikit-learn's ``Lasso`` and long reference runs."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

import latentebm as le
from latentebm.operators import ConvDictionary, DenseDictionary
from latentebm.regularizers import L1, NonNegL1
from latentebm.solvers import METHODS, solve
from latentebm.solvers.dual import DualExtrapolation


def problem(seed: int, n: int = 12, features: int = 40, atoms: int = 60, frac: float = 0.2):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((features, atoms))
    W /= np.linalg.norm(W, axis=0)
    Y = rng.standard_normal((n, features))
    lam = frac * float(np.abs(Y @ W).max())
    return Y, W, lam


def energies(Y, W, Z, lam):
    R = Y - Z @ W.T
    return 0.5 * (R * R).sum(1) + lam * np.abs(Z).sum(1)


def sklearn_codes(Y, W, lam, positive):
    # scikit-learn's Lasso divides the squared error by n_samples = n_features here
    model = Lasso(alpha=lam / W.shape[0], fit_intercept=False, tol=1e-14, max_iter=100000,
                  positive=positive)
    return np.stack([model.fit(W, y).coef_.copy() for y in Y])


DENSE_L1_METHODS = sorted(name for name in METHODS
                          if METHODS[name].unsupported(DenseDictionary(torch.eye(3)), L1())
                          is None)


@pytest.mark.parametrize("method", DENSE_L1_METHODS)
@pytest.mark.parametrize("positive", [False, True])
def test_every_method_matches_sklearn_lasso(method, positive):
    Y, W, lam = problem(0)
    Z_ref = sklearn_codes(Y, W, lam, positive)
    res = solve(Y, W, lam, method=method, nonneg=positive, tol=1e-12, max_iter=20000)
    assert res.method == method
    E, E_ref = energies(Y, W, res.z, lam), energies(Y, W, Z_ref, lam)
    assert np.all(np.abs(E - E_ref) <= 1e-6 * E_ref)
    if positive:
        assert res.z.min() >= 0


def test_cd_converges_on_a_coherent_dictionary():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((30, 8))
    W = base @ rng.standard_normal((8, 50)) + 0.1 * rng.standard_normal((30, 50))
    W /= np.linalg.norm(W, axis=0)
    Y = rng.standard_normal((20, 30))
    lam = 0.05 * float(np.abs(Y @ W).max())
    res = solve(Y, W, lam, method="cd", tol=1e-10, max_iter=5000)
    assert res.converged.all()
    ref = solve(Y, W, lam, method="fista", tol=1e-12, max_iter=100000)
    assert np.all(res.energy <= ref.energy * (1 + 1e-9))


@pytest.mark.parametrize("extrapolate", [True, False])
@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
def test_cd_certificate_bounds_the_true_gap(tol, extrapolate):
    Y, W, lam = problem(1, n=30, frac=0.05)
    ref = solve(Y, W, lam, method="cd", tol=1e-14, max_iter=20000)
    res = solve(Y, W, lam, method="cd", tol=tol, extrapolate=extrapolate, polish=False)
    true_gap = energies(Y, W, res.z, lam) - ref.energy
    assert np.all(res.gap >= true_gap - 1e-12 * ref.energy)
    assert np.all(res.gap[res.converged] <= tol * res.energy[res.converged])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("extrapolate", [True, False])
@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
def test_fista_certificate_bounds_the_true_gap(tol, extrapolate, dtype):
    if dtype == torch.float32 and tol < 1e-5:
        pytest.skip("below what float32 energies certify")
    Y, W, lam = problem(1, n=30, frac=0.05)
    ref = solve(Y, W, lam, method="cd", tol=1e-14, max_iter=20000)
    res = le.fista(torch.from_numpy(Y).to(dtype), torch.from_numpy(W).to(dtype), lam, tol=tol,
                   extrapolate=extrapolate, polish=False, check_every=3)
    z = res.z.double().numpy()
    true_gap = energies(Y, W, z, lam) - ref.energy
    slack = (1e-12 if dtype == torch.float64 else 1e-6) * ref.energy
    assert np.all(res.gap.double().numpy() >= true_gap - slack)
    assert bool(res.converged.all())
    assert torch.all(res.gap <= tol * res.energy)


def test_fista_extrapolated_certificate_stops_no_later():
    Y, W, lam = problem(4, n=40, frac=0.05)
    runs = {flag: le.fista(Y, W, lam, tol=1e-8, extrapolate=flag, polish=False, check_every=2)
            for flag in (True, False)}
    assert np.all(runs[True].n_iter_per_sample <= runs[False].n_iter_per_sample)
    assert runs[True].n_iter_per_sample.sum() < runs[False].n_iter_per_sample.sum()


def test_extrapolated_certificate_is_tighter_and_valid_in_both_modes():
    """Feeding ISTA's iterates (through the callback) to both modes of DualExtrapolation gives
    the same dual values, never above the primal optimum, and above the plain rescaled point's."""
    Y, W, lam = problem(2, n=10, frac=0.05)
    Yt, Wt = torch.from_numpy(Y), torch.from_numpy(W)
    b = Yt @ Wt
    ref = solve(Yt, Wt, lam, method="cd", tol=1e-14, max_iter=20000)
    residual_mode = DualExtrapolation(Yt, lam, L1(), adjoint=lambda r: r @ Wt)
    code_mode = DualExtrapolation(Yt, lam, L1(), Aty=b, adjoint=lambda r: r @ Wt,
                                  decode=lambda z: z @ Wt.T)
    plain = DualExtrapolation(Yt, lam, L1(), adjoint=lambda r: r @ Wt, K=1)
    values = []

    def callback(iteration, state):
        z = state.z
        r = Yt[state.active] - z @ Wt.T
        c = r @ Wt
        a = residual_mode.update(r, None, state.active)
        bb = code_mode.update(z, c, state.active)
        p = plain.update(r, c, state.active)
        values.append((a, bb, p, state.active))

    le.ista(Yt, Wt, lam, tol=0.0, max_iter=300, callback=callback)
    for a, bb, _, active in values:
        torch.testing.assert_close(a, bb, rtol=1e-6, atol=0.0)
        assert torch.all(a <= ref.energy[active] * (1 + 1e-12))
    last_a, _, last_plain, _ = values[-1]
    assert torch.all(last_a >= last_plain)
    assert bool((last_a > last_plain + 1e-9 * ref.energy).any())


@pytest.mark.parametrize("method", ["auto", "cd"])
def test_auto_and_cd_agree_with_fista(method):
    Y, W, lam = problem(4, n=25)
    res = solve(Y, W, lam, method=method, tol=1e-8)
    assert res.method in METHODS
    ref = le.fista(Y, W, lam, tol=1e-8)
    assert np.all(res.gap <= 1e-8 * res.energy)
    assert np.all(np.abs(res.energy - ref.energy) <= 2e-8 * ref.energy)
    np.testing.assert_allclose(res.z, ref.z, atol=1e-3)


def test_auto_falls_back_to_fista_without_a_gram_matrix():
    gen = torch.Generator().manual_seed(0)
    op = ConvDictionary(torch.randn(3, 1, 3, 3, generator=gen, dtype=torch.float64))
    Y = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    res = solve(Y, op, 0.1, max_iter=50)
    assert res.method != "cd"  # a convolution: "admm" (its structure), never "cd"
    with pytest.raises(ValueError, match="Gram matrix"):
        solve(Y, op, 0.1, method="cd")


def test_cd_callback_sees_every_sweep():
    Y, W, lam = problem(5)
    seen, checks = [], []

    def callback(iteration, state):
        seen.append(iteration)
        assert state.iteration == iteration and state.batch_size == Y.shape[0]
        assert state.z.shape == (state.active.shape[0], W.shape[1])
        if state.gap is not None:
            checks.append(iteration)

    res = solve(Y, W, lam, method="cd", tol=0.0, max_iter=13, check_every=4, callback=callback)
    assert seen == list(range(1, res.n_iter + 1)) == list(range(1, 14))
    assert checks == [4, 8, 12, 13]


def test_cd_float32_and_warm_start():
    Y, W, lam = problem(6, n=40)
    Y32, W32 = torch.from_numpy(Y).float(), torch.from_numpy(W).float()
    res = solve(Y32, W32, lam, method="cd", tol=1e-5)
    assert res.z.dtype == torch.float32 and bool(res.converged.all())
    ref = solve(Y, W, lam, method="cd", tol=1e-12)
    assert np.all(res.energy.double().numpy() <= ref.energy * (1 + 2e-5))
    warm = solve(Y, W, lam, method="cd", tol=1e-12, z0=ref.z)
    assert warm.n_iter == 1


def test_cd_nonneg_regularizer_object():
    Y, W, lam = problem(7)
    a = solve(Y, W, lam, method="cd", regularizer=NonNegL1(), tol=1e-12)
    b = solve(Y, W, lam, method="cd", nonneg=True, tol=1e-12)
    np.testing.assert_allclose(a.z, b.z)


def test_cd_validation():
    Y, W, lam = problem(8)
    with pytest.raises(ValueError, match="unknown method 'cdx'"):
        solve(Y, W, lam, method="cdx")
    with pytest.raises(TypeError, match="takes no option"):
        solve(Y, W, lam, method="cd", lipschitz=2.0)
    with pytest.raises(ValueError, match="lam > 0"):
        solve(Y, W, 0.0, method="cd")
    with pytest.raises(ValueError, match="check_every"):
        solve(Y, W, lam, method="cd", check_every=0)
    with pytest.raises(ValueError, match="block"):
        solve(Y, W, lam, method="cd", block=0)
    bad = Y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="Y"):
        solve(bad, W, lam, method="cd")
    with pytest.raises(ValueError, match="lam"):
        solve(Y, W, -1.0, method="cd")
    with pytest.raises(ValueError, match="K"):
        DualExtrapolation(torch.zeros(2, 3), 1.0, L1(), K=0)
