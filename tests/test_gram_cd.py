"""Method ``"gram_cd"``: compiled per-sample coordinate descent with the exact Newton finish."""

import numpy as np
import pytest
import torch

import latentebm as le
from latentebm.operators import ConvDictionary
from latentebm.solvers import solve


def problem(seed: int, n: int = 30, features: int = 40, atoms: int = 60, frac: float = 0.05,
            coherent: bool = False):
    rng = np.random.default_rng(seed)
    if coherent:
        W = rng.standard_normal((features, 8)) @ rng.standard_normal((8, atoms))
        W += 0.1 * rng.standard_normal((features, atoms))
    else:
        W = rng.standard_normal((features, atoms))
    W /= np.linalg.norm(W, axis=0)
    Y = rng.standard_normal((n, features))
    return Y, W, frac * float(np.abs(Y @ W).max())


def energies(Y, W, Z, lam, positive=False):
    R = Y - Z @ W.T
    return 0.5 * (R * R).sum(1) + lam * np.abs(Z).sum(1)


def reference(Y, W, lam, positive=False):
    return le.fista(Y, W, lam, tol=1e-13, max_iter=200000, nonneg=positive).energy


def test_auto_picks_gram_cd_for_dense_l1_on_the_cpu():
    Y, W, lam = problem(0)
    assert solve(Y, W, lam).method == "gram_cd"
    assert solve(Y, W, 0.0, max_iter=50).method == "fista"  # least squares: not an L1 problem


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("coherent", [False, True])
@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-10])
def test_certificate_bounds_the_true_gap_and_meets_tol(tol, coherent, positive):
    Y, W, lam = problem(1, coherent=coherent)
    res = solve(Y, W, lam, method="gram_cd", tol=tol, nonneg=positive, max_iter=100000)
    ref = reference(Y, W, lam, positive)
    energy = energies(Y, W, res.z, lam)
    np.testing.assert_allclose(res.energy, energy, rtol=1e-10)
    true_gap = energy - ref
    assert np.all(res.gap >= true_gap - 1e-11 * ref)
    assert res.converged.all() and np.all(res.gap <= tol * res.energy)
    if positive:
        assert res.z.min() >= 0


def test_many_samples_in_parallel_equal_one_at_a_time():
    Y, W, lam = problem(2, n=64, coherent=True)
    batch = solve(Y, W, lam, method="gram_cd", tol=1e-12)
    single = np.stack([solve(Y[i:i + 1], W, lam, method="gram_cd", tol=1e-12).z[0]
                       for i in range(len(Y))])
    # the same arithmetic per sample; the compiled loops may still split a sum differently for
    # rows at other memory alignments (seen on an AVX-512 machine: 1e-13 differences)
    np.testing.assert_allclose(batch.z, single, rtol=1e-9, atol=1e-12)


def test_float32_codes_and_warm_start():
    Y, W, lam = problem(3)
    res = solve(torch.from_numpy(Y).float(), torch.from_numpy(W).float(), lam,
                method="gram_cd", tol=1e-5)
    assert res.z.dtype == torch.float32 and res.energy.dtype == torch.float32
    assert bool(res.converged.all())
    exact = solve(Y, W, lam, method="gram_cd", tol=1e-13)
    assert np.all(res.energy.double().numpy() <= exact.energy * (1 + 2e-5))
    warm = solve(Y, W, lam, method="gram_cd", tol=1e-10, z0=exact.z)
    assert warm.n_iter == 0 and np.array_equal(warm.z, exact.z)


@pytest.mark.parametrize("with_callback", [False, True])
@pytest.mark.parametrize("positive", [False, True])
def test_float32_codes_are_certified_against_the_float64_optimum(positive, with_callback):
    # float32 inputs are exact in float64: the solve is of the caller's own problem, and the
    # codes rounded to float32 keep the float64 certificate (the rounding moves the energy by a
    # second-order amount; their own residual's rescaled dual point would be ~1e-5 short)
    Y, W, lam = problem(6, coherent=True)
    Y32, W32 = Y.astype(np.float32), W.astype(np.float32)
    options = {"check_every": 1, "callback": lambda k, state: None} if with_callback else {}
    res = solve(torch.from_numpy(Y32), torch.from_numpy(W32), lam, method="gram_cd",
                tol=1e-9, nonneg=positive, **options)
    assert bool(res.converged.all())
    Y64, W64 = Y32.astype(np.float64), W32.astype(np.float64)
    z = res.z.double().numpy()
    assert np.array_equal(z.astype(np.float32), res.z.numpy())
    energy = energies(Y64, W64, z, lam)
    np.testing.assert_allclose(res.energy.double().numpy(), energy, rtol=1e-6)
    optimum = reference(Y64, W64, lam, positive)
    gap = res.gap.double().numpy()
    assert np.all(gap >= energy - optimum - 1e-12 * optimum)
    assert np.all(gap <= 1e-9 * energy)


