"""The conditional energy E(x, y, z) = C(y, Dec(Pred(x), z)) + λR(z): inference, free energy,
training, the λ = 0 flatness, shared parts with the existing models, bad input, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import latentebm as le
from latentebm.experiments import conditional_eval as ev
from latentebm.models.conv_dictionary_learning import ConvDictionaryLearning

D64 = torch.float64


def dictionary(n_features: int, n_atoms: int, seed: int = 0, dtype=D64) -> torch.Tensor:
    W = torch.randn(n_features, n_atoms, generator=torch.Generator().manual_seed(seed),
                    dtype=D64)
    return (W / W.norm(dim=0)).to(dtype)


class LinearGeneral(nn.Module):
    """A linear decoder the model does not know is linear: inference takes the autograd path."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())

    def forward(self, h, z):
        return z @ self.W.T if h is None else h + z @ self.W.T

    def code_shape(self, signal_shape):
        return (self.W.shape[1],)


class TanhDecoder(nn.Module):
    """Non-linear in z: ``h + tanh(z Wᵀ)``."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())

    def forward(self, h, z):
        return h + torch.tanh(z @ self.W.T)


def conditional_model(lam=0.2, *, general=False, dtype=D64, reg="l1", seed=0):
    torch.manual_seed(seed)
    pred = nn.Linear(5, 12).to(dtype)
    W = dictionary(12, 20, seed, dtype)
    dec = TanhDecoder(W) if general else le.ConditionalLinearDecoder(W)
    return le.LatentVariableEBM(pred, dec, reg, lam, code_shape=(20,) if general else None)


def synthetic(n=200, seed=1, dtype=D64):
    """Pairs (x, y) with y = A x + a sparse non-negative mixture of fixed atoms (multimodal);
    A and the atoms are the same for every ``seed``, which only draws the samples."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=gen, dtype=D64)
    A = torch.randn(12, 5, generator=torch.Generator().manual_seed(99), dtype=D64)
    B = dictionary(12, 20, 8)
    Z = torch.rand(n, 20, generator=gen, dtype=D64) * (torch.rand(n, 20, generator=gen) < 0.1)
    return X.to(dtype), (X @ A.T + Z @ B.T).to(dtype)


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("nonneg", [False, True])
def test_linear_decoder_without_predictor_is_sparse_coding(nonneg):
    W = dictionary(30, 50)
    Y = torch.randn(16, 30, dtype=D64, generator=torch.Generator().manual_seed(3))
    sc = le.SparseCoding(30, 50, 0.2, nonneg=nonneg, init=W.numpy(), dtype=D64)
    ebm = le.LatentVariableEBM.from_model(sc)
    assert ebm.predictor is None and ebm.linear_in_z
    z = ebm.infer(None, Y, tol=1e-12, max_iter=5000)
    ref = sc.encode(Y, tol=1e-12, max_iter=5000)
    assert torch.allclose(z, ref.z, atol=1e-6, rtol=0)
    assert torch.allclose(ebm.free_energy(None, Y, tol=1e-12), ref.energy, atol=1e-10)
    assert torch.allclose(ebm.energy(None, Y, z), sc.energy(Y, z), atol=1e-12)
    # the general (autograd) path reaches the same solution
    general = le.LatentVariableEBM(None, LinearGeneral(W), ebm.regularizer, 0.2)
    res = general.solve(None, Y, tol=1e-13, max_iter=20000)
    assert not general.linear_in_z and bool(res.converged.all())
    assert torch.allclose(res.z, ref.z, atol=1e-6, rtol=0)
    assert torch.isnan(res.gap).all()


@pytest.mark.parametrize("general", [False, True])
def test_free_energy_is_the_minimum_over_z(general):
    model = conditional_model(0.3, general=general)
    X, Y = synthetic(12)
    res = model.solve(X, Y, tol=1e-12, max_iter=20000)
    F = res.energy
    assert torch.allclose(model.energy(X, Y, res.z), F, atol=1e-12)
    if not general:
        assert bool((res.gap <= 1e-10 * F).all())
    gen = torch.Generator().manual_seed(0)
    lowest = torch.full_like(F, float("inf"))
    for scale in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        for _ in range(50):
            dz = scale * torch.randn(res.z.shape, generator=gen, dtype=D64)
            keep = torch.rand(res.z.shape, generator=gen) < 0.3
            candidates = (res.z + dz * keep, res.z + dz, dz * keep * 10)
            for z in candidates:
                lowest = torch.minimum(lowest, model.energy(X, Y, z).detach())
    assert bool((lowest >= F - 1e-9 * F.abs().clamp_min(1)).all())
    assert float((lowest - F).min()) > -1e-9


