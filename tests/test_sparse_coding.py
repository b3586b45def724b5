"""Dictionary learning: planted-dictionary recovery, determinism, interruption and resumption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentebm as le


def planted_data(seed=0, n_features=30, n_atoms=20, n_samples=3000, k=3, noise=0.01):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_features, n_atoms))
    W /= np.linalg.norm(W, axis=0)
    Z = np.zeros((n_samples, n_atoms))
    for i in range(n_samples):
        support = rng.choice(n_atoms, size=k, replace=False)
        Z[i, support] = rng.choice([-1, 1], size=k) * rng.uniform(0.5, 1.5, size=k)
    Y = Z @ W.T + noise * rng.standard_normal((n_samples, n_features))
    return Y.astype(np.float32), W


def recovered_share(W_true: np.ndarray, W_learned: np.ndarray, threshold: float = 0.95) -> float:
    cos = np.abs(W_true.T @ W_learned)
    return float((cos.max(axis=1) >= threshold).mean())


@pytest.mark.parametrize("method", ["online", "sgd"])
def test_planted_dictionary_recovered(method):
    Y, W_true = planted_data()
    model = le.SparseCoding(30, 20, lam=0.1, seed=1)
    model.fit(Y, epochs=8 if method == "online" else 25, batch_size=128, method=method,
              progress=False)
    W = model.dictionary().numpy()
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, atol=1e-5)
    assert recovered_share(W_true, W) >= 0.9


@pytest.mark.parametrize("solver", ["fista", "gram_cd"])
def test_planted_dictionary_recovered_by_either_coding_solver(solver):
    Y, W_true = planted_data()
    model = le.SparseCoding(30, 20, lam=0.1, seed=1)
    model.fit(Y, epochs=8, batch_size=128, solver=solver, progress=False)
    assert recovered_share(W_true, model.dictionary().numpy()) >= 0.9


def test_auto_coding_solver_is_gram_cd_on_the_cpu_and_resume_keeps_it(tmp_path):
    Y, _ = planted_data(n_samples=300)
    path = tmp_path / "ckpt.safetensors"
    auto = le.SparseCoding(30, 20, lam=0.05, seed=2)
    auto.fit(Y, epochs=1, batch_size=100, checkpoint=path, progress=False)
    named = le.SparseCoding(30, 20, lam=0.05, seed=2)
    named.fit(Y, epochs=1, batch_size=100, solver="gram_cd", progress=False)
    assert torch.equal(auto.dictionary(), named.dictionary())
    with pytest.raises(ValueError, match="solver: checkpoint has 'gram_cd', now 'fista'"):
        le.SparseCoding(30, 20, lam=0.05, seed=2).fit(
            Y, epochs=2, batch_size=100, solver="fista", checkpoint=path, resume=True,
            progress=False)


def test_unknown_coding_solver_is_named_in_the_error():
    Y, _ = planted_data(n_samples=100)
    with pytest.raises(ValueError, match="unknown method 'lars'.*'gram_cd'"):
        le.SparseCoding(30, 20, lam=0.05).fit(Y, solver="lars", progress=False)


def test_encode_picks_the_solver_by_structure_and_takes_a_named_one():
    Y, W = planted_data(n_samples=50)
    model = le.SparseCoding(30, 20, lam=0.05, init=W)
    auto = model.encode(Y, tol=1e-5)
    fista = model.encode(Y, tol=1e-5, method="fista")
    assert auto.method == "gram_cd" and fista.method == "fista"
    assert bool(auto.converged.all()) and bool(fista.converged.all())
    np.testing.assert_allclose(auto.energy, fista.energy, rtol=2e-5)
    with pytest.raises(ValueError, match="unknown method 'lars'"):
        model.encode(Y, method="lars")


def test_same_seed_same_atoms():
    Y, _ = planted_data(n_samples=600)
    atoms = []
    for _ in range(2):
        model = le.SparseCoding(30, 20, lam=0.05, seed=3)
        model.fit(Y, epochs=2, batch_size=100, progress=False)
        atoms.append(model.dictionary().clone())
    assert torch.equal(atoms[0], atoms[1])


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    Y, _ = planted_data(n_samples=600)
    reference = le.SparseCoding(30, 20, lam=0.05, seed=4)
    reference.fit(Y, epochs=3, batch_size=100, progress=False)

    path = tmp_path / "ckpt.safetensors"

    def stop_at_step_8(step, model):
        if step == 8:
            raise KeyboardInterrupt

    interrupted = le.SparseCoding(30, 20, lam=0.05, seed=4)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(Y, epochs=3, batch_size=100, checkpoint=path, callback=stop_at_step_8,
                        progress=False)
    assert path.exists()
    resumed = le.SparseCoding(30, 20, lam=0.05, seed=4)
    resumed.fit(Y, epochs=3, batch_size=100, checkpoint=path, resume=True, progress=False)
    assert resumed.n_steps_ == reference.n_steps_
    torch.testing.assert_close(resumed.dictionary(), reference.dictionary(), rtol=0, atol=0)
    assert [h["epoch"] for h in resumed.history_] == [0, 1, 2]


def test_resume_rejects_other_configuration(tmp_path):
    Y, _ = planted_data(n_samples=300)
    path = tmp_path / "ckpt.safetensors"
    le.SparseCoding(30, 20, lam=0.05).fit(Y, epochs=1, batch_size=100, checkpoint=path,
                                          progress=False)
    with pytest.raises(ValueError, match="lam"):
        le.SparseCoding(30, 20, lam=0.07).fit(Y, epochs=2, batch_size=100, checkpoint=path,
                                              resume=True, progress=False)


def test_save_load_round_trip(tmp_path):
    Y, _ = planted_data(n_samples=300)
    model = le.SparseCoding(30, 20, lam=0.05, seed=2)
    model.fit(Y, epochs=1, batch_size=100, progress=False)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = le.SparseCoding.load(path)
    assert torch.equal(loaded.dictionary(), model.dictionary())
    assert loaded.lam == model.lam and loaded.n_steps_ == model.n_steps_
    np.testing.assert_array_equal(loaded.encode(Y[:10]).z, model.encode(Y[:10]).z)


def test_unused_atoms_are_reinitialised():
    Y, _ = planted_data(n_samples=400)
    Y[:, 15:] = 0  # the data live in the first 15 coordinates
    init = np.zeros((30, 20))
    init[:15, :5] = np.random.default_rng(0).standard_normal((15, 5))
    init[15:, 5:] = np.eye(15)  # atoms 5..19 are orthogonal to every sample: never used
    model = le.SparseCoding(30, 20, lam=0.05, init=init, seed=0)
    history = model.fit(Y, epochs=3, batch_size=100, dead_after=2, progress=False)
    assert sum(h["reinitialized"] for h in history) >= 15
    W = model.dictionary().numpy()
    assert np.abs(W[:15, 5:]).sum(axis=0).min() > 0.5  # moved into the data's subspace


def test_training_lowers_energy():
    Y, _ = planted_data(n_samples=1000)
    model = le.SparseCoding(30, 20, lam=0.05, init="random", seed=5)
    before = model.energy(Y[:200]).mean()
    model.fit(Y, epochs=3, batch_size=100, progress=False)
    after = model.energy(Y[:200]).mean()
    assert after < 0.7 * before


def test_nonneg_atoms_stay_non_negative_unit_norm_and_lower_the_energy():
    gen = torch.Generator().manual_seed(0)
    parts = torch.rand(6, 30, generator=gen, dtype=torch.float64) * (
        torch.rand(6, 30, generator=gen, dtype=torch.float64) > 0.7)
    weights = torch.rand(400, 6, generator=gen, dtype=torch.float64) * (
        torch.rand(400, 6, generator=gen, dtype=torch.float64) > 0.5)
    Y = weights @ parts
    model = le.SparseCoding(30, 8, 0.05, nonneg=True, nonneg_atoms=True, init="random", seed=1,
                         dtype=torch.float64)
    assert bool((model.W >= 0).all())
    before = float(model.energy(Y).mean())
    model.fit(Y, epochs=3, batch_size=50, progress=False)
    assert bool((model.W >= 0).all())
    torch.testing.assert_close(model.W.norm(dim=0), torch.ones(8, dtype=torch.float64))
    assert float(model.energy(Y).mean()) < 0.5 * before
    sgd = le.SparseCoding(30, 8, 0.05, nonneg=True, nonneg_atoms=True, seed=1,
                       dtype=torch.float64)
    sgd.fit(Y, epochs=1, batch_size=50, method="sgd", progress=False)
    assert bool((sgd.W >= 0).all())
    with pytest.raises(ValueError, match="negative entries"):
        le.SparseCoding(30, 8, 0.05, nonneg_atoms=True, init=-torch.ones(30, 8))
