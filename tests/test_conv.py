"""Convolutional sparse coding: the operator, the shared FISTA on images, dictionary learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import latentebm as le
from latentebm.operators import ConvDictionary, LinearOperator

F64 = torch.float64


def unit_kernels(n_atoms, channels, kh, kw, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    K = torch.randn(n_atoms, channels, kh, kw, generator=gen, dtype=F64)
    return (K / K.flatten(1).norm(dim=1)[:, None, None, None]).to(dtype)


def toeplitz(op: ConvDictionary, image_shape) -> torch.Tensor:
    """The explicit matrix of ``op``: column j is the decoded j-th unit code."""
    code_shape = op.code_shape(image_shape)
    n_codes = int(np.prod(code_shape))
    eye = torch.eye(n_codes, dtype=op.dtype).reshape(n_codes, *code_shape)
    return op.decode(eye).reshape(n_codes, -1).T


# --------------------------------------------------------------------------- the operator


@pytest.mark.parametrize("boundary", ["full", "circular"])
@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("channels,kh,kw", [(1, 3, 3), (3, 4, 2), (2, 5, 4)])
def test_adjoint_is_exact(boundary, method, channels, kh, kw):
    op = ConvDictionary(unit_kernels(4, channels, kh, kw), boundary=boundary, method=method)
    image_shape = (channels, 9, 8)  # odd height, even width
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, *op.code_shape(image_shape), generator=gen, dtype=F64)
    y = torch.randn(3, *image_shape, generator=gen, dtype=F64)
    Kz, Kty = op.decode(z), op.adjoint(y)
    assert Kz.shape == y.shape and Kty.shape == z.shape
    lhs, rhs = (Kz * y).sum(), (z * Kty).sum()
    assert abs(float(lhs - rhs)) <= 1e-10 * max(1.0, abs(float(lhs)))
    # gram is AᵀA
    torch.testing.assert_close(op.gram(z), op.adjoint(op.decode(z)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("boundary", ["full", "circular"])
def test_fft_and_direct_agree(boundary):
    K = unit_kernels(5, 3, 9, 9)
    direct = ConvDictionary(K, boundary=boundary, method="direct")
    fft = ConvDictionary(K, boundary=boundary, method="fft")
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, *direct.code_shape((3, 20, 17)), generator=gen, dtype=F64)
    y = torch.randn(2, 3, 20, 17, generator=gen, dtype=F64)
    torch.testing.assert_close(direct.decode(z), fft.decode(z), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(direct.adjoint(y), fft.adjoint(y), rtol=1e-10, atol=1e-10)
    # an odd number of atoms and an odd width exercise the packed inverse transform
    torch.testing.assert_close(direct.gram(z), fft.gram(z), rtol=1e-10, atol=1e-10)


def test_soft_threshold_fast_path_is_the_clamp_formula():
    from latentebm.regularizers import soft_threshold

    v = torch.randn(2, 3, 7, 5, dtype=F64)
    for tau in (0.0, 0.3, torch.tensor(0.3, dtype=F64)):
        expected = v - torch.clamp(v, min=-float(tau), max=float(tau))
        assert torch.equal(soft_threshold(v, tau), expected)
    per_sample = torch.tensor([0.1, 0.5], dtype=F64)[:, None, None, None]
    torch.testing.assert_close(soft_threshold(v, per_sample),
                               v - torch.clamp(v, min=-per_sample, max=per_sample))
    # large samples (conv codes) take the per-sample softshrink loop: the same numbers
    big = torch.randn(2, 8, 64, 64, dtype=F64)
    expected = big - torch.clamp(big, min=-per_sample, max=per_sample)
    assert torch.equal(soft_threshold(big, per_sample), expected)
    with torch.enable_grad():  # autograd keeps the clamp formula, and its gradient
        learned = per_sample.clone().requires_grad_(True)
        soft_threshold(big, learned).sum().backward()
    assert learned.grad is not None


def test_decode_is_a_sum_of_convolutions():
    """``y = Σ_i K_i * z_i`` with full codes: a code spike at (r, c) paints kernel i whose
    top-left corner sits at (r − k + 1, c − k + 1) of the image."""
    K = unit_kernels(2, 1, 3, 3)
    op = ConvDictionary(K)
    z = torch.zeros(1, 2, 8, 8, dtype=F64)
    z[0, 1, 4, 5] = 2.0
    y = op.decode(z)
    expected = torch.zeros(1, 1, 6, 6, dtype=F64)
    expected[0, 0, 2:5, 3:6] = 2.0 * K[1, 0]
    torch.testing.assert_close(y, expected)
    # full codes reach the corners: a spike in the code's corner touches only pixel (0, 0)
    z = torch.zeros(1, 2, 8, 8, dtype=F64)
    z[0, 0, 0, 0] = 1.0
    y = op.decode(z)
    assert torch.count_nonzero(y) == 1 and y[0, 0, 0, 0] == K[0, 0, 2, 2]


def test_circular_matches_the_periodic_definition():
    K = unit_kernels(2, 1, 3, 3)
    op = ConvDictionary(K, boundary="circular")
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 2, 7, 6, generator=gen, dtype=F64)
    expected = torch.zeros(1, 1, 7, 6, dtype=F64)
    for m in range(2):
        for i in range(3):
            for j in range(3):
                expected[0, 0] += K[m, 0, i, j] * torch.roll(z[0, m], shifts=(i, j), dims=(0, 1))
    torch.testing.assert_close(op.decode(z), expected)


def test_lipschitz():
    K = unit_kernels(4, 2, 5, 5)
    circ = ConvDictionary(K, boundary="circular")
    A = toeplitz(circ, (2, 8, 8))
    exact = torch.linalg.eigvalsh(A @ A.T)[-1]
    torch.testing.assert_close(circ.lipschitz((2, 8, 8)), exact, rtol=1e-12, atol=0)
    full = ConvDictionary(K)
    for size in (8, 40):
        bound = full.lipschitz((2, size, size))
        power = LinearOperator.lipschitz(full, (2, size, size), n_iter=300) / 1.01
        assert power <= bound  # a certified upper bound...
        assert bound <= power * (1.3 if size == 8 else 1.02)  # ...and tight on larger images
    # the matrix's largest eigenvalue agrees
    A = toeplitz(ConvDictionary(K), (2, 8, 8))
    top = torch.linalg.eigvalsh(A.T @ A)[-1]
    assert top <= full.lipschitz((2, 8, 8))


def test_normalize_and_cache():
    K = 3 * unit_kernels(3, 1, 4, 4)
    op = ConvDictionary(K.clone())
    L_before = op.lipschitz((1, 10, 10))
    op.normalize_()
    torch.testing.assert_close(op.atom_norms(), torch.ones(3, dtype=F64))
    torch.testing.assert_close(op.lipschitz((1, 10, 10)), L_before / 9)


def test_code_and_signal_shapes():
    op = ConvDictionary(unit_kernels(6, 3, 5, 4))
    assert op.code_shape((3, 10, 12)) == (6, 14, 15)
    assert op.signal_shape((6, 14, 15)) == (3, 10, 12)
    circ = ConvDictionary(unit_kernels(6, 3, 5, 4), boundary="circular")
    assert circ.code_shape((3, 10, 12)) == (6, 10, 12)


# --------------------------------------------------------------------------- FISTA on images


def tiny_problem(seed=0, boundary="full"):
    K = unit_kernels(2, 1, 3, 3, seed=seed)
    op = ConvDictionary(K, boundary=boundary)
    gen = torch.Generator().manual_seed(seed + 10)
    Y = torch.randn(3, 1, 6, 6, generator=gen, dtype=F64)
    lam = 0.2 * float(op.adjoint(Y).abs().amax())
    return op, Y, lam


@pytest.mark.parametrize("boundary", ["full", "circular"])
def test_conv_fista_equals_dense_fista_on_the_toeplitz_matrix(boundary):
    op, Y, lam = tiny_problem(boundary=boundary)
    A = toeplitz(op, (1, 6, 6))
    conv = le.fista(Y, op, lam, tol=1e-12, max_iter=20_000)
    dense = le.fista(Y.reshape(3, -1), A, lam, tol=1e-12, max_iter=20_000)
    assert conv.all_converged and dense.all_converged
    assert conv.z.shape == (3, *op.code_shape((1, 6, 6)))
    torch.testing.assert_close(conv.energy, dense.energy, rtol=1e-9, atol=0)
    torch.testing.assert_close(conv.z.reshape(3, -1), dense.z, rtol=0, atol=1e-5)
    # and both agree with the energy evaluated on the other representation
    torch.testing.assert_close(le.lasso_energy(Y.reshape(3, -1), A, conv.z.reshape(3, -1), lam),
                               dense.energy, rtol=1e-9, atol=0)


def test_gap_is_a_certificate_and_reaches_tol():
    op, Y, lam = tiny_problem(seed=1)
    optimum = le.fista(Y, op, lam, tol=1e-13, max_iter=50_000).energy
    for max_iter in (1, 3, 10, 30):
        result = le.fista(Y, op, lam, max_iter=max_iter, tol=0.0)
        gap = le.duality_gap(Y, op, result.z, lam)
        assert torch.all(gap >= 0)
        energy = le.lasso_energy(Y, op, result.z, lam)
        assert torch.all(gap >= energy - optimum - 1e-12)
    result = le.fista(Y, op, lam, tol=1e-8)
    assert result.all_converged
    assert torch.all(result.gap <= 1e-8 * result.energy)
    ista = le.ista(Y, op, lam, tol=1e-6, max_iter=20_000)
    assert ista.all_converged


def test_fista_on_numpy_images_and_float32():
    op, Y, lam = tiny_problem(seed=2)
    result = le.fista(Y.numpy(), op, lam, tol=1e-8)
    assert isinstance(result.z, np.ndarray) and result.z.shape == (3, 2, 8, 8)
    op32 = op.to(dtype=torch.float32)
    r32 = le.fista(Y.float(), op32, lam)
    assert r32.z.dtype == torch.float32 and r32.all_converged
    np.testing.assert_allclose(r32.energy.double().numpy(), result.energy, rtol=1e-4)
    warm = le.fista(Y, op, lam, z0=torch.from_numpy(result.z), tol=1e-8)
    assert warm.n_iter <= 10


def test_nonneg_conv_codes():
    op, Y, lam = tiny_problem(seed=3)
    result = le.fista(Y, op, lam, nonneg=True, tol=1e-8)
    assert result.all_converged and float(result.z.min()) >= 0


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
    K = unit_kernels(2, 1, 3, 3)
    op = ConvDictionary(K)
    Y = torch.zeros(2, 1, 6, 6, dtype=F64)
    with pytest.raises(ValueError, match="kernels must have 4 dimensions"):
        ConvDictionary(torch.zeros(2, 3, 3, dtype=F64))
    with pytest.raises(ValueError, match="kernels contains NaN"):
        ConvDictionary(torch.full((1, 1, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="boundary must be one of"):
        ConvDictionary(K, boundary="same")
    with pytest.raises(ValueError, match="method must be one of"):
        ConvDictionary(K, method="winograd")
    with pytest.raises(ValueError, match="Y has 3 channels but the kernels have 1"):
        le.fista(torch.zeros(2, 3, 6, 6, dtype=F64), op, 0.1)
    with pytest.raises(ValueError, match="smaller than the 3x3 kernels"):
        le.fista(torch.zeros(2, 1, 2, 6, dtype=F64), op, 0.1)
    with pytest.raises(ValueError, match="Y must be images"):
        le.fista(torch.zeros(2, 36, dtype=F64), op, 0.1)
    with pytest.raises(ValueError, match="Y contains NaN"):
        le.fista(torch.full((2, 1, 6, 6), float("inf"), dtype=F64), op, 0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        le.fista(Y, op, -1.0)
    with pytest.raises(ValueError, match=r"z0 must have shape \(2, 2, 8, 8\)"):
        le.fista(Y, op, 0.1, z0=torch.zeros(2, 2, 6, 6, dtype=F64))
    with pytest.raises(TypeError, match="Y has dtype torch.float32"):
        le.fista(Y.float(), op, 0.1)
    with pytest.raises(ValueError, match="Z must be code maps"):
        op.check_code(torch.zeros(2, 3, 8, 8, dtype=F64))
    model = le.ConvDictionaryLearning(2, 3, 1, lam=0.1)
    with pytest.raises(ValueError, match="Y has 3 channels"):
        model.fit(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        le.ConvDictionaryLearning(2, 0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        le.ConvDictionaryLearning(2, 3, lam=-0.5)


# --------------------------------------------------------------------------- dictionary learning


def planted(seed, n_atoms=4, k=5, n=12, size=16, density=0.01, noise=0.01):
    gen = torch.Generator().manual_seed(seed)
    K = unit_kernels(n_atoms, 1, k, k, seed=seed)
    shape = (n, n_atoms, size + k - 1, size + k - 1)
    Z = torch.randn(shape, generator=gen, dtype=F64) * (
        torch.rand(shape, generator=gen, dtype=F64) < density)
    Y = ConvDictionary(K).decode(Z) + noise * torch.randn(n, 1, size, size, generator=gen,
                                                          dtype=F64)
    return K, Y


def shift_similarity(true: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """For each true kernel, the best |normalised correlation| with a learned one, any shift."""
    k = true.shape[-1]
    return F.conv2d(true, learned, padding=k - 1).abs().flatten(2).amax(2).amax(1)


def test_planted_dictionary_is_recovered():
    K, Y = planted(seed=0)
    model = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, seed=0, init="random", dtype=F64)
    model.fit(Y, epochs=15, batch_size=4, max_iter=50, progress=False)
    sim = shift_similarity(K, model.dictionary())
    assert torch.all(sim > 0.95), sim
    # the learned kernels are unit-norm
    torch.testing.assert_close(model.dictionary().flatten(1).norm(dim=1),
                               torch.ones(4, dtype=F64))


@pytest.mark.parametrize("channels,size", [(1, (16, 16)), (3, (15, 12))])
def test_circular_kernel_loss_matches_autograd(channels, size):
    """The Fourier-domain kernel objective of circular dictionary learning: value and gradient
    equal those of differentiating the decoder."""
    from latentebm.models.conv_dictionary_learning import _CircularKernelLoss

    gen = torch.Generator().manual_seed(4)
    Y = torch.randn(3, channels, *size, generator=gen, dtype=F64)
    Z = torch.randn(3, 5, *size, generator=gen, dtype=F64)
    V = torch.randn(5, channels, 4, 4, generator=gen, dtype=F64, requires_grad=True)
    r = ConvDictionary(V, boundary="circular").decode(Z) - Y
    f = 0.5 * (r * r).sum()
    (grad,) = torch.autograd.grad(f, V)
    loss = _CircularKernelLoss(Y, Z, 4)
    value, fourier_grad = loss.value_and_grad(V.detach())
    torch.testing.assert_close(value, f.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(loss.value(V.detach()), f.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(fourier_grad, grad, rtol=1e-10, atol=1e-10)


def test_circular_training_lowers_the_energy():
    K, Y = planted(seed=5, n=6)
    model = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, boundary="circular", seed=0,
                                      init="random", dtype=F64)
    energies = []
    model.fit(Y, epochs=6, batch_size=6, max_iter=20, replace_threshold=None, progress=False,
              callback=lambda step, m, e: energies.append(float(e.sum())))
    assert energies[-1] < 0.9 * energies[0]
    torch.testing.assert_close(model.dictionary().flatten(1).norm(dim=1),
                               torch.ones(4, dtype=F64))


def test_coding_method_auto_is_admm_for_circular_and_fista_for_full():
    K, Y = planted(seed=5, n=4)

    def kernels(boundary, method):
        model = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, boundary=boundary, seed=0,
                                          init="random", dtype=F64)
        model.fit(Y, epochs=2, batch_size=2, max_iter=10, dict_steps=2, method=method,
                  replace_threshold=None, progress=False)
        return model.dictionary()

    torch.testing.assert_close(kernels("circular", "auto"), kernels("circular", "admm"),
                               rtol=0, atol=0)
    assert not torch.allclose(kernels("circular", "auto"), kernels("circular", "fista"))
    torch.testing.assert_close(kernels("full", "auto"), kernels("full", "fista"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown method 'lars'"):
        kernels("full", "lars")
    with pytest.raises(ValueError, match="method 'gram_cd' cannot solve"):
        kernels("circular", "gram_cd")


def test_training_lowers_the_energy_and_resumes_exactly(tmp_path):
    K, Y = planted(seed=1, n=8)
    fresh = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, seed=2, dtype=F64)
    fresh.fit(Y, epochs=1, batch_size=4, max_iter=1, dict_steps=1, progress=False)
    before = float(fresh.energy(Y).mean())
    fresh.fit(Y, epochs=4, batch_size=4, max_iter=30, progress=False)
    assert float(fresh.energy(Y).mean()) < 0.9 * before

    path = tmp_path / "cdl.safetensors"
    a = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, seed=3, dtype=F64)
    a.fit(Y, epochs=1, batch_size=4, max_iter=30, checkpoint=path, progress=False)
    b = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, seed=3, dtype=F64)
    b.fit(Y, epochs=2, batch_size=4, max_iter=30, checkpoint=path, resume=True, progress=False)
    c = le.ConvDictionaryLearning(4, 5, 1, lam=0.05, seed=3, dtype=F64)
    c.fit(Y, epochs=2, batch_size=4, max_iter=30, progress=False)
    torch.testing.assert_close(b.dictionary(), c.dictionary())
    assert len(b.history_) == 2

    c.save(tmp_path / "final.safetensors")
    loaded = le.ConvDictionaryLearning.load(tmp_path / "final.safetensors")
    torch.testing.assert_close(loaded.dictionary(), c.dictionary())
    with pytest.raises(ValueError, match="another configuration"):
        le.ConvDictionaryLearning(4, 5, 1, lam=0.5, seed=3, dtype=F64).fit(
            Y, epochs=2, batch_size=4, checkpoint=path, resume=True, progress=False)
