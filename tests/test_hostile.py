"""The hostile-input suite: drawn bad arrays, shapes, dtypes, scalars and files for the public
entry points. Each call either fails with a ValueError/TypeError (FloatingPointError for
divergence) whose message names the offending argument, or returns a finite, correctly shaped
result. Nothing silent, no raw internal error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentebm as le
from latentebm.sklearn import DictionaryLearning, SparseCoder

SETTINGS = settings(
    max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
N_FEATURES, N_ATOMS, BATCH = 6, 8, 5

GOOD_W = np.linalg.qr(np.random.default_rng(0).standard_normal((N_FEATURES, N_FEATURES)))[0]
GOOD_W = np.hstack([GOOD_W, GOOD_W[:, :2]])
GOOD_Y = np.random.default_rng(1).standard_normal((BATCH, N_FEATURES))

special = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def bad_arrays(draw, shape: tuple[int, ...]):
    """Arrays that must be refused where an array of ``shape`` is expected."""
    kind = draw(st.sampled_from(["non_finite", "rank", "shape", "empty", "dtype", "object"]))
    if kind == "non_finite":
        a = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape)
        a.flat[draw(st.integers(0, a.size - 1))] = draw(special)
        return a
    if kind == "rank":
        extra = draw(st.sampled_from([(), (2,), (2, 2, 2)]))
        return np.ones(shape[:1] + extra) if extra else np.float64(1.0)
    if kind == "shape":
        return np.ones((shape[0], shape[1] + draw(st.integers(1, 3))))
    if kind == "empty":
        return np.ones((0, shape[1])) if draw(st.booleans()) else np.ones((shape[0], 0))
    if kind == "dtype":
        return np.ones(shape, dtype=draw(st.sampled_from([np.complex64, np.str_])))
    return np.array([[object()] * shape[1]] * shape[0], dtype=object)


bad_scalars = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=True),
    special.map(float),
    st.sampled_from(["0.1", None, [0.1], 1j, object()]),
)


def assert_named(exc: BaseException, *names: str) -> None:
    message = str(exc)
    assert any(name in message for name in names), f"{names} not named in: {message}"


def clear_error_or_result(call, names: tuple[str, ...], shape: tuple[int, ...]):
    try:
        out = call()
    except (ValueError, TypeError, FloatingPointError) as exc:
        assert_named(exc, *names)
        return None
    z = np.asarray(out)
    assert z.shape == shape and np.isfinite(z).all()
    return out


# ---------------------------------------------------------------- solvers and energies
@pytest.mark.parametrize("solver", [le.fista, le.ista, le.solve])
@SETTINGS
@given(Y=bad_arrays((BATCH, N_FEATURES)))
def test_solvers_bad_signals(solver, Y):
    clear_error_or_result(lambda: solver(Y, GOOD_W, 0.1, max_iter=20).z, ("Y",),
                          (BATCH, N_ATOMS))


@pytest.mark.parametrize("solver", [le.fista, le.solve])
@SETTINGS
@given(W=bad_arrays((N_FEATURES, N_ATOMS)))
def test_solvers_bad_dictionary(solver, W):
    clear_error_or_result(lambda: solver(GOOD_Y, W, 0.1, max_iter=20).z, ("W", "Y"),
                          (BATCH, np.shape(W)[1] if np.ndim(W) == 2 else -1))


@SETTINGS
@given(lam=bad_scalars)
def test_solvers_bad_lambda(lam):
    with pytest.raises((ValueError, TypeError)) as info:
        le.fista(GOOD_Y, GOOD_W, lam)
    assert_named(info.value, "lam")


@SETTINGS
@given(name=st.sampled_from(["tol", "max_iter", "lipschitz", "check_every"]),
       value=bad_scalars.filter(lambda v: v is not None))
def test_solver_bad_options(name, value):
    with pytest.raises((ValueError, TypeError)) as info:
        le.fista(GOOD_Y, GOOD_W, 0.1, **{name: value})
    assert_named(info.value, name)


@SETTINGS
@given(z0=bad_arrays((BATCH, N_ATOMS)))
def test_solver_bad_warm_start(z0):
    clear_error_or_result(lambda: le.fista(GOOD_Y, GOOD_W, 0.1, z0=z0, max_iter=20).z, ("z0",),
                          (BATCH, N_ATOMS))


@pytest.mark.parametrize("function", [le.lasso_energy, le.duality_gap])
@SETTINGS
@given(Z=bad_arrays((BATCH, N_ATOMS)))
def test_energy_and_gap_bad_codes(function, Z):
    clear_error_or_result(lambda: function(GOOD_Y, GOOD_W, Z, 0.1), ("Z",), (BATCH,))


@SETTINGS
@given(factor=st.floats(1e-9, 1e-3))
def test_too_small_lipschitz_never_converges_silently(factor):
    L = float(np.linalg.eigvalsh(GOOD_W.T @ GOOD_W).max())
    try:
        out = le.fista(GOOD_Y, GOOD_W, 0.1, lipschitz=L * factor, max_iter=500)
    except FloatingPointError as exc:
        assert_named(exc, "lipschitz")
        return
    assert np.isfinite(out.energy).all() and np.isfinite(out.gap).all()


def test_method_and_device_mismatch():
    with pytest.raises(ValueError, match="method"):
        le.solve(GOOD_Y, GOOD_W, 0.1, method="nope")
    Y = torch.tensor(GOOD_Y, device="meta")
    with pytest.raises((ValueError, TypeError)) as info:
        le.fista(Y, torch.tensor(GOOD_W), 0.1)
    assert_named(info.value, "Y", "device")


# ---------------------------------------------------------------- models
@SETTINGS
@given(Y=bad_arrays((BATCH, N_FEATURES)))
def test_sparse_coding_fit_bad_data(Y):
    model = le.SparseCoding(n_features=N_FEATURES, n_atoms=N_ATOMS, lam=0.1, seed=0)
    try:
        model.fit(Y, epochs=1, batch_size=4, progress=False)
    except (ValueError, TypeError) as exc:
        assert_named(exc, "Y")
        return
    assert np.isfinite(model.dictionary()).all()


@SETTINGS
@given(name=st.sampled_from(["lam", "n_atoms", "n_features", "seed"]), value=bad_scalars)
def test_sparse_coding_bad_constructor(name, value):
    kwargs = {"n_features": N_FEATURES, "n_atoms": N_ATOMS, "lam": 0.1, "seed": 0, name: value}
    with pytest.raises((ValueError, TypeError)) as info:
        le.SparseCoding(**kwargs)
    assert_named(info.value, name)


@SETTINGS
@given(seed=st.one_of(st.integers(min_value=2**32), st.integers(max_value=-1)))
def test_huge_or_negative_seeds_are_named(seed):
    for make in (lambda: le.SparseCoding(n_features=4, n_atoms=4, lam=0.1, seed=seed),
                 lambda: le.ConvDictionaryLearning(3, 4, lam=0.1, seed=seed),
                 lambda: le.VAE(4, 2, seed=seed),
                 lambda: le.LISTA(GOOD_W, 0.1, seed=seed)):
        with pytest.raises((ValueError, TypeError)) as info:
            make()
        assert_named(info.value, "seed")


@pytest.mark.parametrize("make", [
    lambda flag: le.solve(GOOD_Y, GOOD_W, 0.1, nonneg=flag),
    lambda flag: le.fista(GOOD_Y, GOOD_W, 0.1, restart=flag),
    lambda flag: le.fista(GOOD_Y, GOOD_W, 0.1, backtracking=flag),
    lambda flag: le.solve(GOOD_Y, GOOD_W, 0.1, method="cd", polish=flag),
    lambda flag: le.SparseCoding(N_FEATURES, N_ATOMS, 0.1, nonneg=flag),
    lambda flag: le.LISTA(GOOD_W, 0.1, nonneg=flag),
    lambda flag: le.ConvDictionaryLearning(3, 4, lam=0.1, nonneg=flag),
])
def test_a_flag_given_as_a_string_is_refused(make):
    """``bool("no")`` is True: a string must not be read as a flag."""
    with pytest.raises(TypeError, match="must be True or False, got 'no'"):
        make("no")


@SETTINGS
@given(Y=bad_arrays((BATCH, N_FEATURES)))
def test_lista_encode_bad_data(Y):
    model = le.LISTA(GOOD_W, 0.1, 2)
    clear_error_or_result(lambda: model.encode(Y).z, ("Y",), (BATCH, N_ATOMS))


def test_lista_huge_step_stops_and_writes_nothing_non_finite(tmp_path):
    Y = np.random.default_rng(2).standard_normal((64, N_FEATURES)).astype(np.float32)
    model = le.LISTA(GOOD_W.astype(np.float32), 0.1, 2)
    ckpt = tmp_path / "lista.safetensors"
    with pytest.raises(FloatingPointError, match="step"):
        model.fit(Y, epochs=20, batch_size=8, lr=1e4, checkpoint=ckpt, progress=False,
                  max_grad_norm=None)
    if ckpt.exists():
        reloaded = le.LISTA.load(ckpt)
        assert all(bool(torch.isfinite(p).all()) for p in reloaded.state_dict().values()
                   if isinstance(p, torch.Tensor) and p.is_floating_point())


@SETTINGS
@given(X=bad_arrays((BATCH, 784)))
def test_vae_fit_bad_data(X):
    model = le.VAE(784, 2, hidden=(8,))
    try:
        model.fit(X, epochs=1, batch_size=4, progress=False)
    except (ValueError, TypeError) as exc:
        assert_named(exc, "X", "x", "data")


def test_energy_model_cost_returning_a_scalar_is_refused():
    model = le.LatentVariableEBM(None, le.ConditionalLinearDecoder.random(N_FEATURES, N_ATOMS),
                                 "l1", lam=0.1, cost=lambda y, y_hat: ((y - y_hat) ** 2).sum())
    with pytest.raises((ValueError, TypeError)) as info:
        model.free_energy(None, GOOD_Y.astype(np.float32))
    assert_named(info.value, "cost")


# ---------------------------------------------------------------- scikit-learn facade
@SETTINGS
@given(name=st.sampled_from(["alpha", "n_components", "max_iter", "transform_alpha",
                             "transform_max_iter", "transform_tol"]),
       value=st.sampled_from([-1, -0.5, "x", float("nan")]))
def test_sklearn_errors_speak_sklearn(name, value):
    est = DictionaryLearning(**{"n_components": 4, "max_iter": 1, name: value})
    with pytest.raises((ValueError, TypeError)) as info:
        est.fit(GOOD_Y)
    assert_named(info.value, name)
    assert "lam" not in str(info.value) and "n_atoms" not in str(info.value)


@SETTINGS
@given(X=bad_arrays((BATCH, N_FEATURES)))
def test_sparse_coder_bad_data(X):
    coder = SparseCoder(dictionary=GOOD_W.T, transform_alpha=0.1)
    try:
        codes = coder.transform(X)
    except (ValueError, TypeError):
        return
    assert codes.shape == (BATCH, N_ATOMS) and np.isfinite(codes).all()


# ---------------------------------------------------------------- files
@SETTINGS
@given(data=st.binary(max_size=300), cut=st.integers(0, 2000))
def test_damaged_checkpoints_are_named_as_damaged(tmp_path_factory, data, cut):
    folder = tmp_path_factory.mktemp("ckpt")
    good = folder / "good.safetensors"
    le.SparseCoding(n_features=4, n_atoms=3, lam=0.1, seed=0).save(good)
    raw = good.read_bytes()
    for name, payload in (("random.safetensors", data),
                          ("cut.safetensors", raw[: min(cut, len(raw) - 1)]),
                          ("flipped.safetensors", raw[:8] + data + raw[8 + len(data):])):
        path = folder / name
        path.write_bytes(payload)
        try:
            le.SparseCoding.load(path)
        except ValueError as exc:
            assert str(path) in str(exc)
            assert "damaged" in str(exc) or "not" in str(exc)


@pytest.mark.parametrize("byte", [-1, -9, -40])
def test_a_flipped_bit_in_a_checkpoints_tensor_data_is_named(tmp_path, byte):
    """safetensors does not check the data: a flipped bit loaded as a silently altered kernel."""
    path = tmp_path / "model.safetensors"
    le.SparseCoding(n_features=4, n_atoms=3, lam=0.1, seed=0).save(path)
    raw = bytearray(path.read_bytes())
    raw[byte] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged: its tensor data do not match the checksum"):
        le.SparseCoding.load(path)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        le.SparseCoding.load(tmp_path / "nothing.safetensors")


# ---------------------------------------------------------------- more models and the CLI
@SETTINGS
@given(Y=bad_arrays((BATCH, N_FEATURES)))
def test_psd_bad_data(Y):
    model = le.PSD(N_FEATURES, N_ATOMS, 0.1, seed=0, dtype=torch.float64)
    clear_error_or_result(lambda: model.predict(Y), ("Y",), (BATCH, N_ATOMS))
    clear_error_or_result(lambda: model.encode(Y, method="fista").z, ("Y",), (BATCH, N_ATOMS))


@st.composite
def bad_images(draw):
    kind = draw(st.sampled_from(["non_finite", "rank", "channels", "tiny"]))
    if kind == "non_finite":
        a = np.zeros((2, 1, 9, 9))
        a[0, 0, draw(st.integers(0, 8)), draw(st.integers(0, 8))] = draw(special)
        return a
    if kind == "rank":
        return np.zeros((2, 9, 9))
    if kind == "channels":
        return np.zeros((2, 3, 9, 9))
    return np.zeros((2, 1, 1, 1))


@SETTINGS
@given(Y=bad_images())
def test_conv_models_bad_images(Y):
    for model in (le.ConvDictionaryLearning(3, 4, lam=0.1, seed=0),
                  le.ConvSparseAutoencoder(3, 4, 1, seed=0)):
        try:
            out = model.encode(Y)
        except (ValueError, TypeError) as exc:
            assert_named(exc, "Y", "kernel", "image")
            continue
        assert np.isfinite(np.asarray(out.z)).all()


@pytest.mark.parametrize("argv", [
    ["sparse-coding", "--lam", "-1"],
    ["sparse-coding", "--atoms", "0"],
    ["vae", "--lr", "0"],
    ["lista", "--steps", "1", "0"],
    ["psd", "--batch-size", "2.5"],
    ["conditional", "--epochs", "nan"],
    ["lista", "--warm-tol", "-1"],
    ["lista", "--support", "1.5"],
    ["lista", "--validation", "-5"],
    ["lista", "--patience", "0"],
    ["psd", "--beta", "-1"],
    ["conv-filters", "--taper", "-1"],
    ["vae-fuzzy-balls", "--fixed-sigma", "0"],
    ["vae-fuzzy-balls", "--betas", "1", "-1"],
    ["vae", "--monitor-k", "-1"],
    ["vae", "--max-minutes", "-1"],
    ["vae", "--warmup-epochs", "nan"],
])
def test_cli_refuses_a_bad_flag_before_reading_any_data(argv, tmp_path, capsys):
    """No data folder exists: the error is the flag's, so the flags were checked first."""
    from latentebm.cli import main

    flag = argv[1]
    code = main([*argv, "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and f"argument {flag}:" in err and "MNIST" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["vae", "vae-fuzzy-balls"])
def test_cli_refuses_iwae_samples_with_the_elbo_before_reading_any_data(command, tmp_path,
                                                                        capsys):
    from latentebm.cli import main

    code = main([command, "--iwae-k", "3", "--out", str(tmp_path / "run"),
                 "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "--iwae-k 3 applies to --objective iwae" in err and "MNIST" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["vae", "vae-fuzzy-balls"])
def test_cli_refuses_mlp_layers_for_the_conv_encoder_before_reading_any_data(command, tmp_path,
                                                                           capsys):
    """--encoder conv --hidden 50 trained the conv network and recorded hidden [50]."""
    from latentebm.cli import main

    code = main([command, "--encoder", "conv", "--hidden", "50", "--out",
                 str(tmp_path / "run"), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "--hidden 50 sets the MLP" in err and "MNIST" not in err
    assert not (tmp_path / "run").exists()


def test_fuzzy_balls_refuses_betas_that_would_share_a_folder(tmp_path, capsys):
    """--betas 0.1 0.1000001 trained two models into one folder, the second over the first."""
    from latentebm.cli import main

    code = main(["vae-fuzzy-balls", "--betas", "0.1", "0.1000001", "--out",
                 str(tmp_path / "run"), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "would share the folder beta_0.1" in err and "MNIST" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, name", [
    (["sparse-coding", "--lam", "-1"], "lam"),
    (["sparse-coding", "--epochs", "0"], "epochs"),
    (["sparse-coding", "--seed", str(2**70)], "seed"),
    (["vae", "--latent-dim", "-2"], "latent"),
])
def test_cli_bad_arguments_are_one_line_errors(argv, name, tmp_path, capsys):
    from latentebm.cli import main

    code = main([*argv, "--out", str(tmp_path / "run"), "--sample", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and name in err.replace("-", "_") + err


@pytest.mark.parametrize("scale", [1e10, 1e-12])
@pytest.mark.parametrize("solver", ["fista", "ista", "lista"])
def test_step_size_estimates_survive_large_and_small_dictionaries(solver, scale):
    """Float32 atoms scaled by 1e10 or 1e-12 (‖W‖² still representable): the power iteration
    and the per-sample start of backtracking square entries, which used to overflow or underflow
    and turned the step size into the smallest float."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((16, 8)).astype(np.float32)
    W /= np.linalg.norm(W, axis=0)
    Y = rng.standard_normal((5, 16)).astype(np.float32)
    reference = np.asarray(le.solve(Y.astype(np.float64), W.astype(np.float64), 0.3,
                                    tol=1e-10).z)
    Ws, lam = W * np.float32(scale), 0.3 * scale
    if solver == "lista":
        codes = le.LISTA(Ws, lam, 200).encode(Y).z
        unscaled = le.LISTA(W, 0.3, 200).encode(Y).z
        np.testing.assert_allclose(np.asarray(codes) * scale, np.asarray(unscaled), atol=1e-4)
        return
    result = getattr(le, solver)(Y, Ws, lam, tol=1e-5, max_iter=20000)
    assert bool(np.asarray(result.converged).all())
    np.testing.assert_allclose(np.asarray(result.z) * scale, reference, atol=1e-3)


@pytest.mark.parametrize("function", [le.lasso_energy, le.duality_gap])
def test_energy_and_gap_of_overflowing_codes_are_an_error(function):
    """Finite codes whose reconstruction overflows float64 gave inf energies and NaN gaps."""
    Z = np.random.default_rng(2).standard_normal((BATCH, N_ATOMS))
    with pytest.raises(FloatingPointError, match="too large for float64"):
        function(GOOD_Y, GOOD_W, Z * 1e200, 0.1)
    assert np.isfinite(function(GOOD_Y, GOOD_W, Z, 0.1)).all()


def test_a_bad_device_is_named_as_the_callers(tmp_path):
    with pytest.raises(ValueError, match="device 'foo' is not a valid torch device"):
        le.LISTA(GOOD_W, 0.1, device="foo")
    path = tmp_path / "model.safetensors"
    le.SparseCoding(N_FEATURES, N_ATOMS, 0.1).save(path)
    with pytest.raises(ValueError, match="^device 'foo'"):  # not "checkpoint ... is damaged"
        le.SparseCoding.load(path, device="foo")


def test_an_encoder_never_returns_non_finite_codes():
    """A step 1/lipschitz far too long made LISTA's codes overflow without an error."""
    model = le.LISTA(GOOD_W.astype(np.float32), 0.1, lipschitz=1e-40)
    with pytest.raises(FloatingPointError, match="not finite"):
        model.encode(GOOD_Y.astype(np.float32))


def test_admm_refuses_least_squares():
    """λ = 0 made ADMM's penalty balancing diverge (energy 1e170) without an error."""
    Y = np.random.default_rng(0).standard_normal((2, 1, 12, 12))
    K = np.random.default_rng(1).standard_normal((3, 1, 3, 3))
    with pytest.raises(ValueError, match="needs lam > 0"):
        le.solve(Y, le.ConvDictionary(K, boundary="circular"), 0.0, method="admm")


@pytest.mark.parametrize("kwargs, name", [({"tol": -1.0}, "tol"), ({"tol": float("nan")}, "tol"),
                                          ({"max_iter": 0}, "max_iter"),
                                          ({"max_iter": 2.5}, "max_iter")])
def test_conv_autoencoder_inference_limits_are_checked(kwargs, name):
    model = le.ConvSparseAutoencoder(3, 3, 1, seed=0)
    Y = np.random.default_rng(0).standard_normal((2, 1, 10, 10))
    for call in (lambda: model.encode(Y, method="fista", **kwargs),
                 lambda: model.energy(Y, **kwargs)):
        with pytest.raises((ValueError, TypeError), match=name):
            call()


def test_resuming_conv_dictionary_learning_with_other_coding_limits_is_refused(tmp_path):
    Y = np.random.default_rng(0).standard_normal((4, 1, 12, 12))
    ckpt = tmp_path / "ckpt.safetensors"
    le.ConvDictionaryLearning(3, 3, lam=0.1, seed=0).fit(
        Y, epochs=1, batch_size=2, tol=1e-3, max_iter=20, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="tol"):
        le.ConvDictionaryLearning(3, 3, lam=0.1, seed=0).fit(
            Y, epochs=2, batch_size=2, tol=0.9, max_iter=20, checkpoint=ckpt, resume=True,
            progress=False)


def _conv_ebm(boundary: str):
    from latentebm.energy.decoders import ConditionalConvDecoder

    kernels = np.random.default_rng(0).standard_normal((4, 1, 3, 3))
    return le.LatentVariableEBM(None, ConditionalConvDecoder(kernels, boundary=boundary,
                                                             offset=None), lam=0.1)


@pytest.mark.parametrize("boundary", ["circular", "full"])
@pytest.mark.parametrize("shape", [(2, 5, 16, 16), (2, 3, 16, 16), (2, 4, 2, 2)])
def test_energy_model_predict_checks_code_maps(boundary, shape):
    """Extra maps were dropped silently, too few raised an IndexError."""
    with pytest.raises(ValueError, match="^z "):
        _conv_ebm(boundary).predict(None, np.zeros(shape))


def test_energy_model_checkpoint_of_the_other_boundary_is_refused(tmp_path):
    _conv_ebm("full").save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="boundary"):
        _conv_ebm("circular").load_state_(tmp_path / "m.safetensors")


def test_energy_model_never_returns_nan_energies():
    import torch

    class LogDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 5, dtype=torch.float64)
            torch.nn.init.constant_(self.linear.bias, -1.0)  # log(-1) at z = 0

        def forward(self, h, z):
            return torch.log(self.linear(z))  # NaN wherever the linear part is negative

    model = le.LatentVariableEBM(None, LogDecoder(), lam=0.1, code_shape=(3,))
    with pytest.raises(FloatingPointError, match="not finite"):
        model.solve(None, np.ones((4, 5)))


@pytest.mark.parametrize("key, value", [("dtype", "float16"), ("nonneg", "yes")])
def test_a_checkpoint_config_with_a_bad_value_is_named_damaged(tmp_path, key, value):
    """``dtype: "float16"`` was an internal KeyError and ``nonneg: "yes"`` loaded as True."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    le.SparseCoding(N_FEATURES, N_ATOMS, 0.1).save(path)
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    config = json.loads(meta["config"])
    config[key] = value
    meta.pop("sha256_metadata")  # as another tool would write it (a kept one names the edit)
    save_file(load_file(str(path)), str(path), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(ValueError, match=f"damaged.*{key}"):
        le.SparseCoding.load(path)


def test_a_solver_overflow_inside_training_is_reported_as_divergence(tmp_path):
    """The inference's own FloatingPointError named no step and no checkpoint."""
    Y = np.random.default_rng(0).standard_normal((6, 1, 16, 16))
    model = le.ConvSparseAutoencoder(4, 5, 1, nonlinearity="shrink", seed=0)
    with pytest.raises(FloatingPointError, match=r"training diverged: at step \d+ .*checkpoint"):
        model.fit(Y, lr=1e9, epochs=3, batch_size=2, checkpoint=tmp_path / "c.safetensors",
                  progress=False)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_atoms_overflowed_by_the_statistics_are_reported_as_divergence(tmp_path):
    """float32 signals of 3e18: the online statistics overflow, the atoms turn NaN, and the next
    step's input check named W as if the caller had passed it."""
    Y = (np.random.default_rng(0).standard_normal((200, 16)) * 3e18).astype(np.float32)
    model = le.SparseCoding(16, 20, lam=0.1)
    path = tmp_path / "c.safetensors"
    with pytest.raises(FloatingPointError,
                       match=r"training diverged: the model's 'W' became NaN .* step 1 .*no chec"):
        model.fit(Y, epochs=1, batch_size=50, checkpoint=path, progress=False)
    assert not path.exists()


def test_small_conveniences_a_user_expects():
    """Integer signals keep float64 atoms' precision; a 0-d array is a number; one hidden
    layer may be given as an int."""
    Y = np.random.default_rng(1).integers(0, 5, (BATCH, N_FEATURES))
    out = le.solve(Y, GOOD_W, np.array(0.1))
    assert out.z.dtype == np.float64
    # whatever holds the float64 atoms (a list fell back to float32)
    assert le.solve(Y, GOOD_W.tolist(), 0.1).z.dtype == np.float64
    with pytest.raises(ValueError, match=r"got shape \(\)"):  # a scalar signal said (1,)
        le.solve(np.float64(1.0), GOOD_W, 0.1)
    # λ is one number in every container (a one-element tensor passed, an array did not)
    import torch

    for lam in (torch.tensor([0.1]), np.array([0.1]), [0.1]):
        with pytest.raises(TypeError, match="lam must be a real number"):
            le.solve(Y, GOOD_W, lam)
    assert le.solve(Y, GOOD_W, torch.tensor(0.1)).z.shape == out.z.shape
    assert le.VAE(16, 2, hidden=8).hidden == (8,)
    with pytest.raises(TypeError, match="hidden"):
        le.VAE(16, 2, hidden="8")


def test_atoms_stay_unit_norm_on_zero_data_and_tiny_data_is_refused():
    """Zero data left every atom zero (dead atoms replaced by zero residuals); float32 samples
    of 1e-20 gave atoms of norm 6e18 (the squared norm underflowed), and once that was fixed
    trained on energies and gaps that all read zero: they are refused now, as ``encode``
    refuses them."""
    import torch

    Y = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    model = le.SparseCoding(16, 8, 0.3, dtype=torch.float32)
    model.fit(0 * Y, epochs=2, progress=False)
    np.testing.assert_allclose(np.linalg.norm(model.dictionary().numpy(), axis=0), 1.0,
                               rtol=1e-5)
    with pytest.raises(FloatingPointError, match="200 signal.s. are too small for float32"):
        le.SparseCoding(16, 8, 0.3, dtype=torch.float32).fit(Y * 1e-20, progress=False)


@pytest.mark.parametrize("option, value, name", [("callback", 3, "callback"),
                                                  ("checkpoint", 123, "checkpoint"),
                                                  ("resume", "no", "resume")])
def test_fit_options_of_the_wrong_type_are_refused_before_training(option, value, name):
    """A callback of 3 failed only after the first step, with "'int' object is not callable"."""
    Y = np.random.default_rng(0).standard_normal((20, N_FEATURES))
    images = np.random.default_rng(0).standard_normal((4, 1, 12, 12))
    for fit in (lambda **kw: le.SparseCoding(N_FEATURES, N_ATOMS, 0.1).fit(Y, **kw),
                lambda **kw: le.ConvDictionaryLearning(3, 3, lam=0.1).fit(images, **kw)):
        with pytest.raises(TypeError, match=f"^{name} must be"):
            fit(epochs=1, progress=False, **{option: value})


@pytest.mark.parametrize("method", ["fista", "gram_cd", "auto"])
def test_signals_too_small_for_the_precision_are_refused(method):
    """Signals of 1e-170 (float64): every energy underflowed to 0, so the zero start passed the
    test gap <= tol * energy and wrong codes came back as converged."""
    with pytest.raises(FloatingPointError, match="too small"):
        le.solve(GOOD_Y * 1e-170, GOOD_W, 1e-171, method=method)
    assert np.all(le.solve(GOOD_Y * 1e-140, GOOD_W, 1e-141, method=method).converged)


def test_ista_has_no_restart_option():
    """ISTA has no momentum; ``restart`` was accepted and ignored."""
    with pytest.raises(TypeError, match="restart"):
        le.ista(GOOD_Y, GOOD_W, 0.1, restart=False)


def test_resuming_from_a_saved_model_or_a_folder_says_what_it_is(tmp_path):
    Y = np.random.default_rng(0).standard_normal((30, N_FEATURES))
    path = tmp_path / "model.safetensors"
    model = le.SparseCoding(N_FEATURES, N_ATOMS, 0.1)
    model.fit(Y, epochs=1, progress=False)
    model.save(path)
    with pytest.raises(ValueError, match="holds a finished model"):  # not "(unset)" settings
        le.SparseCoding(N_FEATURES, N_ATOMS, 0.1).fit(Y, epochs=2, checkpoint=path, resume=True,
                                                      progress=False)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        le.SparseCoding.load(tmp_path)


def test_lista_solves_fresh_targets_for_new_data_of_the_same_shape():
    """The targets were cached by address: a new array of the same shape, often at the old
    one's address, trained on the previous data's codes."""
    rng = np.random.default_rng(0)
    Y = torch.from_numpy(rng.standard_normal((64, N_FEATURES)).astype(np.float32))
    model = le.LISTA(GOOD_W.astype(np.float32), 0.1, 2)
    first = model._training_targets(Y, None, 1e-5, 1000).clone()
    Y.numpy()[:] = rng.standard_normal(tuple(Y.shape))  # same memory and torch version
    again = model._training_targets(Y, None, 1e-5, 1000)
    assert not torch.equal(again, first)
    assert torch.allclose(again, model.targets(Y), atol=1e-6)


def test_sparse_coding_resume_refuses_other_coding_settings(tmp_path):
    Y = np.random.default_rng(0).standard_normal((40, N_FEATURES))
    ckpt = tmp_path / "ckpt.safetensors"
    kwargs = dict(epochs=1, batch_size=8, method="sgd", progress=False, checkpoint=ckpt)
    le.SparseCoding(N_FEATURES, N_ATOMS, 0.1).fit(Y, lr=0.5, tol=1e-3, **kwargs)
    for other in ({"lr": 100.0, "tol": 1e-3}, {"lr": 0.5, "tol": 1e-6}):
        with pytest.raises(ValueError, match="another configuration"):
            le.SparseCoding(N_FEATURES, N_ATOMS, 0.1).fit(Y, resume=True, **other,
                                                          **{**kwargs, "epochs": 2})


def test_sharded_rows_are_chosen_by_integers_only(tmp_path):
    from latentebm.data.streaming import ShardedArray, write_shards

    data = ShardedArray(write_shards(np.arange(12, dtype=np.float32).reshape(4, 3),
                                     tmp_path / "ds"))
    with pytest.raises(TypeError, match="integers"):
        data[torch.tensor([True, False, True, False])]  # was rows 1, 0, 1, 0
    with pytest.raises(TypeError, match="integers"):
        data[np.array([1.7])]
    assert data[[]].shape == (0, 3) and data[np.array([3])].shape == (1, 3)


def test_vae_fit_refuses_bad_hooks_and_a_schedule_shorter_than_the_run(tmp_path):
    X = (np.random.default_rng(0).random((8, 16)) > 0.5).astype(np.float32)
    model = le.VAE(16, 2, hidden=4)
    for kwargs, name in (({"callback": 3}, "callback"), ({"checkpoint": 3}, "checkpoint"),
                         ({"on_epoch_end": "x"}, "on_epoch_end"),
                         ({"lr_schedule": "cosine", "schedule_epochs": 1}, "schedule_epochs")):
        with pytest.raises((TypeError, ValueError), match=name):
            model.fit(X, epochs=4, progress=False, **kwargs)
    assert model.n_steps_ == 0  # refused before any step


def test_energy_model_fit_refuses_seeds_outside_the_range():
    from latentebm.energy.decoders import ConditionalLinearDecoder

    model = le.LatentVariableEBM(None, ConditionalLinearDecoder(GOOD_W, offset=None), lam=0.1)
    with pytest.raises(ValueError, match="seed"):
        model.fit(None, GOOD_Y, epochs=1, seed=2**40, progress=False)


def test_lista_hybrid_without_tail_layers_cannot_train_the_tail_alone():
    """autograd's "element 0 of tensors does not require grad" was the message."""
    Y = np.random.default_rng(1).standard_normal((16, N_FEATURES)).astype(np.float32)
    model = le.LISTA(GOOD_W.astype(np.float32), 0.1, 2, variant="hybrid", head=3)
    with pytest.raises(ValueError, match="nothing to train"):
        model.fit(Y, train_head=False, progress=False)


def test_cli_refuses_the_bundled_sample_with_an_explicit_data_folder(tmp_path, capsys,
                                                                     monkeypatch):
    """--sample --data-dir DIR trained on the sample and ignored DIR without a word."""
    from latentebm.cli import main

    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    code = main(["sparse-coding", "--sample", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--sample" in err and f"--data-dir {tmp_path} would be ignored" in err
    assert not (tmp_path / "run").exists()
    # $LATENTEBM_DATA, the flag's default, is what --sample overrides
    monkeypatch.setenv("LATENTEBM_DATA", str(tmp_path))
    from latentebm.experiments import sparse_coding_cmd

    monkeypatch.setattr(sparse_coding_cmd, "run", lambda args: (_ for _ in ()).throw(
        ValueError("reached the command")))
    assert main(["sparse-coding", "--sample", "--out", str(tmp_path / "run")]) == 2
    assert "reached the command" in capsys.readouterr().err
