"""Predictive sparse decomposition: the energy, inference on the stacked Lasso, training,
checkpoints and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic import sparse_mixture

import latentebm
from latentebm import PSD


def sparse_signals(n_features=16, n_atoms=24, n=400, k=2, seed=0, dtype=torch.float32):
    return sparse_mixture(n_features, n_atoms, n, k, seed=seed, noise=0.02,
                          positive=True)[1].to(dtype)


@pytest.mark.parametrize("encoder", ["tanh", "lista"])
def test_energy_and_inference_on_the_stacked_lasso(encoder):
    Y = sparse_signals(n=20, dtype=torch.float64)
    lam, beta = 0.1, 0.7
    model = PSD(16, 24, lam, beta, encoder=encoder, init="random", dtype=torch.float64)
    P = model.predict(Y)
    W = model.dictionary()
    res = model.infer(Y, tol=1e-12, max_iter=5000)
    assert res.all_converged
    Z = res.z
    manual = (0.5 * (Y - Z @ W.T).pow(2).sum(1) + lam * Z.abs().sum(1)
              + 0.5 * beta * (Z - P).pow(2).sum(1))
    assert torch.allclose(model.energy(Y, Z), manual, rtol=1e-12)
    assert torch.allclose(res.energy, manual, rtol=1e-9)
    # Optimality: Wᵀ(y − Wz) − β(z − p) ∈ λ ∂‖z‖₁.
    c = (Y - Z @ W.T) @ W - beta * (Z - P)
    assert float(c.abs().max()) <= lam * (1 + 1e-6)
    on = Z != 0
    assert torch.allclose(c[on], lam * torch.sign(Z[on]), atol=1e-7)
    # Better than both the prediction and the plain Lasso optimum.
    lasso = latentebm.fista(Y, W, lam, tol=1e-12).z
    assert bool((res.energy <= model.energy(Y, P) + 1e-12).all())
    assert bool((res.energy <= model.energy(Y, lasso) + 1e-12).all())


def test_beta_zero_is_the_lasso():
    Y = sparse_signals(n=10, dtype=torch.float64)
    model = PSD(16, 24, 0.1, 0.0, init="random", dtype=torch.float64)
    res = model.infer(Y, tol=1e-12)
    ref = latentebm.fista(Y, model.dictionary(), 0.1, tol=1e-12)
    assert torch.allclose(res.energy, ref.energy, rtol=1e-10)


@pytest.mark.parametrize("encoder", ["tanh", "lista"])
def test_training_lowers_the_energy(encoder):
    Y = sparse_signals(n=600)
    Ytr, Yte = Y[:500], Y[500:]
    model = PSD(16, 24, 0.1, 1.0, encoder=encoder, init=Ytr[:24].T)
    before = float(model.free_energy(Yte).mean())
    enc_before = float(latentebm.lasso_energy(Yte, model.dictionary(), model.predict(Yte),
                                              0.1).mean())
    history = model.fit(Ytr, epochs=15, batch_size=50, lr_decoder=0.5, lr_encoder=1e-2,
                        progress=False)
    after = float(model.free_energy(Yte).mean())
    enc_after = float(latentebm.lasso_energy(Yte, model.dictionary(), model.predict(Yte),
                                             0.1).mean())
    assert after < 0.9 * before
    assert enc_after < 0.9 * enc_before
    assert history[-1]["energy"] < history[0]["energy"]
    assert history[-1]["prediction_error"] < history[0]["prediction_error"]
    norms = model.dictionary().norm(dim=0)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_save_load_and_resume_round_trip(tmp_path):
    Y = sparse_signals(n=120)
    kw = {"epochs": 2, "batch_size": 40, "progress": False}
    full = PSD(16, 24, 0.1, 1.0, encoder="lista", n_steps=2)
    full.fit(Y, **kw)

    def stop(step, _):
        if step == 4:
            raise KeyboardInterrupt

    path = tmp_path / "psd.safetensors"
    part = PSD(16, 24, 0.1, 1.0, encoder="lista", n_steps=2)
    with pytest.raises(KeyboardInterrupt):
        part.fit(Y, checkpoint=path, callback=stop, **kw)
    resumed = PSD(16, 24, 0.1, 1.0, encoder="lista", n_steps=2)
    resumed.fit(Y, checkpoint=path, resume=True, **kw)
    for name, t in full.state_dict().items():
        if isinstance(t, torch.Tensor):  # the extra state (counters, timed history) aside
            assert torch.equal(t, resumed.state_dict()[name]), name
    saved = tmp_path / "final.safetensors"
    resumed.save(saved)
    loaded = PSD.load(saved)
    assert (loaded.config.encoder, loaded.n_steps, loaded.beta) == ("lista", 2, 1.0)
    assert torch.equal(loaded.predict(Y), resumed.predict(Y))
    assert torch.equal(loaded.dictionary(), resumed.dictionary())
    assert loaded.history_ == resumed.history_
    with pytest.raises(ValueError, match="beta"):
        PSD(16, 24, 0.1, 2.0, encoder="lista", n_steps=2).fit(Y, checkpoint=path, resume=True,
                                                               **kw)


def test_encode_gives_the_encoder_or_the_certified_codes():
    Y = sparse_signals(n=12, dtype=torch.float64)
    model = PSD(16, 24, 0.1, 0.5, init="random", dtype=torch.float64)
    fast = model.encode(Y)
    assert fast.method == "encoder" and torch.equal(fast.z, model.predict(Y))
    solved = model.encode(Y, method="fista", tol=1e-10)
    reference = model.infer(Y, tol=1e-10)
    assert solved.all_converged and torch.equal(solved.z, reference.z)
    assert bool((solved.energy <= model.energy(Y, fast.z) + 1e-12).all())
    assert isinstance(model.encode(Y.numpy()).z, np.ndarray)
    with pytest.raises(ValueError, match="method"):
        model.encode(Y, method="lista")


def test_numpy_in_numpy_out():
    Y = sparse_signals(n=8).numpy()
    model = PSD(16, 24, 0.1, init="random")
    P = model.predict(Y)
    res = model.infer(Y)
    assert isinstance(P, np.ndarray) and P.shape == (8, 24)
    assert isinstance(res.z, np.ndarray)
    assert isinstance(model.energy(Y, res.z), np.ndarray)


def test_bad_input(tmp_path):
    Y = sparse_signals(n=10)
    with pytest.raises(ValueError, match="beta"):
        PSD(16, 24, 0.1, -1.0)
    with pytest.raises(ValueError, match="lam"):
        PSD(16, 24, -0.1)
    with pytest.raises(ValueError, match="encoder"):
        PSD(16, 24, 0.1, encoder="mlp")
    with pytest.raises(ValueError, match="n_steps"):
        PSD(16, 24, 0.1, encoder="lista", n_steps=0)
    with pytest.raises(ValueError, match="init"):
        PSD(16, 24, 0.1, init=np.ones((16, 23)))
    model = PSD(16, 24, 0.1, init="random")
    with pytest.raises(ValueError, match="Y"):
        model.predict(Y[:, :10])
    bad = Y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="Y"):
        model.fit(bad, progress=False)
    with pytest.raises(ValueError, match="Z"):
        model.energy(Y, torch.zeros(10, 5))
    with pytest.raises(ValueError, match="lista"):
        PSD.load(_lista_checkpoint(tmp_path))


def _lista_checkpoint(tmp_path):
    path = tmp_path / "l.safetensors"
    latentebm.LISTA(torch.eye(4), 0.1, 1).save(path)
    return path


def test_psd_command_runs_on_the_bundled_sample(tmp_path):
    from latentebm.cli import main

    out = tmp_path / "run"
    argv = ["psd", "--sample", "--out", str(out), "--n-train", "120", "--n-test", "30",
            "--atoms", "16", "--epochs", "1", "--fista-iters", "50", "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["encoders"]) == {"tanh", "lista"}
    for r in metrics["encoders"].values():
        assert r["lasso_energy_encoder"] >= r["lasso_energy_optimal"] * (1 - 1e-5)
        # recorded beside the mean, where free_energy would have warned (reproduce printed it)
        assert 0.0 <= r["psd_free_energy_converged_share"] <= 1.0
        # the untrained encoder's warm start, from the same cold start, is the baseline
        assert r["warm_start_untrained"]["cold_mean"] == r["warm_start"]["cold_mean"]
        assert r["warm_start_untrained"]["warm_mean"] != r["warm_start"]["warm_mean"]
    for name in ("filters_tanh.png", "filters_lista.png", "energy_curves.png",
                 "code_quality.png"):
        assert (out / name).is_file()


@pytest.mark.parametrize("encoder", ["tanh", "lista"])
def test_first_fit_from_data_keeps_the_encoder_module(encoder):
    """The atoms drawn from the data at the first fit re-initialise the encoder in place: a
    hook or a frozen parameter the caller set on it still applies."""
    Y = torch.rand(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = PSD(8, 12, 0.05, encoder=encoder, dtype=torch.float64)
    module, calls = model.encoder, []
    module.register_forward_hook(lambda *args: calls.append(1))
    model.fit(Y, epochs=1, batch_size=16, progress=False)
    assert model.encoder is module and calls
    untrained = PSD(8, 12, 0.05, encoder=encoder, dtype=torch.float64)
    untrained._init_atoms_from(Y)  # what the first fit starts from: the data atoms' encoder
    built = PSD(8, 12, 0.05, encoder=encoder, init=untrained.dictionary(), dtype=torch.float64)
    torch.testing.assert_close(untrained.encoder.state_dict(), built.encoder.state_dict())


def test_energy_is_differentiable_in_the_codes_like_the_other_models():
    Y = torch.rand(6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = PSD(8, 12, 0.05, init="random", dtype=torch.float64)
    Z = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    model.energy(Y, Z).sum().backward()
    W, P = model.dictionary(), model.predict(Y)
    expected = -(Y - Z.detach() @ W.T) @ W + 0.05 * Z.detach().sign() + model.beta * (
        Z.detach() - P)
    torch.testing.assert_close(Z.grad, expected)
    assert isinstance(model.energy(Y.numpy(), Z.detach().numpy()), np.ndarray)


@pytest.mark.parametrize("variant", ["cp", "step", "hybrid"])
def test_a_lista_encoder_that_reads_the_dictionary_follows_the_decoder(variant):
    """Its W (and G = WᵀW) stayed the initial atoms while the decoder learned: the step and
    hybrid rules ran ISTA-like steps on a dictionary the model no longer had."""
    Y = np.random.default_rng(0).standard_normal((64, 12))
    model = PSD(12, 10, 0.1, encoder="lista", variant=variant, n_steps=4, seed=0,
                   dtype=torch.float64)
    model.fit(Y, epochs=2, batch_size=16, progress=False)
    initial = PSD(12, 10, 0.1, encoder="lista", variant=variant, n_steps=4, seed=0,
                     dtype=torch.float64)
    initial._init_atoms_from(torch.from_numpy(Y))
    assert not torch.allclose(model.W, initial.W)  # the decoder learned
    assert torch.equal(model.encoder.W, model.W)
    if hasattr(model.encoder, "G"):
        assert torch.allclose(model.encoder.G, model.W.T @ model.W, rtol=1e-12, atol=1e-12)