def test_callback_sees_every_stretch_and_the_result_matches():
    Y, W, lam = problem(4, coherent=True)
    seen = []

    def callback(iteration, state):
        assert state.batch_size == len(Y)
        assert state.z.shape == (state.active.shape[0], W.shape[1])
        assert state.energy is not None and state.gap is not None
        seen.append((iteration, state.active.numel()))

    res = solve(Y, W, lam, method="gram_cd", tol=1e-10, check_every=2, callback=callback)
    plain = solve(Y, W, lam, method="gram_cd", tol=1e-10)
    np.testing.assert_array_equal(res.z, plain.z)
    np.testing.assert_array_equal(res.n_iter_per_sample, plain.n_iter_per_sample)
    assert [k for k, _ in seen] == list(range(2, 2 * len(seen) + 1, 2))
    assert seen[0][1] == len(Y)
    assert all(later <= earlier for (_, earlier), (_, later) in zip(seen, seen[1:], strict=False))
    assert res.converged.all()


def test_max_iter_caps_the_sweeps_and_reports_not_converged():
    Y, W, lam = problem(5, coherent=True)
    res = solve(Y, W, lam, method="gram_cd", tol=1e-14, max_iter=1)
    assert res.n_iter == 1 and not res.converged.all()


def test_an_all_zero_atom_gets_zero_codes():
    Y, W, lam = problem(8)
    W[:, 3] = 0
    res = solve(Y, W, lam, method="gram_cd", tol=1e-12)
    assert np.all(res.z[:, 3] == 0) and np.all(np.isfinite(res.z)) and res.converged.all()
    ref = le.fista(Y, W, lam, tol=1e-13, max_iter=100000)
    np.testing.assert_allclose(res.energy, ref.energy, rtol=1e-9)


def test_zero_signals_and_lambda_above_lambda_max():
    Y, W, lam = problem(6)
    Y[0] = 0
    res = solve(Y, W, 10 * lam / 0.05, method="gram_cd")
    assert np.all(res.z == 0) and res.converged.all() and np.all(res.gap == 0)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"lam": 0.0}, ValueError, "lam > 0"),
    ({"check_every": 0}, ValueError, "check_every"),
    ({"lipschitz": 1.0}, TypeError, "takes no option"),
])
def test_bad_arguments_are_named(change, error, message):
    Y, W, lam = problem(7)
    args = {"lam": lam, **change}
    with pytest.raises(error, match=message):
        solve(Y, W, method="gram_cd", **args)


