"""Solvers for convolutional problems: ADMM in the Fourier domain, dual points, bad input."""

import numpy as np
import pytest
import torch
from helpers import conv_problem as _problem

import latentebm as le
from latentebm.operators import ConvDictionary
from latentebm.regularizers import UnitBall
from latentebm.solvers import solve

LAM = 0.1


def _toeplitz(op, signal_shape):
    """The explicit matrix of ``op`` for one image: (n_pixels, n_code_entries)."""
    code_shape = op.code_shape(signal_shape)
    n = int(np.prod(code_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *code_shape)
    return op.decode(basis).reshape(n, -1).T.contiguous()


@pytest.mark.parametrize("boundary", ["circular", "full"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("nonneg", [False, True])
def test_admm_equals_dense_fista_on_the_toeplitz_matrix(boundary, channels, nonneg):
    op, Y = _problem(boundary, channels)
    admm = solve(Y, op, LAM, method="admm", tol=1e-13, max_iter=20000, nonneg=nonneg)
    W = _toeplitz(op, tuple(Y.shape[1:]))
    dense = le.fista(Y.reshape(len(Y), -1), W, LAM, tol=1e-13, max_iter=20000, nonneg=nonneg)
    assert admm.method == "admm" and bool(admm.converged.all())
    rel = (admm.energy - dense.energy).abs() / dense.energy
    assert float(rel.max()) < 1e-8
    # the energy the solver reports is the energy of the codes it returns
    direct = le.lasso_energy(Y, op, admm.z, LAM, nonneg=nonneg)
    assert torch.allclose(admm.energy, direct, rtol=1e-10)
    # a gap of tol·E bounds the code error only by about sqrt(2·tol·E / μ) (μ the curvature on
    # the support): 1e-6 for these energies, more for the flatter masked problems
    codes = (admm.z.reshape(len(Y), -1) - dense.z).abs().max()
    assert float(codes) < (1e-5 if boundary == "circular" else 1e-3)
    if nonneg:
        assert float(admm.z.min()) >= 0


def _float64(op):
    return ConvDictionary(op.kernels.double(), boundary=op.boundary)


@pytest.mark.parametrize("boundary", ["circular", "full"])
@pytest.mark.parametrize("method", ["admm", "fista"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_certificate_bounds_the_true_gap(boundary, method, dtype):
    op, Y = _problem(boundary, n_atoms=4, hw=(12, 10), batch=3)
    reference = solve(Y, op, LAM, method="fista", tol=1e-13, max_iter=20000)
    op, Y = ConvDictionary(op.kernels.to(dtype), boundary=boundary), Y.to(dtype)
    for n in (5, 20, 40, 80):
        short = solve(Y, op, LAM, method=method, tol=0.0, max_iter=n, check_every=5)
        true_gap = le.lasso_energy(Y.double(), _float64(op), short.z.double(), LAM) \
            - reference.energy
        assert bool((short.gap.double() >= true_gap - 1e-10).all()), (n, short.gap, true_gap)
        assert bool((true_gap >= -1e-10).all())


@pytest.mark.parametrize("boundary", ["circular", "full"])
def test_footprint_max_is_the_maximum_over_the_codes_that_reach_each_pixel(boundary):
    gen = torch.Generator().manual_seed(0)
    op = ConvDictionary(torch.randn(2, 1, 3, 2, generator=gen, dtype=torch.float64),
                        boundary=boundary)  # kh ≠ kw: both alignments are checked
    signal_shape = (1, 7, 6)
    code_shape = op.code_shape(signal_shape)
    reach = _toeplitz(op, signal_shape).abs().gt(1e-12).reshape(-1, *code_shape).any(1)
    v = torch.rand(1, 1, *code_shape[1:], generator=gen, dtype=torch.float64)
    expected = torch.where(reach, v[0, 0], -1.0).flatten(1).amax(1)
    assert torch.equal(op.footprint_max(v).flatten(), expected)


@pytest.mark.parametrize("boundary", ["circular", "full"])
@pytest.mark.parametrize("nonneg", [False, True])
def test_pixelwise_rescaled_residual_is_feasible_and_beats_one_global_scale(boundary, nonneg):
    from latentebm.regularizers import get_regularizer
    from latentebm.solvers.local_dual import local_rescaling

    op, _ = _problem(boundary, n_atoms=4, k=5, hw=(40, 40), seed=3)
    gen = torch.Generator().manual_seed(4)
    planted = torch.zeros(2, *op.code_shape((1, 40, 40)), dtype=torch.float64)
    planted.view(-1)[torch.randperm(planted.numel(), generator=gen)[:60]] = 1.0
    Y = op.decode(planted) + 0.05 * torch.randn(2, 1, 40, 40, generator=gen, dtype=torch.float64)
    reg = get_regularizer(nonneg)
    best = solve(Y, op, LAM, method="fista", tol=1e-12, max_iter=20000, nonneg=nonneg)
    near = solve(Y, op, LAM, method="fista", tol=0.0, max_iter=60, nonneg=nonneg)
    r = Y - op.decode(near.z)
    c = op.adjoint(r)
    local = local_rescaling(op, LAM, reg)
    theta, c_theta = local(r, c)
    u = LAM / torch.clamp(reg.dual_norm(c_theta), min=LAM)
    assert float((reg.dual_norm(u[:, None, None, None] * c_theta) / LAM).max()) <= 1 + 1e-12
    value = local.dual_value(Y, r, c)
    assert bool((value <= best.energy + 1e-9).all())
    scale = LAM / torch.clamp(reg.dual_norm(c), min=LAM)
    flat_r, flat_y = r.flatten(1), Y.flatten(1)
    global_value = scale * (flat_y * flat_r).sum(1) - 0.5 * scale**2 * (flat_r * flat_r).sum(1)
    assert bool((value > global_value).all()), (value, global_value)


def test_self_stopping_run_certifies_its_tolerance():
    op, Y = _problem("circular", n_atoms=4, hw=(16, 16), batch=3, seed=1)
    result = solve(Y, op, LAM, method="admm", tol=1e-6, max_iter=5000)
    assert bool(result.converged.all())
    assert bool((result.gap <= 1e-6 * result.energy).all())
    reference = solve(Y, op, LAM, method="fista", tol=1e-13, max_iter=20000)
    assert bool((result.energy - reference.energy <= 1e-6 * reference.energy).all())


def test_batch_equals_single_images_and_warm_start():
    op, Y = _problem("full", n_atoms=3, hw=(9, 9), batch=3, seed=2)
    both = solve(Y, op, LAM, method="admm", tol=1e-10, max_iter=20000)
    for i in range(len(Y)):
        one = solve(Y[i : i + 1], op, LAM, method="admm", tol=1e-10, max_iter=20000)
        assert torch.allclose(one.energy, both.energy[i : i + 1], rtol=1e-9)
    warm = solve(Y, op, LAM, method="admm", tol=1e-10, max_iter=20000, z0=both.z)
    assert int(warm.n_iter_per_sample.sum()) < int(both.n_iter_per_sample.sum()) // 2
    assert torch.allclose(warm.energy, both.energy, rtol=1e-9)


def test_float32_and_numpy_in_numpy_out():
    op, Y = _problem("circular", n_atoms=4, hw=(16, 16), batch=2)
    op32 = ConvDictionary(op.kernels.float(), boundary="circular")
    result = solve(Y.float().numpy(), op32, LAM, method="admm", tol=1e-4, max_iter=2000)
    assert isinstance(result.z, np.ndarray) and result.z.dtype == np.float32
    assert bool(result.converged.all())
    reference = solve(Y, op, LAM, method="fista", tol=1e-12, max_iter=20000)
    energy64 = le.lasso_energy(Y, op, torch.from_numpy(result.z).double(), LAM)
    assert bool((energy64 - reference.energy <= 2e-4 * reference.energy).all())


def test_auto_picks_admm_for_circular_convolutions_and_fista_otherwise_on_the_cpu():
    op, Y = _problem("circular")
    assert solve(Y, op, LAM, tol=1e-6).method == "admm"
    op, Y = _problem("full")
    full = solve(Y, op, LAM, tol=1e-6)
    assert full.method == "fista" and bool(full.converged.all())
    W = torch.randn(8, 5, dtype=torch.float64)
    assert solve(torch.randn(3, 8, dtype=torch.float64), W, LAM).method != "admm"


def test_callback_sees_every_iteration():
    op, Y = _problem("circular")
    seen = []
    solve(Y, op, LAM, method="admm", tol=0.0, max_iter=25,
          callback=lambda k, state: seen.append((k, state.gap is not None)))
    assert [k for k, _ in seen] == list(range(1, 26))
    assert [k for k, has_gap in seen if has_gap] == [10, 20, 25]


# ----------------------------------------------------------------------------- bad input


def test_method_that_does_not_support_the_operator_names_both():
    W = torch.randn(8, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'admm'.*DenseDictionary"):
        solve(torch.randn(2, 8, dtype=torch.float64), W, LAM, method="admm")
    op, Y = _problem("circular")
    with pytest.raises(ValueError, match=r"'admm'.*UnitBall"):
        solve(Y, op, LAM, method="admm", regularizer=UnitBall(2))


@pytest.mark.parametrize("boundary", ["circular", "full"])
def test_bad_images_and_kernels(boundary):
    op, Y = _problem(boundary, k=5, hw=(7, 6))
    with pytest.raises(ValueError, match="smaller than the 5x5 kernels"):
        solve(Y[..., :4, :4], op, LAM, method="admm")
    with pytest.raises(ValueError, match="channels"):
        solve(torch.randn(2, 3, 7, 6, dtype=torch.float64), op, LAM, method="admm")
    for bad in (float("nan"), float("inf")):
        Z = Y.clone()
        Z[0, 0, 1, 1] = bad
        with pytest.raises(ValueError, match="Y"):
            solve(Z, op, LAM, method="admm")
    with pytest.raises(ValueError, match="lam"):
        solve(Y, op, -0.1, method="admm")
    with pytest.raises(ValueError, match="relax"):
        solve(Y, op, LAM, method="admm", relax=2.0)
    with pytest.raises(ValueError, match="rho"):
        solve(Y, op, LAM, method="admm", rho=-1.0)
    with pytest.raises(TypeError, match="lipschitz"):
        solve(Y, op, LAM, method="admm", lipschitz=3.0)


def test_initial_penalty_is_the_documented_default_and_reaches_the_model_forward():
    op, Y = _problem("circular", n_atoms=3, hw=(12, 12), batch=2, seed=3)
    Y = Y / Y.abs().amax()  # within unit range, where the default is 10λ + 1
    default = solve(Y, op, LAM, method="admm", tol=0.0, max_iter=7)
    explicit = solve(Y, op, LAM, method="admm", tol=0.0, max_iter=7, rho=10 * LAM + 1)
    other = solve(Y, op, LAM, method="admm", tol=0.0, max_iter=7, rho=50 * LAM + 1)
    assert torch.equal(default.z, explicit.z)
    assert not torch.allclose(default.z, other.z)
    # a model's forward passes the method's options through to the solver
    model = le.ConvDictionaryLearning(3, 3, 1, lam=LAM, boundary="circular",
                                      init=op.kernels, dtype=torch.float64)
    via_model = model(Y, tol=0.0, max_iter=7, method="admm", rho=50 * LAM + 1)
    assert torch.allclose(via_model.z, other.z, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(via_model.z, default.z)


def test_the_default_penalty_follows_the_images_range():
    """ADMM at a fixed ρ is scale-equivariant; the default ``10λ + 1`` was not, and 0–255 images
    (the same problem as unit-range ones, λ scaled alike) took 11× the iterations."""
    op, Y = _problem("circular", n_atoms=3, hw=(12, 12), batch=2, seed=3)
    Y = Y / Y.abs().amax(dim=(1, 2, 3), keepdim=True)  # each image of unit range
    unit = solve(Y, op, LAM, method="admm", tol=1e-8, max_iter=5000)
    # 256, a power of two, scales every floating-point operation exactly
    wide = solve(256 * Y, op, 256 * LAM, method="admm", tol=1e-8, max_iter=5000)
    assert torch.equal(wide.z, 256 * unit.z) and wide.n_iter == unit.n_iter
    # so does the rule's other slope, the one dictionary learning's coding step uses
    unit = solve(Y, op, LAM, method="admm", tol=1e-8, max_iter=5000, rho_per_lam=50)
    wide = solve(256 * Y, op, 256 * LAM, method="admm", tol=1e-8, max_iter=5000, rho_per_lam=50)
    assert torch.equal(wide.z, 256 * unit.z) and wide.n_iter == unit.n_iter
    fits = [le.ConvDictionaryLearning(3, 3, 1, lam=scale * LAM, boundary="circular",
                                      init=op.kernels, dtype=torch.float64)
            for scale in (1, 256)]
    for scale, model in zip((1, 256), fits, strict=True):
        model.fit(scale * Y, epochs=2, batch_size=2, method="admm", max_iter=5, progress=False)
    assert torch.equal(fits[1].kernels, fits[0].kernels)
    with pytest.raises(ValueError, match="rho.*rho_per_lam.*not both"):
        solve(Y, op, LAM, method="admm", rho=1.0, rho_per_lam=50)
    with pytest.raises(ValueError, match="rho_per_lam"):
        solve(Y, op, LAM, method="admm", rho_per_lam=-1)


def _uneven_kernels(dtype):
    """Two 3×3 kernels of norms 1 and 100 and an 8×8 image (a reviewer's case)."""
    gen = torch.Generator().manual_seed(0)
    K = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64)
    K = K / K.flatten(1).norm(dim=1)[:, None, None, None]
    K[1] *= 100
    return K.to(dtype), torch.randn(1, 1, 8, 8, generator=gen, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_masked_admm_converges_with_kernels_far_from_unit_norm(dtype):
    """The masked splitting weighs Dx against x: kernels of norms 1 and 100 left it at a relative
    error of 0.24 after 1000 iterations in float64 and diverging in float32."""
    K, Y = _uneven_kernels(dtype)
    ref = le.fista(Y.double(), ConvDictionary(K.double()), LAM, tol=1e-13, max_iter=200000)
    admm = solve(Y, ConvDictionary(K), LAM, method="admm", tol=0.0, max_iter=1000)
    rel = float((admm.energy.double() - ref.energy) / ref.energy)
    assert abs(rel) < (1e-5 if dtype == torch.float64 else 1e-4)
    # the codes returned are the caller's, with the energy reported for them
    direct = le.lasso_energy(Y, ConvDictionary(K), admm.z, LAM)
    assert torch.allclose(admm.energy, direct, rtol=1e-5 if dtype == torch.float32 else 1e-10)
    # its certificate lags the error on this ill-conditioned pair (gap/E 2.6e-5 at an error of
    # 1e-10 after 3000 iterations in float64; float32's rounding holds it at 4e-4), so it is
    # asked for less
    tol = 1e-4 if dtype == torch.float64 else 1e-3
    certified = solve(Y, ConvDictionary(K), LAM, method="admm", tol=tol, max_iter=5000)
    assert bool(certified.converged.all())
    true_gap = certified.energy.double() - ref.energy
    assert float(true_gap) <= float(certified.gap) + 1e-12 * float(ref.energy)


@pytest.mark.parametrize("boundary", ["circular", "full"])
def test_admm_is_equivariant_to_the_kernels_scale(boundary):
    """Kernels ×8 with the same λ are the unit kernels' problem at λ/8 with codes /8; a warm
    start and the callback's codes are the caller's own."""
    op, Y = _problem(boundary, n_atoms=3, hw=(10, 9), batch=2, seed=4)
    seen = []
    wide = solve(Y, op.scaled(8.0), LAM, method="admm", tol=0.0, max_iter=60,
                 callback=lambda k, state: seen.append(state.z.clone()))
    unit = solve(Y, op, LAM / 8, method="admm", tol=0.0, max_iter=60)
    assert torch.allclose(wide.z, unit.z / 8, rtol=1e-9, atol=1e-12)
    assert torch.allclose(seen[-1], wide.z, rtol=1e-12, atol=1e-15)
    # the optimum as a warm start is a fixed point: certified at the first check
    cold = solve(Y, op.scaled(8.0), LAM, method="admm", tol=1e-12, max_iter=20000)
    warm = solve(Y, op.scaled(8.0), LAM, method="admm", tol=1e-9, max_iter=5000, z0=cold.z)
    assert bool(cold.converged.all()) and cold.n_iter > 100
    assert warm.n_iter <= 10 and bool(warm.converged.all())


class _NoFinish:
    @staticmethod
    def when_applicable(*args):
        return None


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rho", [None, 1e-3, 1e3])  # far-off penalties make balancing act
@pytest.mark.parametrize("channels, n_atoms", [(1, 5), (2, 4)])  # one channel: solve_and_pack
def test_fused_cpu_step_equals_the_torch_step(monkeypatch, nonneg, dtype, rho, channels,
                                              n_atoms):
    import sys

    admm_module = sys.modules["latentebm.solvers.admm_fourier"]
    op, Y = _problem("circular", channels=channels, n_atoms=n_atoms, hw=(12, 9), batch=3,
                     seed=4)
    op, Y = ConvDictionary(op.kernels.to(dtype), boundary="circular"), Y.to(dtype)
    kwargs = dict(method="admm", tol=1e-6, max_iter=60, nonneg=nonneg, check_every=5, rho=rho)
    # the steps alone: the working-set finish would pick its candidates by gaps that rounding
    # tells apart
    monkeypatch.setattr(admm_module, "WorkingSetFinish", _NoFinish)
    fused = solve(Y, op, LAM, **kwargs)
    monkeypatch.setattr(admm_module, "_fuses", lambda Y, masked: False)
    plain = solve(Y, op, LAM, **kwargs)
    rtol = 1e-9 if dtype == torch.float64 else 1e-4
    assert torch.allclose(fused.z, plain.z, rtol=rtol, atol=rtol * float(plain.z.abs().max()))
    assert torch.equal(fused.n_iter_per_sample, plain.n_iter_per_sample)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_maps", [4, 5])
@pytest.mark.parametrize("width", [7, 8])
def test_packed_inverse_transform_gives_the_maps(dtype, n_maps, width):
    from latentebm.solvers._admm_kernel import pack_pairs

    maps = torch.randn(2, n_maps, 6, width, generator=torch.Generator().manual_seed(6),
                       dtype=dtype)
    half = torch.fft.rfft2(maps)
    full = torch.empty(2, (n_maps + 1) // 2, 6, width, dtype=half.dtype)
    pack_pairs(half.numpy(), full.numpy())
    pairs = torch.view_as_real(torch.fft.ifft2(full))  # (2, ceil(n / 2), 6, width, 2)
    back = pairs.permute(0, 1, 4, 2, 3).reshape(2, -1, 6, width)[:, :n_maps]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(back, maps, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_step_also_sums_the_balancing_norms_and_writes_the_correlations(dtype):
    from latentebm.solvers._admm_kernel import relaxed_prox_step
    from latentebm.solvers.admm_fourier import _squared_norms

    gen = torch.Generator().manual_seed(5)
    x, y, u = (torch.randn(3, 4, 5, 7, generator=gen, dtype=dtype) for _ in range(3))
    # the kernel reads x as interleaved pairs of maps: (batch, maps / 2, h·w, 2)
    x_pairs = x.reshape(3, 2, 2, 35).permute(0, 1, 3, 2).contiguous()
    thresholds = np.array([0.1, 0.5, 2.0])
    y_old, u_old, rhs, sums = y.clone(), u.clone(), torch.empty_like(y), np.empty((3, 5))
    correlations, rho = torch.empty_like(y), np.array([1.0, 2.0, 3.0])
    relaxed_prox_step(x_pairs.numpy(), *(t.view(3, -1).numpy() for t in (y, u, rhs)),
                      thresholds, 1.8, False, sums, True, correlations.view(3, -1).numpy(), rho)
    rho_b = torch.from_numpy(rho).to(dtype)[:, None, None, None]
    assert torch.allclose(correlations, rho_b * (x - y_old + u_old), atol=1e-5)
    v = 1.8 * x - 0.8 * y_old + u_old
    tau = torch.from_numpy(thresholds).to(dtype)[:, None, None, None]
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(y, torch.sign(v) * (v.abs() - tau).clamp_min(0), atol=rtol)
    assert torch.allclose(u, v - y, atol=rtol) and torch.allclose(rhs, y - u, atol=rtol)
    expected = _squared_norms(x.double(), y_old.double(), y.double(), u.double())
    assert torch.allclose(torch.from_numpy(sums), expected, rtol=rtol)