def test_training_lowers_the_energy_of_training_pairs():
    X, Y = synthetic(300)
    model = conditional_model(0.2)
    before = model.free_energy(X, Y, tol=1e-6).mean()
    history = model.fit(X, Y, epochs=8, batch_size=50, lr=1e-2, progress=False)
    after = model.free_energy(X, Y, tol=1e-6).mean()
    assert float(after) < 0.5 * float(before)
    assert history[-1]["energy"] < history[0]["energy"]
    assert len(model.energy_trace_) == 8 * 6
    W = model.decoder.W.detach()
    assert torch.allclose(W.norm(dim=0), torch.ones(20, dtype=D64), atol=1e-12)


def test_training_a_general_decoder_lowers_the_energy():
    X, Y = synthetic(100)
    model = conditional_model(0.2, general=True)
    before = model.free_energy(X, Y, tol=1e-6).mean()
    history = model.fit(X, Y, epochs=6, batch_size=50, lr=3e-2, tol=1e-4, progress=False)
    assert float(model.free_energy(X, Y, tol=1e-6).mean()) < 0.7 * float(before)
    assert all(a["energy"] > b["energy"] for a, b in zip(history, history[1:], strict=False))


def test_without_the_regularizer_the_energy_is_flat():
    """λ = 0 with an over-complete z (20 atoms for 12 pixels): every y is reachable, F ≈ 0,
    ranking by F is chance; with λ > 0 the true y ranks well above chance."""
    X, Y = synthetic(400)
    Xte, Yte = synthetic(60, seed=5)
    results = {}
    for lam in (0.5, 0.0):
        model = conditional_model(lam)
        model.fit(X, Y, epochs=10, batch_size=50, lr=1e-2, progress=False)
        results[lam] = ev.ranking(model, Xte, Yte, n_candidates=10, seed=0, tol=1e-10,
                                  max_iter=5000)
    flat = results[0.0]
    assert max(flat["_true"].max(), flat["_others"].max()) < 1e-8
    assert abs(flat["pairwise_ranking"] - 0.5) < 0.1
    assert results[0.5]["pairwise_ranking"] > 0.8