def test_validation_names_the_method():
    Y, W, lam = problem(7)
    op = ConvDictionary(torch.randn(2, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="'gram_cd'.*Gram matrix"):
        solve(torch.randn(1, 1, 6, 6, dtype=torch.float64), op, 0.1, method="gram_cd")
    with pytest.raises(ValueError, match="not finite|NaN|nan|finite"):
        Y[0, 0] = np.nan
        solve(Y, W, lam, method="gram_cd")


@pytest.mark.parametrize("positive", [False, True])
def test_more_atoms_than_dimensions_converge_in_a_few_rounds(positive):
    """Five nearly collinear atoms in two dimensions (a rank-deficient active set): the Newton
    step gave up at the first dependent pivot and coordinate descent crawled (893 rounds on
    scikit-learn's check_fit_idempotent data, some samples not converged in 1000)."""
    rng = np.random.default_rng(0)
    angles = np.array([0.785, 0.79, 0.795, 1.16, 0.31])
    W = np.stack([np.cos(angles), np.sin(angles)])
    Y = rng.normal(loc=100, size=(20, 2))
    out = solve(Y, W, 1.0, method="gram_cd", tol=1e-10, max_iter=50, nonneg=positive)
    assert out.method == "gram_cd" and np.all(out.converged)
    assert int(np.max(out.n_iter_per_sample)) <= 10
    np.testing.assert_allclose(out.energy, reference(Y, W, 1.0, positive), rtol=1e-9)


def test_a_compiled_solve_leaves_torchs_thread_count_alone():
    """Starting numba's OpenMP layer set torch's shared thread count from 1 to 2, so torch
    computations after a first compiled solve (and a resumed run without one) differed."""
    import subprocess
    import sys

    script = ("import numpy as np, torch, latentebm as le\n"
              "torch.set_num_threads(1)\n"
              "W = np.random.default_rng(0).standard_normal((8, 6))\n"
              "le.solve(np.ones((3, 8)), W, 0.1, method='gram_cd')\n"
              "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1"


def mostly_zero_problem(seed: int, density: float = 0.15):
    """Signals with most entries exactly zero, like MNIST's background pixels."""
    Y, W, _ = problem(seed, n=40, features=50, atoms=70, coherent=True)
    Y *= np.random.default_rng(seed + 100).random(Y.shape) < density
    Y[0] = 0  # an all-zero signal among them
    return Y, W, 0.05 * float(np.abs(Y @ W).max())


def test_correlations_of_mostly_zero_signals_skip_the_zeros_and_are_exact():
    from latentebm.operators import DenseDictionary
    from latentebm.solvers import gram_cd as gram_cd_module

    Y, W, _ = mostly_zero_problem(9)
    assert gram_cd_module._mostly_zero(Y) and not gram_cd_module._mostly_zero(problem(9)[0])
    for dtype in (torch.float64, torch.float32):
        Yt = torch.from_numpy(Y).to(dtype)
        B, yy = gram_cd_module._correlations(DenseDictionary(torch.from_numpy(W)), Yt)
        Y64 = Yt.double().numpy()
        np.testing.assert_allclose(B, Y64 @ W, rtol=0, atol=1e-13)
        np.testing.assert_allclose(yy, (Y64 * Y64).sum(1), rtol=1e-14, atol=0)


@pytest.mark.parametrize("positive", [False, True])
def test_mostly_zero_signals_reach_the_dense_paths_optimum(positive, monkeypatch):
    from latentebm.solvers import gram_cd as gram_cd_module

    Y, W, lam = mostly_zero_problem(10)
    through_zeros = solve(Y, W, lam, method="gram_cd", tol=1e-12, nonneg=positive)
    monkeypatch.setattr(gram_cd_module, "SPARSE_SIGNAL_DENSITY", -1.0)
    dense = solve(Y, W, lam, method="gram_cd", tol=1e-12, nonneg=positive)
    ref = reference(Y, W, lam, positive)
    for res in (through_zeros, dense):
        assert res.converged.all()
        np.testing.assert_allclose(res.energy, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(through_zeros.z, dense.z, atol=1e-7)


@pytest.mark.parametrize("positive", [False, True])
def test_the_graded_first_sweep_keeps_the_gradient_and_lowers_the_energy(positive):
    from latentebm.solvers._gram_cd_kernel import _first_sweep

    Y, W, lam = problem(11, n=1, coherent=True, frac=0.02)
    G = W.T @ W
    b = Y[0] @ W
    z, q = np.zeros_like(b), b.copy()
    diag = np.diag(G)
    _first_sweep(G, q, z, lam, positive, 1 / diag, np.sqrt(diag))
    np.testing.assert_allclose(q, b - G @ z, atol=1e-12)
    assert np.count_nonzero(z) > 1 and (z.min() >= 0 or not positive)
    energy = 0.5 * np.sum((Y[0] - W @ z) ** 2) + lam * np.abs(z).sum()
    assert energy < 0.5 * np.sum(Y[0] ** 2)


def test_only_a_dense_dictionary_reports_its_matrix():
    from latentebm.operators import DenseDictionary

    W = torch.randn(5, 7, dtype=torch.float64)
    assert torch.equal(DenseDictionary(W).matrix(), W)
    assert ConvDictionary(torch.randn(2, 1, 3, 3)).matrix() is None


def test_an_atom_of_subnormal_gram_diagonal_is_solved():
    """1/G_jj overflows for a column of norm 1e-155 (G_jj ≈ 1e-310): the precomputed inverse
    made 0 · inf = NaN and the solve stopped with a FloatingPointError."""
    Y, W, lam = problem(12, n=4, features=50, atoms=20)
    W[:, 3] *= 1e-155
    res = solve(Y, W, lam, method="gram_cd", tol=1e-12)
    assert res.converged.all()
    np.testing.assert_allclose(res.energy, reference(Y, W, lam), rtol=1e-9)


def test_the_density_check_is_not_fooled_by_alternating_rows():
    from latentebm.solvers import gram_cd as gram_cd_module

    Y = np.random.default_rng(13).standard_normal((10_000, 20))
    Y[::2] = 0  # half the rows empty, the others dense: 50 % non-zero in all
    assert not gram_cd_module._mostly_zero(Y)
    Y[1::2] *= np.random.default_rng(14).random((5000, 20)) < 0.2
    assert gram_cd_module._mostly_zero(Y)


@pytest.mark.parametrize("positive", [False, True])
def test_the_strong_convexity_bound_certifies_near_the_true_error(positive):
    """With no more atoms than dimensions and a large batch, the certificate is the smaller of
    the duality gap and ‖g‖²/(2μ): still an upper bound on the true error, and far below the
    duality gap of the same codes (which falls only like the distance to the optimum)."""
    Y, W, lam = problem(3, n=200, features=40, atoms=20, frac=0.1)
    res = solve(Y, W, lam, method="gram_cd", tol=1e-4, nonneg=positive)
    ref = reference(Y, W, lam, positive)
    energy = energies(Y, W, res.z, lam)
    assert res.converged.all()
    assert np.all(res.gap >= energy - ref - 1e-12 * ref)
    dual_gap = le.duality_gap(Y, W, res.z, lam, nonneg=positive)
    unfinished = dual_gap > 1e-8 * res.energy  # the others the Newton step solved exactly
    assert unfinished.sum() >= 20
    assert np.median(res.gap[unfinished] / dual_gap[unfinished]) < 0.1


def test_the_strong_convexity_bound_needs_a_large_batch_and_a_definite_gram_matrix():
    """A small batch does not pay for the eigenvalues, and a dictionary with more atoms than
    dimensions has none above zero: there the certificate is the duality gap of the codes."""
    for n, atoms in ((20, 20), (200, 60)):
        Y, W, lam = problem(4, n=n, features=40, atoms=atoms, frac=0.1)
        res = solve(Y, W, lam, method="gram_cd", tol=1e-4)
        np.testing.assert_allclose(res.gap, le.duality_gap(Y, W, res.z, lam), rtol=1e-6,
                                   atol=1e-12)


@pytest.mark.parametrize("single", [False, True])
def test_exactly_represented_signals_are_certified_by_the_bound_from_their_residual(single):
    """Signals that the atoms represent exactly, at a tiny λ: the residual is below the share
    of ``‖y‖²`` that code-space arithmetic resolves, so the energy and certificate come from
    the residual itself, the strong-convexity bound included. The optimum of the problem as
    given (in float32, of the rounded signals and atoms) is known in closed form: every atom is
    active and the signs of the planted codes hold."""
    rng = np.random.default_rng(6)
    W = rng.standard_normal((30, 10))
    W /= np.linalg.norm(W, axis=0)
    Z = rng.uniform(1, 2, size=(100, 10)) * rng.choice([-1.0, 1.0], size=(100, 10))
    lam = 1e-9
    dtype = np.float32 if single else np.float64
    Y_given, W_given = (Z @ W.T).astype(dtype), W.astype(dtype)
    Y, W = Y_given.astype(np.float64), W_given.astype(np.float64)
    Z_star = np.linalg.solve(W.T @ W, W.T @ Y.T - lam * np.sign(Z).T).T
    assert np.array_equal(np.sign(Z_star), np.sign(Z))
    optimum = energies(Y, W, Z_star, lam)
    res = solve(Y_given, W_given, lam, method="gram_cd", tol=1e-3)
    energy = energies(Y, W, res.z.astype(np.float64), lam)
    np.testing.assert_allclose(res.energy, energy, rtol=1e-6 if single else 1e-9)
    assert np.all(res.gap >= energy - optimum - 1e-9 * optimum)
    assert res.converged.all()
