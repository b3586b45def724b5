"""Every public entry point rejects bad input with an error that names the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import latentebm as le
from latentebm._validation import as_tensor, check_finite, check_int, check_scalar, check_seed

rng = np.random.default_rng(0)
W = rng.standard_normal((20, 30))
Y = rng.standard_normal((4, 20))


@pytest.mark.parametrize("solver", [le.fista, le.ista])
@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"Y": np.full((4, 20), np.nan)}, ValueError, "Y"),
        ({"Y": np.full((4, 20), np.inf)}, ValueError, "Y"),
        ({"W": np.full((20, 30), np.nan)}, ValueError, "W"),
        ({"Y": np.zeros((0, 20))}, ValueError, "Y"),
        ({"Y": np.zeros((4, 21))}, ValueError, "Y"),
        ({"Y": np.zeros(20)}, ValueError, "Y"),
        ({"W": np.zeros(20)}, ValueError, "W"),
        ({"lam": -1.0}, ValueError, "lam"),
        ({"lam": float("nan")}, ValueError, "lam"),
        ({"lam": "big"}, TypeError, "lam"),
        ({"Y": np.array([["a"] * 20] * 4)}, TypeError, "Y"),
        ({"z0": np.zeros((4, 29))}, ValueError, "z0"),
        ({"z0": np.full((4, 30), np.nan)}, ValueError, "z0"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"tol": -1e-3}, ValueError, "tol"),
        ({"lipschitz": -2.0}, ValueError, "lipschitz"),
    ],
)
def test_solver_rejects(solver, kwargs, error, name):
    _check_rejects(solver, kwargs, error, name)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [({"Y": np.full((4, 20), np.nan)}, ValueError, "Y"),
     ({"W": np.full((20, 30), np.inf)}, ValueError, "W"),
     ({"lam": -1.0}, ValueError, "lam"),
     ({"z0": np.full((4, 30), np.nan)}, ValueError, "z0"),
     ({"z0": np.zeros((3, 30))}, ValueError, "z0"),
     ({"max_iter": 0}, ValueError, "max_iter"),
     ({"tol": float("nan")}, ValueError, "tol")],
)
def test_gram_cd_rejects(kwargs, error, name):
    _check_rejects(lambda *a, **k: le.solve(*a, method="gram_cd", **k), kwargs, error, name)


def _check_rejects(solver, kwargs, error, name):
    args = {"Y": Y, "W": W, "lam": 0.1, **kwargs}
    Y_, W_, lam_ = args.pop("Y"), args.pop("W"), args.pop("lam")
    with pytest.raises(error, match=name):
        solver(Y_, W_, lam_, **args)


def test_mismatched_torch_dtypes():
    with pytest.raises(TypeError, match="dtype"):
        le.fista(torch.tensor(Y, dtype=torch.float32), torch.tensor(W, dtype=torch.float64), 0.1)


def test_integer_tensor_rejected():
    with pytest.raises(TypeError, match="Y"):
        le.fista(torch.zeros(4, 20, dtype=torch.int64), torch.tensor(W), 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mismatched_devices():
    with pytest.raises(ValueError, match="device"):
        le.fista(torch.tensor(Y).cuda(), torch.tensor(W), 0.1)


def test_energy_and_gap_validate_codes():
    with pytest.raises(ValueError, match="Z"):
        le.lasso_energy(Y, W, np.zeros((4, 3)), 0.1)
    with pytest.raises(ValueError, match="lam"):
        le.duality_gap(Y, W, np.zeros((4, 30)), -0.1)
    with pytest.raises(ValueError, match="Z"):
        le.duality_gap(Y, W, -np.ones((4, 30)), 0.1, nonneg=True)


def test_sparse_coding_rejects():
    with pytest.raises(ValueError, match="lam"):
        le.SparseCoding(20, 30, -1.0)
    with pytest.raises(ValueError, match="n_atoms"):
        le.SparseCoding(20, 0, 0.1)
    with pytest.raises(ValueError, match="init"):
        le.SparseCoding(20, 30, 0.1, init=np.zeros((20, 30)))
    with pytest.raises(ValueError, match="init"):
        le.SparseCoding(20, 30, 0.1, init=np.ones((20, 31)))
    model = le.SparseCoding(20, 30, 0.1)
    with pytest.raises(ValueError, match="Y"):
        model.fit(np.zeros((10, 19)))
    with pytest.raises(ValueError, match="Y"):
        model.fit(np.full((10, 20), np.nan))
    with pytest.raises(ValueError, match="Y"):
        model.fit(np.zeros((0, 20)))
    with pytest.raises(ValueError, match="method"):
        model.fit(Y, method="magic")
    with pytest.raises(ValueError, match="epochs"):
        model.fit(Y, epochs=0)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        le.SparseCoding.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="damaged"):
        le.SparseCoding.load(bad)
    model = le.SparseCoding(20, 30, 0.1)
    path = tmp_path / "model.safetensors"
    model.save(path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="damaged"):
        le.SparseCoding.load(truncated)


# ----------------------------------------------------------------------------- the validation layer


@pytest.mark.parametrize(
    ("seed", "error"),
    [(2**63, ValueError), (2**64 + 5, ValueError), (-1, ValueError), (1.5, TypeError),
     ("0", TypeError), (True, TypeError), (None, TypeError)],
)
def test_bad_seed_is_named(seed, error):
    with pytest.raises(error, match="seed"):
        check_seed(seed)


def test_good_seeds_pass():
    assert check_seed(np.int64(7)) == 7
    assert check_seed(2**32 - 1) == 2**32 - 1


def test_device_is_checked_before_values():
    model = torch.zeros(3, dtype=torch.float32)
    meta = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match=r"Y is on meta but the model is on cpu"):
        as_tensor(meta, "Y", like=model)
    with pytest.raises(ValueError, match="Y is on the meta device"):
        as_tensor(meta, "Y")
    with pytest.raises(TypeError, match="Y has dtype torch.float64 but the model"):
        as_tensor(torch.full((2, 3), float("nan"), dtype=torch.float64), "Y", like=model)
    converted = as_tensor(np.ones((2, 3)), "Y", like=model)
    assert converted.dtype == torch.float32 and converted.device == model.device


@pytest.mark.parametrize(
    "value",
    [torch.tensor([1.0, float("nan")]), torch.tensor([float("-inf")], dtype=torch.float64),
     torch.tensor([1.0, float("inf")]).t(), np.array([np.nan]), np.array([np.inf], np.float16),
     np.array([1e300, 2e300], dtype=np.longdouble) * 1e300],
)
def test_non_finite_is_named(value):
    with pytest.raises(ValueError, match="Y contains NaN or infinite"):
        as_tensor(value, "Y")


def test_check_finite_every_dtype():
    for t in (torch.arange(4), torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.half)):
        check_finite(t, "t")
    with pytest.raises(ValueError, match="t contains"):
        check_finite(torch.tensor([float("nan")], dtype=torch.bfloat16), "t")
    with pytest.raises(TypeError, match="dense"):
        as_tensor(torch.eye(3).to_sparse(), "W")
    with pytest.raises(ValueError, match="lam"):
        check_scalar(torch.empty((), device="meta"), "lam")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_check_finite_large_finite_values_whose_sum_overflows(dtype):
    big = torch.full((64,), torch.finfo(dtype).max / 2, dtype=dtype)
    assert not torch.isfinite(big.sum())
    check_finite(big, "big")  # finite values: the slow exact check must pass them
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = big.clone()
        t[17] = bad
        with pytest.raises(ValueError, match="big contains"):
            check_finite(t, "big")
    mixed = torch.tensor([float("inf"), -float("inf")], dtype=dtype)
    with pytest.raises(ValueError, match="mixed contains"):
        check_finite(mixed, "mixed")


def test_check_int_bounds():
    with pytest.raises(ValueError, match="n must fit in a 64-bit integer"):
        check_int(2**64 + 1, "n", low=0)
    with pytest.raises(ValueError, match="n must be <= 5"):
        check_int(6, "n", high=5)
    assert check_int(np.int32(4), "n", low=0, high=5) == 4


@settings(max_examples=60, deadline=None)
@given(arrays(dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int64, np.bool_]),
              shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
       st.sampled_from([None, 1, 2, (2, 3)]))
def test_as_tensor_property(value, ndim):
    """Any numeric array gives a finite tensor of an allowed rank, or an error naming it."""
    try:
        t = as_tensor(value, "Y", ndim=ndim)
    except ValueError as exc:
        assert str(exc).startswith("Y ")
        return
    assert t.dtype in (torch.float32, torch.float64) and t.numel() > 0
    assert bool(torch.isfinite(t).all())
    if ndim is not None:
        assert t.dim() in ((ndim,) if isinstance(ndim, int) else ndim)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.booleans(), st.none()))
def test_seed_property(seed):
    """A seed is accepted exactly when it is an int in [0, 2**32 - 1]; else the error names it."""
    good = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= 2**32 - 1
    if good:
        assert check_seed(seed) == seed
    else:
        with pytest.raises((TypeError, ValueError), match="^seed "):
            check_seed(seed)


def test_models_refuse_inputs_their_dtype_cannot_hold_and_results_that_overflow():
    """1e200 passed the finiteness check in float64 and became inf in the float32 model, and
    finite codes whose energies overflow came back as inf/NaN."""
    rng = np.random.default_rng(0)
    W, Y = rng.standard_normal((8, 5)), rng.standard_normal((3, 8))
    sc, psd = le.SparseCoding(8, 5, lam=0.1, init=W), le.PSD(8, 5, 0.1, init=W)
    ae = le.ConvSparseAutoencoder(3, 3, 1, mode="sparse-ae")
    images = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="Z holds values beyond the range of float32"):
        sc.decode(np.full((2, 5), 1e200))
    with pytest.raises(ValueError, match="Y holds values beyond the range of float32"):
        psd.predict(Y * 1e200)
    with pytest.raises(FloatingPointError, match="energies of 3 sample"):
        psd.energy(Y, np.full((3, 5), 1e20))
    with pytest.raises(FloatingPointError, match="2 signal.s. are too large for float32"):
        ae.energy(images * 1e20)
    with pytest.raises(FloatingPointError, match="decoded signals"):
        sc.decode(np.full((2, 5), 3e38))
    assert np.isfinite(sc.decode(np.full((2, 5), 1e30))).all()  # large but representable
    with pytest.raises(TypeError, match="must hold numbers, got dtype timedelta64"):
        le.fista(np.array([[1, 2]], dtype="timedelta64[s]"), np.eye(2), 0.1)


def test_models_that_solve_for_codes_themselves_refuse_underflowing_images():
    """ConvSparseAutoencoder.encode(method="fista") and LISTA.targets called the solver past
    the underflow check of le.fista: images of 1e-23 in float32 came back "converged" with a
    gap of 0 at 4-7 % above the optimal energy."""
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 1, 8, 8)).astype(np.float32) * 1e-23
    ae = le.ConvSparseAutoencoder(3, 3, 1, lam=3e-24)
    for call in (lambda: ae.encode(images, method="fista"), lambda: ae.energy(images)):
        with pytest.raises(FloatingPointError, match="too small for float32"):
            call()
    net = le.LISTA(torch.tensor(rng.standard_normal((8, 5)), dtype=torch.float32), 1e-24)
    with pytest.raises(FloatingPointError, match="too small for float32"):
        net.targets(rng.standard_normal((3, 8)).astype(np.float32) * 1e-23)


@pytest.mark.parametrize("scale", [1e200, 1e-170])
def test_atoms_far_from_unit_scale_normalise_to_unit_norm(scale):
    """normalize_ divided by a norm that overflowed (atoms of 1e200 became zeros, and a model
    built from them coded everything as zero, "converged") or underflowed (1e-170 read as an
    all-zero kernel)."""
    rng = np.random.default_rng(0)
    W, K = rng.standard_normal((8, 5)) * scale, rng.standard_normal((3, 1, 3, 3)) * scale
    norms = [
        le.DenseDictionary(W.copy()).normalize_().W.norm(dim=0),
        le.ConvDictionary(K.copy()).normalize_().kernels.flatten(1).norm(dim=1),
        le.ConvDictionaryLearning(3, 3, 1, 0.1, init=K, dtype=torch.float64
                                  ).kernels.flatten(1).norm(dim=1),
        le.SparseCoding(8, 5, 0.1, init=W, dtype=torch.float64).W.norm(dim=0),
        le.ConditionalLinearDecoder(W).W.detach().norm(dim=0),
    ]
    for n in norms:
        torch.testing.assert_close(n, torch.ones_like(n))


def test_optimal_codes_and_free_energies_cut_short_by_the_cap_warn():
    """LISTA.targets, PSD.free_energy, ConvSparseAutoencoder.energy and SparseCoding.energy
    return codes or energies without the converged flag: an iteration cap of 1 gave
    non-optimal values with no sign."""
    rng = np.random.default_rng(0)
    # 40 atoms in 20 dimensions: one round of "gram_cd" solves 5 atoms in 8 exactly
    W, Y = rng.standard_normal((20, 40)), rng.standard_normal((3, 20))
    images = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    calls = [
        lambda **kw: le.LISTA(W, 0.1).targets(Y, **kw),
        lambda **kw: le.PSD(20, 40, 0.1, init=W).free_energy(Y, **kw),
        lambda **kw: le.ConvSparseAutoencoder(3, 3, 1, lam=0.1).energy(images, **kw),
    ]
    for call in calls:
        with pytest.warns(le.NotConvergedWarning, match="stopped at the iteration cap"):
            call(max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", le.NotConvergedWarning)
        for call in calls:
            call()  # the defaults converge


def test_messages_name_the_argument_at_fault():
    Y, W = np.ones((2, 3)), np.eye(3)
    with pytest.raises(ValueError, match="lam must be finite, got an integer of 401 digits"):
        le.fista(Y, W, 10**400)
    with pytest.raises(TypeError, match="nonneg must be True or False, got 1"):
        le.lasso_energy(Y, W, Y, 0.1, nonneg=1)
    assert le.duality_gap(Y, W, Y, 0.1, nonneg=np.True_).shape == (2,)
    with pytest.raises(TypeError, match="besides tol, max_iter"):
        le.ista(Y, W, 0.1, tolerance=1e-3)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        le.DenseDictionary(W).lipschitz((3,), n_iter=0)  # returned 2e-308 as the estimate


def test_unit_ball_checks_its_atom_dimensions():
    """UnitBall(1.5) failed in flatten, UnitBall("a") in a comparison, and UnitBall(3) on
    one-dimensional codes in a broadcast deep inside the solver."""
    from latentebm.regularizers import UnitBall

    for bad in (1.5, "a"):
        with pytest.raises(TypeError, match="atom_ndim must be an integer"):
            UnitBall(bad)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"atom_ndim=3\) needs codes of at least 3"):
        le.fista(rng.standard_normal((3, 8)), rng.standard_normal((8, 5)), 0.1,
                 regularizer=UnitBall(3))
    with pytest.raises(ValueError, match="beta must be <= 3.4"):
        le.PSD(3, 2, 0.1, beta=1e300)  # blamed W ("W contains NaN or infinite values")
    with pytest.raises(FloatingPointError, match="the warm start z0 hold values too large"):
        le.fista(torch.ones(3, 3), torch.eye(3), 0.1, z0=torch.full((3, 3), 1e30))


@pytest.mark.parametrize("scale, words", [(1e20, "too large for float32"),
                                          (1e-23, "too small for float32")])
def test_fits_refuse_signals_whose_squared_norms_leave_the_dtype(scale, words):
    """Three ``fit``s skipped the scale check of ``encode``: signals of 1e-23 in float32
    trained SparseCoding, PSD and ConvDictionaryLearning without an error (every energy and gap
    zero); signals of 1e20 stopped every fit at its first step with advice to lower the learning
    rate, or (PSD) a complaint about NaN atoms the user never gave."""
    rng = np.random.default_rng(2)
    Y = rng.random((16, 8)).astype(np.float32) * scale
    images = rng.random((2, 1, 12, 12)).astype(np.float32) * scale
    W = torch.tensor(rng.standard_normal((8, 4)), dtype=torch.float32)
    fits = [
        lambda: le.SparseCoding(8, 4, lam=0.1).fit(Y, epochs=1, progress=False),
        lambda: le.PSD(8, 4, 0.1).fit(Y, epochs=1, progress=False),
        lambda: le.LISTA(W, 0.1).fit(Y, epochs=1, progress=False),
        lambda: le.ConvDictionaryLearning(2, 3, 1, 0.1).fit(images, epochs=1, progress=False),
        lambda: le.ConvSparseAutoencoder(2, 3, 1).fit(images, epochs=1, progress=False),
    ]
    for fit in fits:
        with pytest.raises(FloatingPointError, match=words):
            fit()