# --------------------------------------------------------------------------- shared parts
def test_psd_is_an_instance_with_x_equal_y():
    Y = torch.randn(20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    psd = le.PSD(16, 24, 0.1, 0.7, init="random", dtype=torch.float64)
    ebm = le.LatentVariableEBM.from_model(psd)
    target = psd.stacked_target(Y)
    F_psd = psd.free_energy(Y, tol=1e-12, max_iter=5000)
    F_ebm = ebm.free_energy(Y, target, tol=1e-12, max_iter=5000)
    assert torch.allclose(F_psd, F_ebm, atol=1e-9)
    z = psd.infer(Y, tol=1e-12, max_iter=5000).z
    assert torch.allclose(ebm.energy(Y, target, z), psd.energy(Y, z), atol=1e-12)


def test_an_energy_from_psd_leaves_the_psd_alone_and_refuses_to_train_its_fixed_block():
    """from_model shared PSD's encoder, and fit trained and renormalised the √β·I block under W:
    one epoch moved the user's PSD energy by 0.08 and its β from 2 to 0.66."""
    Y = torch.rand(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    psd = le.PSD(8, 10, 0.1, 2.0, init="random", dtype=torch.float64)
    ebm = le.LatentVariableEBM.from_model(psd)
    with torch.no_grad():
        next(ebm.predictor.parameters()).add_(1.0)
    Z = torch.rand(16, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(ebm.energy(Y, psd.stacked_target(Y), Z), psd.energy(Y, Z))
    before = [p.clone() for p in psd.encoder.parameters()]
    with pytest.raises(ValueError, match="fixed block"):
        ebm.fit(Y, psd.stacked_target(Y), epochs=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, psd.encoder.parameters(), strict=True))


def test_energy_at_zero_lam_keeps_the_constraint_and_lam_is_checked_when_set():
    """0 · inf was NaN: a negative code had energy NaN at λ = 0 with non-negative codes, and a
    reassigned λ was never checked (λ = -0.1 gave free energies of -3800)."""
    gen = torch.Generator().manual_seed(0)
    ebm = le.LatentVariableEBM(torch.nn.Linear(5, 6), le.ConditionalLinearDecoder.random(6, 10),
                               "nonneg_l1", lam=0.0)
    x, y = torch.randn(2, 5, generator=gen), torch.randn(2, 6, generator=gen)
    z = torch.rand(2, 10, generator=gen)
    z[0, 0] = -0.1
    E = ebm.energy(x, y, z)
    assert E[0] == float("inf") and torch.isfinite(E[1])
    for bad, error in ((-0.1, ValueError), (float("nan"), ValueError), ("0.2", TypeError)):
        with pytest.raises(error, match="lam"):
            ebm.lam = bad
    ebm.lam = 0.3
    assert ebm.lam == 0.3


def test_an_offset_that_would_broadcast_is_refused_by_energy_and_predict():
    gen = torch.Generator().manual_seed(0)
    ebm = le.LatentVariableEBM(torch.nn.Linear(5, 1), le.ConditionalLinearDecoder.random(6, 10),
                               "l1", lam=0.3)
    x, y = torch.randn(4, 5, generator=gen), torch.randn(4, 6, generator=gen)
    z = torch.randn(4, 10, generator=gen)
    for call in (lambda: ebm.energy(x, y, z), lambda: ebm.predict(x, z)):
        with pytest.raises(ValueError, match=r"offset b\(h\) has shape \(4, 1\)"):
            call()


def test_conv_model_is_an_instance():
    gen = torch.Generator().manual_seed(0)
    Y = torch.randn(3, 1, 10, 10, generator=gen, dtype=D64)
    cdl = ConvDictionaryLearning(4, 3, 1, 0.2, init="random", dtype=D64)
    ebm = le.LatentVariableEBM.from_model(cdl)
    assert ebm.linear_in_z
    ref = cdl.encode(Y, tol=1e-12, max_iter=5000)
    assert torch.allclose(ebm.infer(None, Y, tol=1e-12, max_iter=5000), ref.z, atol=1e-6)
    # conditional conv decoder: the offset h is subtracted from the target
    pred = nn.Identity()
    dec = le.ConditionalConvDecoder(cdl.dictionary(), offset="identity")
    cond = le.LatentVariableEBM(pred, dec, "l1", 0.2)
    H = 0.3 * torch.randn(3, 1, 10, 10, generator=gen, dtype=D64)
    z = cond.infer(H, Y + H, tol=1e-12, max_iter=5000)
    assert torch.allclose(z, ref.z, atol=1e-6)


def test_predict_and_numpy_edges():
    model = conditional_model(0.3)
    X, Y = synthetic(6)
    z = model.infer(X.numpy(), Y.numpy())
    assert isinstance(z, np.ndarray) and z.shape == (6, 20)
    y0 = model.predict(X, torch.zeros(6, 20, dtype=D64))
    assert torch.allclose(y0, model.predictor(X).detach())
    y1 = model.predict(X, torch.from_numpy(z))
    assert torch.allclose(y1, y0 + torch.from_numpy(z) @ model.decoder.W.detach().T)
    F = model.free_energy(X.numpy(), Y.numpy())
    assert isinstance(F, np.ndarray) and F.shape == (6,)


def test_nonneg_codes_and_infinite_energy_for_negative_latents():
    model = conditional_model(0.3, reg="nonneg_l1")
    X, Y = synthetic(6)
    z = model.infer(X, Y)
    assert bool((z >= 0).all())
    bad = z.clone()
    bad[0, 0] = -1.0
    E = model.energy(X, Y, bad)
    assert torch.isinf(E[0]) and torch.isfinite(E[1:]).all()
    general = conditional_model(0.3, reg=le.NonNegL1(), general=True)
    assert bool((general.infer(X, Y) >= 0).all())


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_error():
    model = conditional_model(0.3)
    X, Y = synthetic(6)
    Y_nan = Y.clone()
    Y_nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        model.free_energy(X, Y_nan)
    with pytest.raises(ValueError, match="y must have shape"):
        model.free_energy(X, Y[:, :5])
    with pytest.raises(ValueError, match="x has 5 samples"):
        model.free_energy(X[:5], Y)
    with pytest.raises(ValueError, match="x is required"):
        model.free_energy(None, Y)
    with pytest.raises(ValueError, match="does not fit the predictor"):
        model.free_energy(X[:, :3], Y)
    with pytest.raises(TypeError, match="dtype"):
        model.free_energy(X.float(), Y)
    with pytest.raises(ValueError, match="z must have shape"):
        model.energy(X, Y, torch.zeros(6, 7, dtype=D64))
    with pytest.raises(ValueError, match="z0 must have shape"):
        model.solve(X, Y, z0=torch.zeros(6, 3, dtype=D64))
    with pytest.raises(ValueError, match="tol must be >= 0"):
        model.solve(X, Y, tol=-1.0)
    with pytest.raises(ValueError, match="batch-first"):
        model.free_energy(X, Y[0])
    with pytest.raises(ValueError, match="lam must be >= 0"):
        le.LatentVariableEBM(None, le.ConditionalLinearDecoder(dictionary(4, 6)), "l1", -0.1)
    with pytest.raises(ValueError, match="unknown regularizer 'l2'"):
        le.LatentVariableEBM(None, le.ConditionalLinearDecoder(dictionary(4, 6)), "l2", 0.1)
    with pytest.raises(TypeError, match="decoder must be an nn.Module"):
        le.LatentVariableEBM(None, lambda h, z: z, "l1", 0.1)
    with pytest.raises(TypeError, match="cost must be callable"):
        le.LatentVariableEBM(None, le.ConditionalLinearDecoder(dictionary(4, 6)), "l1", 0.1,
                             cost=3)
    with pytest.raises(TypeError, match="offset"):
        le.ConditionalLinearDecoder(dictionary(4, 6), offset="mean")
    with pytest.raises(ValueError, match="all-zero column"):
        le.ConditionalLinearDecoder(np.zeros((4, 3)))
    unconditional = le.LatentVariableEBM.from_model(
        le.SparseCoding(12, 20, 0.1, init="random", dtype=D64))
    with pytest.raises(ValueError, match="no predictor"):
        unconditional.free_energy(X, Y)
    with pytest.raises(ValueError, match="offset b\\(h\\) has shape"):
        le.LatentVariableEBM(nn.Linear(5, 3).double(), le.ConditionalLinearDecoder(
            dictionary(12, 20)), "l1", 0.1).free_energy(X, Y)
    with pytest.raises(TypeError, match="code_shape"):
        le.LatentVariableEBM(nn.Linear(5, 12).double(), TanhDecoder(dictionary(12, 20)),
                             "l1", 0.1).free_energy(X, Y)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        model.fit(X, Y, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr must be > 0"):
        model.fit(X, Y, lr=0.0, progress=False)


# --------------------------------------------------------------------------- checkpoints
def test_interrupted_training_resumes_exactly_and_save_load_round_trips(tmp_path):
    X, Y = synthetic(120)
    kw = {"epochs": 3, "batch_size": 40, "lr": 1e-2, "progress": False}
    reference = conditional_model(0.3)
    reference.fit(X, Y, **kw)

    path = tmp_path / "train.safetensors"

    def stop(step, _model):
        if step == 4:
            raise KeyboardInterrupt

    interrupted = conditional_model(0.3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, Y, checkpoint=path, callback=stop, **kw)
    resumed = conditional_model(0.3, seed=5)  # other initial weights: all come from the file
    resumed.fit(X, Y, checkpoint=path, resume=True, **kw)
    for name, t in reference.state_dict().items():
        if isinstance(t, torch.Tensor):
            assert torch.equal(t, resumed.state_dict()[name]), name
    assert resumed.n_updates_ == reference.n_updates_ == 9
    assert resumed.energy_trace_ == reference.energy_trace_
    assert [h["epoch"] for h in resumed.history_] == [0, 1, 2]

    with pytest.raises(ValueError, match="lr"):
        conditional_model(0.3).fit(X, Y, checkpoint=path, resume=True, **{**kw, "lr": 0.5})

    saved = tmp_path / "model.safetensors"
    resumed.save(saved)
    loaded = conditional_model(0.3, seed=9).load_state_(saved)
    assert torch.equal(loaded.free_energy(X, Y), resumed.free_energy(X, Y))
    assert loaded.history_ == resumed.history_
    with pytest.raises(ValueError, match="lam"):
        conditional_model(0.4).load_state_(saved)
    with pytest.raises(ValueError, match="another model"):
        le.LatentVariableEBM(nn.Linear(5, 12).double(), le.ConditionalLinearDecoder(
            dictionary(12, 30)), "l1", 0.3).load_state_(saved)


def test_a_user_cost_must_return_one_value_per_sample():
    X, Y = synthetic(20)
    model = conditional_model(0.3)
    model.cost = lambda y, y_hat: 0.5 * (y - y_hat).pow(2).sum()  # sums over the batch
    with pytest.raises(ValueError, match=r"cost must return one value per sample, shape \(20,\)"):
        model.free_energy(X, Y)
    general = conditional_model(0.3, general=True)
    general.cost = lambda y, y_hat: (y - y_hat).pow(2)  # per entry, not per sample
    with pytest.raises(ValueError, match="cost must return one value per sample"):
        general.fit(X, Y, epochs=1, progress=False)


def test_constructors_check_their_sizes_and_seeds():
    """ConditionalLinearDecoder.random truncated 6.7 to 6, took True for 1, raised torch's own
    error for -3 and took seed -1; VAE refused NumPy's int for input_shape; code_shape=10 was
    a raw TypeError."""
    for args, kwargs, error, name in (((6.7, 5), {}, TypeError, "n_features"),
                                      ((True, 5), {}, TypeError, "n_features"),
                                      ((6, -3), {}, ValueError, "n_atoms"),
                                      ((6, 5), {"seed": -1}, ValueError, "seed")):
        with pytest.raises(error, match=name):
            le.ConditionalLinearDecoder.random(*args, **kwargs)
    assert le.VAE(np.prod((4, 4)), 2, hidden=(8,)).input_shape == (16,)
    ebm = le.LatentVariableEBM(None, le.ConditionalLinearDecoder.random(6, 10), code_shape=10)
    assert ebm.code_shape((6,)) == (10,)
    with pytest.raises(TypeError, match="code_shape must be a tuple of ints"):
        le.LatentVariableEBM(None, le.ConditionalLinearDecoder.random(6, 10), code_shape=3.5)


def test_a_checkpoint_of_another_precision_is_refused(tmp_path):
    """A float64 energy's checkpoint loaded and resumed into a float32 one without a word."""
    def energy(dtype):
        return le.LatentVariableEBM.from_model(
            le.SparseCoding(16, 24, 0.2, seed=3, init="random", dtype=dtype))

    energy(torch.float64).save(tmp_path / "e.safetensors")
    with pytest.raises(ValueError, match="dtype: checkpoint has 'float64', model has 'float32'"):
        energy(torch.float32).load_state_(tmp_path / "e.safetensors")
    assert energy(torch.float64).load_state_(tmp_path / "e.safetensors") is not None


def test_infer_warns_at_the_iteration_cap_and_fit_checks_normalize():
    """infer returned latents that stopped at the cap without a word (free_energy warned); for
    a non-linear decoder the warning read "relative gap up to nan"; fit(normalize="no")
    normalised the atoms."""
    from latentebm.solvers import NotConvergedWarning

    X, Y = synthetic(6)
    with pytest.warns(NotConvergedWarning, match="latents"):
        conditional_model(0.3).infer(X, Y, max_iter=2, tol=1e-12)
    with pytest.warns(NotConvergedWarning, match="no duality gap") as seen:
        conditional_model(0.3, general=True).infer(X, Y, max_iter=2, tol=1e-12)
    assert "nan" not in str(seen[0].message)
    with pytest.raises(TypeError, match="normalize"):
        conditional_model(0.3).fit(X, Y, epochs=1, normalize="no", progress=False)


def test_predict_blames_the_predictor_when_its_output_does_not_fit():
    """A predictor with two outputs too many: the error said "z of shape (3, 8) does not fit
    the decoder" although z was right."""
    model = le.LatentVariableEBM(nn.Linear(5, 14).double(), le.ConditionalLinearDecoder(
        dictionary(12, 8)), "l1", 0.1)
    with pytest.raises(ValueError, match=r"the predictor's output \(shape \(3, 14\)\)"):
        model.predict(torch.randn(3, 5, dtype=D64), torch.randn(3, 8, dtype=D64))
