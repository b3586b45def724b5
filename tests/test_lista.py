"""LISTA: ISTA at initialisation, gradients through the unrolled steps, training, warm start,
checkpoints, bad input, and the evaluation helpers of ``latentebm lista``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import sparse_mixture
from torch.func import functional_call

import latentebm
from latentebm import LISTA
from latentebm.experiments import lista_eval as ev

VARIANT_CASES = [("lista", False), ("lista", True), ("cp", False), ("cp", True),
                 ("step", False), ("step", True), ("hybrid", False)]


def sparse_problem(n_features=20, n_atoms=40, n=600, k=3, seed=0, dtype=torch.float64):
    """A unit-norm random dictionary and signals made of ``k`` atoms plus a little noise."""
    W, Y = sparse_mixture(n_features, n_atoms, n, k, seed=seed)
    return W.to(dtype), Y.to(dtype)


@pytest.fixture(scope="module")
def trained():
    """A 2-step untied LISTA trained briefly, with train/test split and optimal test codes."""
    W, Y = sparse_problem(dtype=torch.float32)
    Ytr, Yte = Y[:480], Y[480:]
    model = LISTA(W, 0.2, 2)
    Zte = model.targets(Yte)
    before = ev.relative_code_error(model.encode(Yte).z, Zte)
    history = model.fit(Ytr, epochs=30, batch_size=64, lr=3e-3, progress=False)
    return model, W, Yte, Zte, before, history


@pytest.mark.parametrize("variant,tied", VARIANT_CASES)
@pytest.mark.parametrize("K", [1, 2, 5])
def test_untrained_equals_k_ista_steps(variant, tied, K):
    W, Y = sparse_problem(n=32)
    lam = 0.3
    model = LISTA(W, lam, K, variant=variant, tied=tied)
    ref = latentebm.ista(Y, W, lam, max_iter=K, tol=0, lipschitz=float(model.L))
    assert ref.n_iter == K
    out = model(Y)
    assert out.shape == (32, 40)
    assert torch.allclose(out, ref.z, atol=1e-6, rtol=0)
    assert float(out.detach().abs().max()) > 0.1  # the codes are not trivially zero


def test_untrained_equals_ista_nonneg():
    W, Y = sparse_problem(n=16)
    model = LISTA(W, 0.2, 4, nonneg=True)
    ref = latentebm.ista(Y, W, 0.2, max_iter=4, tol=0, lipschitz=float(model.L), nonneg=True)
    assert torch.allclose(model(Y), ref.z, atol=1e-6, rtol=0)
    assert bool((model(Y) >= 0).all())


@pytest.mark.parametrize("variant,tied", [("lista", False), ("cp", False), ("step", True)])
def test_gradcheck_through_unrolled_steps(variant, tied):
    W, Y = sparse_problem(n_features=5, n_atoms=7, n=3, seed=1)
    model = LISTA(W, 0.05, 3, variant=variant, tied=tied)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    Yg = Y.clone().requires_grad_(True)

    def f(y, *ps):
        return functional_call(model, dict(zip(names, ps, strict=True)), (y,))

    assert float(f(Yg, *params).detach().abs().sum()) > 0
    assert torch.autograd.gradcheck(f, (Yg, *params), eps=1e-6, atol=1e-5)


def test_gradcheck_through_the_hybrid_learned_steps():
    W, Y = sparse_problem(n_features=5, n_atoms=7, n=3, seed=1)
    model = LISTA(W, 0.05, 4, variant="hybrid", head=1)
    with torch.no_grad():  # away from the clip at 0, where the derivative is one-sided
        model.step.fill_(1.3)
        model.cg.fill_(0.7)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]

    def f(*ps):
        return functional_call(model, dict(zip(names, ps, strict=True)), (Y,))

    assert float(f(*params).detach().abs().sum()) > 0
    assert torch.autograd.gradcheck(f, tuple(params), eps=1e-6, atol=1e-5)


def test_hybrid_tail_keeps_the_lasso_solution_as_fixed_point():
    # Whatever the learned steps and conjugate-gradient shares, a tail layer fed the optimal
    # code returns it: the threshold is tied to the step and the gradient on the support is 0.
    W, Y = sparse_problem(n=24)
    model = LISTA(W, 0.2, 5, variant="hybrid", head=2)
    with torch.no_grad():
        model.step.uniform_(0.5, 3.0)
        model.cg.uniform_(0.5, 1.5)
    Z_star = latentebm.fista(Y, W, 0.2, tol=1e-12, max_iter=20000).z
    rule = latentebm.models.lista.STEP_RULES["hybrid"]
    with torch.no_grad():
        context = rule.first(model, Y)[1]
        for k in range(2, 5):
            out = rule.layer(model, Z_star, k, context)
            assert torch.allclose(out, Z_star, atol=1e-8, rtol=0), k
        # and a code off the solution moves towards it
        start = 0.8 * Z_star
        context = rule.first(model, Y)[1]
        closer = rule.layer(model, start, 2, context)
        assert (closer - Z_star).norm() < 0.5 * (start - Z_star).norm()


def _wreck_after(n_updates: int):
    """A fit callback that spoils every weight (deterministically) after each update past the
    first ``n_updates``."""
    def callback(step, model):
        if step > n_updates:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1.5).add_(0.1)
    return callback


def test_validation_restores_the_best_epoch_and_patience_stops_early():
    W, Y = sparse_problem(n=200, dtype=torch.float64)
    Ytr, Yval = Y[:160], Y[160:]
    model = LISTA(W, 0.2, 2)
    Zval = model.targets(Yval)
    per_epoch = 160 // 32
    history = model.fit(Ytr, validation=(Yval, Zval), patience=2, epochs=10, batch_size=32,
                        lr=3e-3, progress=False, callback=_wreck_after(2 * per_epoch))
    val = [h["val_code_error"] for h in history]
    # epochs 0 and 1 trained, the later ones spoilt: two epochs after the best one, it stops
    assert len(val) == val.index(min(val)) + 3 < 10
    assert min(val[2:]) > max(val[:2])
    assert ev.relative_code_error(model.encode(Yval).z, Zval) == pytest.approx(min(val),
                                                                               rel=1e-12)
    free = LISTA(W, 0.2, 2)
    free.fit(Ytr, validation=(Yval, Zval), epochs=10, batch_size=32, lr=3e-3,
             progress=False, callback=_wreck_after(2 * per_epoch))
    assert len(free.history_) == 10  # no patience: every epoch runs, the best is kept
    assert [h["val_code_error"] for h in free.history_[: len(val)]] == pytest.approx(val)
    assert torch.equal(free.encode(Yval).z, model.encode(Yval).z)


def test_a_second_fit_with_validation_starts_its_own_record():
    W, Y = sparse_problem(n=120, dtype=torch.float64)
    Zval = LISTA(W, 0.2, 2).targets(Y[96:])
    model = LISTA(W, 0.2, 2)
    kw = {"validation": (Y[96:], Zval), "batch_size": 32, "lr": 3e-3, "progress": False}
    model.fit(Y[:96], epochs=2, **kw)
    history = model.fit(Y[:96], epochs=3, patience=1, **kw)
    assert [h["epoch"] for h in history] == [0, 1, 0, 1, 2][: len(history)]
    assert ev.relative_code_error(model.encode(Y[96:]).z, Zval) == pytest.approx(
        min(h["val_code_error"] for h in history[2:]), rel=1e-12)


def test_resumed_early_stopping_equals_uninterrupted(tmp_path):
    W, Y = sparse_problem(n=120, dtype=torch.float64)
    Ytr, Yval = Y[:96], Y[96:]
    Zval = LISTA(W, 0.2, 2).targets(Yval)
    kw = {"validation": (Yval, Zval), "patience": 1, "epochs": 6, "batch_size": 32,
          "lr": 3e-3, "progress": False}
    wreck = _wreck_after(3 * 3)
    full = LISTA(W, 0.2, 2)
    full.fit(Ytr, callback=wreck, **kw)

    def stop_at_five(step, model):
        wreck(step, model)
        if step == 5:  # in epoch 1: epoch 0's weights are the best so far
            raise KeyboardInterrupt

    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        LISTA(W, 0.2, 2).fit(Ytr, checkpoint=path, callback=stop_at_five, **kw)
    resumed = LISTA(W, 0.2, 2)
    resumed.fit(Ytr, checkpoint=path, resume=True, callback=wreck, **kw)
    assert len(resumed.history_) == len(full.history_) < 6
    assert [h["val_code_error"] for h in resumed.history_] == pytest.approx(
        [h["val_code_error"] for h in full.history_], rel=1e-12)
    assert torch.equal(resumed.encode(Yval).z, full.encode(Yval).z)
    assert torch.equal(LISTA.load(path).encode(Yval).z, full.encode(Yval).z)


def test_hybrid_layerwise_training_keeps_the_head():
    W, Y = sparse_problem(n=96, dtype=torch.float64)
    shallow = LISTA(W, 0.2, 2, variant="hybrid", head=2)
    shallow.fit(Y, epochs=2, batch_size=32, lr=1e-2, progress=False)
    deeper = shallow.grow(4)
    before = {k: v.clone() for k, v in deeper.state_dict().items() if isinstance(v, torch.Tensor)}
    Z = deeper.targets(Y)
    err0 = ev.relative_code_error(deeper.encode(Y).z, Z)
    deeper.fit(Y, targets=Z, train_head=False, epochs=3, batch_size=32, lr=1e-2, progress=False)
    after = deeper.state_dict()
    for name in ("W_e", "alpha", "S", "theta"):
        assert torch.equal(after[name], before[name]), name
        assert getattr(deeper, name).requires_grad  # given back after fit
    assert not torch.equal(after["cg"], before["cg"])
    assert ev.relative_code_error(deeper.encode(Y).z, Z) < err0
    with pytest.raises(ValueError, match="hybrid"):
        LISTA(W, 0.2, 2).fit(Y, train_head=False, progress=False)


def test_layer_weight_trains_every_step():
    W, Y = sparse_problem(n=160, dtype=torch.float64)
    Z = LISTA(W, 0.2, 3).targets(Y)
    plain, deep = LISTA(W, 0.2, 3), LISTA(W, 0.2, 3)
    for model, weight in ((plain, 0.0), (deep, 1.0)):
        model.fit(Y, targets=Z, layer_weight=weight, epochs=4, batch_size=32, lr=3e-3,
                  progress=False)
    first = [ev.relative_code_error(m.unroll(Y)[0].detach(), Z) for m in (plain, deep)]
    assert first[1] < first[0]


def test_training_lowers_held_out_code_error(trained):
    model, _, Yte, Zte, before, history = trained
    after = ev.relative_code_error(model.encode(Yte).z, Zte)
    assert after < 0.7 * before
    assert history[-1]["code_error"] < history[0]["code_error"]
    assert [h["epoch"] for h in history] == list(range(30))
    assert not history[-1]["partial"]


def test_targets_are_cached(trained, monkeypatch):
    model, W, _, _, _, _ = trained
    Y = sparse_problem(n=40, seed=5, dtype=torch.float32)[1]
    m = LISTA(W, 0.2, 1)
    m.fit(Y, epochs=1, progress=False)
    calls = []
    monkeypatch.setattr(m, "targets", lambda *a, **k: calls.append(1))
    m.fit(Y, epochs=1, progress=False)
    assert calls == []
    monkeypatch.undo()
    # other atoms loaded into the same model: the cached codes belong to the old ones
    other = LISTA(torch.roll(W, 1, dims=0), 0.2, 1)
    m.load_state_dict(other.state_dict())
    m.fit(Y, epochs=1, progress=False)
    torch.testing.assert_close(m._target_cache[1], other.targets(Y))


def test_warm_start_never_needs_more_iterations(trained):
    model, W, Yte, _, _, _ = trained
    kw = {"tol": 1e-5, "max_iter": 3000, "check_every": 1}
    cold = latentebm.fista(Yte, W, 0.2, **kw)
    warm = latentebm.fista(Yte, W, 0.2, z0=model(Yte), **kw)
    assert cold.all_converged and warm.all_converged
    # The batch is done no later, and needs fewer iterations in total. (Per sample FISTA's
    # momentum makes this a tendency, not a guarantee: the CLI reports the exceptions.)
    assert warm.n_iter <= cold.n_iter
    assert int(warm.n_iter_per_sample.sum()) < 0.9 * int(cold.n_iter_per_sample.sum())


def test_numpy_encode_and_warm_start_api(trained):
    model, W, Yte, _, _, _ = trained
    Y_np = Yte.numpy()
    Z_np = model.encode(Y_np).z
    assert isinstance(Z_np, np.ndarray) and Z_np.shape == (Yte.shape[0], 40)
    res = latentebm.fista(Y_np, W.numpy(), 0.2, z0=Z_np)
    assert isinstance(res.z, np.ndarray) and res.all_converged


def test_save_load_round_trip(tmp_path, trained):
    model, _, Yte, _, _, _ = trained
    path = tmp_path / "lista.safetensors"
    model.save(path)
    loaded = LISTA.load(path)
    assert (loaded.n_steps, loaded.variant, loaded.tied, loaded.lam) == (2, "lista", False, 0.2)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                     strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name
    assert torch.equal(model.encode(Yte).z, loaded.encode(Yte).z)
    assert loaded.history_ == model.history_


@pytest.mark.parametrize("variant,tied", VARIANT_CASES)
@pytest.mark.parametrize("K", [1, 3])
def test_every_variant_saves_and_loads(tmp_path, variant, tied, K):
    """The step-only rule's one-step or tied parameters were expanded views (stride 0), which
    the checkpoint's checksum could not read: save raised a RuntimeError."""
    W, Y = sparse_problem(n=16, dtype=torch.float32)
    model = LISTA(W, 0.2, K, variant=variant, tied=tied)
    model.save(tmp_path / "m.safetensors")
    loaded = LISTA.load(tmp_path / "m.safetensors")
    assert torch.equal(model.encode(Y).z, loaded.encode(Y).z)


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path, variant):
    W, Y = sparse_problem(n=100, dtype=torch.float32)
    kw = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "progress": False}
    full = LISTA(W, 0.2, 2, variant=variant)
    full.fit(Y, **kw)

    def stop_at_five(step, _):
        if step == 5:
            raise KeyboardInterrupt

    path = tmp_path / "ckpt.safetensors"
    part = LISTA(W, 0.2, 2, variant=variant)
    with pytest.raises(KeyboardInterrupt):
        part.fit(Y, checkpoint=path, callback=stop_at_five, **kw)
    resumed = LISTA(W, 0.2, 2, variant=variant)
    resumed.fit(Y, checkpoint=path, resume=True, **kw)
    for name, p in full.state_dict().items():
        if isinstance(p, torch.Tensor):  # the extra state (counters, timed history) aside
            assert torch.equal(p, resumed.state_dict()[name]), name
    assert [h["code_error"] for h in full.history_] == pytest.approx(
        [h["code_error"] for h in resumed.history_], rel=1e-12)
    # Resuming a finished run changes nothing.
    again = LISTA(W, 0.2, 2, variant=variant)
    again.fit(Y, checkpoint=path, resume=True, **kw)
    assert torch.equal(again.encode(Y).z, resumed.encode(Y).z)


def test_grow_keeps_trained_steps(trained):
    model, W, Yte, _, _, _ = trained
    deeper = model.grow(4)
    assert deeper.n_steps == 4
    assert torch.equal(deeper.S[0], model.S[0]) and torch.equal(deeper.W_e, model.W_e)
    assert torch.equal(deeper.theta[:2], model.theta)
    assert torch.equal(deeper.unroll(Yte)[1], model.unroll(Yte)[1])


@pytest.mark.parametrize("variant,tied", VARIANT_CASES)
@pytest.mark.parametrize("K", [1, 2])
def test_grown_network_starts_where_the_shallow_one_ended(variant, tied, K):
    W, Y = sparse_problem(n=32, dtype=torch.float32)
    shallow = LISTA(W, 0.2, K, variant=variant, tied=tied)
    shallow.fit(Y, epochs=2, batch_size=8, lr=1e-2, progress=False)
    deeper = shallow.grow(K + 3)
    with torch.no_grad():
        if tied:
            assert torch.equal(deeper.unroll(Y)[K - 1], shallow.unroll(Y)[-1])
        else:
            assert torch.allclose(deeper(Y), shallow(Y), atol=1e-6, rtol=0)


def test_bad_input(tmp_path):
    W, Y = sparse_problem(n=20)
    with pytest.raises(ValueError, match="n_steps"):
        LISTA(W, 0.1, 0)
    with pytest.raises(ValueError, match="lam"):
        LISTA(W, -0.1, 2)
    with pytest.raises(ValueError, match="variant"):
        LISTA(W, 0.1, 2, variant="nope")
    with pytest.raises(ValueError, match="W"):
        LISTA(W[0], 0.1, 2)
    bad = W.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="W"):
        LISTA(bad, 0.1, 2)
    model = LISTA(W, 0.1, 2)
    with pytest.raises(ValueError, match="Y"):
        model.encode(Y[:, :5])
    Yn = Y.clone()
    Yn[1, 1] = float("inf")
    with pytest.raises(ValueError, match="Y"):
        model.encode(Yn)
    with pytest.raises(TypeError, match="Y"):
        model.encode(Y.float())
    with pytest.raises(ValueError, match="targets"):
        model.fit(Y, targets=torch.zeros(3, 40, dtype=torch.float64), progress=False)
    lam_max = float((Y @ W).abs().max())
    with pytest.raises(ValueError, match=rf"every target code is zero.*{lam_max:.4g}"):
        LISTA(W, 1.01 * lam_max, 2).fit(Y, progress=False)
    with pytest.raises(ValueError, match="every target code is zero"):
        model.fit(Y, targets=torch.zeros(Y.shape[0], 40, dtype=torch.float64), progress=False)
    with pytest.raises(ValueError, match="epochs"):
        model.fit(Y, epochs=0, progress=False)
    with pytest.raises(ValueError, match="patience needs validation"):
        model.fit(Y, patience=3, progress=False)
    Z = torch.zeros(20, 40, dtype=torch.float64)
    with pytest.raises(ValueError, match="patience"):
        model.fit(Y, validation=(Y, Z), patience=0, progress=False)
    with pytest.raises(ValueError, match="validation codes"):
        model.fit(Y, validation=(Y, Z[:, :3]), progress=False)
    with pytest.raises(TypeError, match="validation"):
        model.fit(Y, validation=Y, progress=False)
    with pytest.raises(ValueError, match="layer_weight"):
        model.fit(Y, layer_weight=-1.0, progress=False)
    with pytest.raises(ValueError, match="head"):
        LISTA(W, 0.1, 2, variant="hybrid", head=0)
    with pytest.raises(ValueError, match="tied"):
        LISTA(W, 0.1, 2, variant="hybrid", tied=True)
    path = tmp_path / "c.safetensors"
    LISTA(W, 0.1, 2).fit(Y, epochs=1, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="n_steps"):
        LISTA(W, 0.1, 3).fit(Y, epochs=1, checkpoint=path, resume=True, progress=False)
    with pytest.raises(ValueError, match="holds a 'lista' model"):
        latentebm.SparseCoding.load(path)


def test_solver_trace_matches_library_solvers():
    W, Y = sparse_problem(n=30, dtype=torch.float32)
    lam = 0.2
    Z_star = latentebm.fista(Y, W, lam).z
    for accelerated, k in ((True, 7), (False, 9)):
        trace = ev.solver_trace(Y, W, lam, Z_star, 12, accelerated=accelerated)
        assert np.all(np.diff(trace) < 0.05)
        if accelerated:
            z = ev.fista_fixed(Y, W, lam, k, plain=True)
        else:
            z = ev.ista_fixed(Y, W, lam, k)
        assert trace[k - 1] == pytest.approx(ev.relative_code_error(z, Z_star), rel=1e-4)
    assert ev.iterations_to_reach(np.array([0.5, 0.2, 0.1]), 0.2) == 2
    assert ev.iterations_to_reach(np.array([0.5, 0.2]), 0.01) is None
    assert ev.iterations_to_reach(np.array([0.5, 0.2]), 0.3, [10, 20]) == 20


def test_lista_command_runs_on_the_bundled_sample(tmp_path):
    from latentebm.cli import main

    out = tmp_path / "run"
    argv = ["lista", "--sample", "--out", str(out), "--n-train", "150", "--n-test", "40",
            "--atoms", "16", "--steps", "1", "2", "--variants", "lista", "hybrid",
            "--epochs-per-step", "1", "2", "--head", "1", "--shift-augment", "--patience", "3",
            "--fista-iters", "50", "--ista-iters", "80", "--speed-samples", "40",
            "--warm-samples", "20", "--quiet"]
    assert main(argv) == 0
    import json

    rows = json.loads((out / "table.json").read_text())["rows"]
    assert [(r["variant"], r["K"], r["epochs_run"]) for r in rows] == [
        ("lista", 1, 1), ("lista", 2, 2), ("hybrid", 1, 1), ("hybrid", 2, 2)]
    assert all(r["val_code_error"] > 0 for r in rows)
    assert (out / "shifted_targets.safetensors").is_file()
    assert all(0 <= r["code_error"] for r in rows)
    for name in ("table.md", "error_vs_iterations.png", "metrics.json",
                 "lista_lista_K2.safetensors"):
        assert (out / name).is_file()
    # the hybrid's head (one layer here) has per-layer input matrices, classic LISTA one shared
    assert LISTA.load(out / "lista_hybrid_K2.safetensors").W_e.shape == (1, 16, 784)
    assert LISTA.load(out / "lista_lista_K2.safetensors").W_e.shape == (16, 784)
    # the learning rates used, not the flag's None
    assert json.loads((out / "config.json").read_text())["lr"] == {"lista": 3e-3,
                                                                   "hybrid": 3e-3}
    assert main(argv + ["--resume"]) == 0
    # a dictionary of other atoms than --atoms asks for is refused, as psd refuses it
    sc = latentebm.SparseCoding(784, 8, 0.1, init="random")
    sc.save(tmp_path / "d8.safetensors")
    assert main(["lista", "--sample", "--dictionary", str(tmp_path / "d8.safetensors"),
                 "--atoms", "16", "--steps", "1", "--out", str(tmp_path / "d"), "--quiet"]) == 2


@pytest.mark.parametrize("variant,tied", VARIANT_CASES)
def test_support_selection_keeps_the_largest_entries_unshrunk(variant, tied):
    W, Y = sparse_problem(n=16)
    plain = LISTA(W, 0.3, 3, variant=variant, tied=tied)
    ss = LISTA(W, 0.3, 3, variant=variant, tied=tied, support=0.05, support_max=0.1)
    assert [ss.selected(k) for k in range(4)] == [2, 4, 4, 4]
    # Step 1 of both networks sees the same pre-activation: where they differ, the entry is
    # among the 2 largest of its sample and support selection kept it unshrunk (|v| = |z| + θ).
    z_plain, z_ss = plain.unroll(Y)[0], ss.unroll(Y)[0]
    moved = (z_plain != z_ss).sum(1)
    assert int(moved.max()) <= 2 and int(moved.sum()) > 0
    assert torch.all((z_ss.abs() >= z_plain.abs()) & ((z_ss != 0) == (z_plain != 0)))
    # Grown steps are still the identity (tied: the first 3 steps are the same), and the option
    # survives grow.
    deeper = ss.grow(5)
    assert deeper.support == 0.05 and deeper.support_max == 0.1
    with torch.no_grad():
        got = deeper.unroll(Y)[2] if tied else deeper(Y)
        assert torch.allclose(got, ss(Y), atol=1e-12, rtol=0)


def test_support_selection_trains_and_round_trips(tmp_path):
    W, Y = sparse_problem(dtype=torch.float32)
    model = LISTA(W, 0.2, 3, variant="cp", support=0.03)
    assert model.support_max == pytest.approx(0.15)
    Z = model.targets(Y)
    before = ev.relative_code_error(model.encode(Y).z, Z)
    model.fit(Y, targets=Z, epochs=5, batch_size=64, lr=3e-3, progress=False)
    assert ev.relative_code_error(model.encode(Y).z, Z) < 0.75 * before
    model.save(tmp_path / "ss.safetensors")
    again = LISTA.load(tmp_path / "ss.safetensors")
    assert again.support == model.support and again.support_max == model.support_max
    assert torch.equal(again.encode(Y).z, model.encode(Y).z)
    with pytest.raises(ValueError, match="support"):
        LISTA(W, 0.2, 3, support=1.5)


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_input_weights_stay_in_the_range_of_the_dictionary(variant):
    # An undercomplete dictionary (30 features, 12 atoms): the lasso's codes depend on y only
    # through Wᵀy, and fit keeps the input weights in range(W) unless told not to.
    W, Y = sparse_problem(n_features=30, n_atoms=12, n=128, k=2, dtype=torch.float32)
    P = torch.eye(30) - W @ torch.linalg.pinv(W)

    def off_range(m):
        M = (m.W_e.T if variant == "lista" else m.V[0]).detach()
        return float((P @ M).norm() / M.norm())

    kept = LISTA(W, 0.1, 2, variant=variant)
    kept.fit(Y, epochs=3, batch_size=32, lr=1e-2, progress=False)
    free = LISTA(W, 0.1, 2, variant=variant)
    free.fit(Y, epochs=3, batch_size=32, lr=1e-2, project_input=False, progress=False)
    assert off_range(kept) < 1e-5 < 1e-2 < off_range(free)


def test_shifted_copies_move_every_pixel_by_one():
    from latentebm.experiments.lista_cmd import shifted_copies

    Y = torch.arange(1.0, 2 * 12 + 1).reshape(2, 12)
    S = shifted_copies(Y, (3, 4)).reshape(4, 2, 3, 4)
    img = Y.reshape(2, 3, 4)
    assert torch.equal(S[0, :, 1:], img[:, :-1]) and bool((S[0, :, 0] == 0).all())
    assert torch.equal(S[1, :, :-1], img[:, 1:]) and bool((S[1, :, -1] == 0).all())
    assert torch.equal(S[2, :, :, 1:], img[:, :, :-1]) and bool((S[2, :, :, 0] == 0).all())
    assert torch.equal(S[3, :, :, :-1], img[:, :, 1:]) and bool((S[3, :, :, -1] == 0).all())


@pytest.mark.parametrize("extra,message", [
    (["--epochs-per-step", "1"], "epochs-per-step"),
    (["--steps", "2", "2", "--epochs-per-step", "1", "3"], "repeats"),
    (["--head", "0"], "head"),
    (["--patience", "0"], "patience"),
    (["--layer-weight", "-1"], "layer-weight"),
    (["--validation", "-5"], "validation"),
    (["--validation", "150", "--n-train", "150"], "validation"),
    (["--dataset", "natural", "--shift-augment"], "shift-augment"),
])
def test_lista_command_refuses_bad_training_flags_before_any_work(tmp_path, extra, message,
                                                                  capsys):
    from latentebm.cli import main

    argv = ["lista", "--sample", "--out", str(tmp_path / "r"), "--steps", "1", "2", *extra]
    assert main(argv) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "targets.safetensors").exists()


@pytest.mark.parametrize("variant", ["lista", "hybrid"])
def test_per_step_input_starts_as_ista_trains_grows_and_round_trips(variant, tmp_path):
    # One input matrix per classic layer: the untrained network is still K ISTA steps, the
    # layers' matrices part ways in training, a grown copy computes the same codes (its added
    # steps start as the identity) and the option survives save/load.
    W, Y = sparse_problem(n=64, dtype=torch.float32)
    lam = 0.2
    for K in (1, 2, 4):
        model = LISTA(W, lam, K, variant=variant, per_step_input=True, head=2)
        assert model.W_e.shape == (min(K, 2) if variant == "hybrid" else K, 40, 20)
        ref = latentebm.ista(Y, W, lam, max_iter=K, tol=0, lipschitz=float(model.L))
        assert torch.allclose(model(Y), ref.z, atol=1e-5, rtol=0), K
    model = LISTA(W, lam, 2, variant=variant, per_step_input=True)
    model.fit(Y, epochs=3, batch_size=16, lr=1e-2, progress=False)
    assert not torch.allclose(model.W_e[0], model.W_e[1])
    deeper = model.grow(4)
    assert deeper.per_step_input and torch.equal(deeper.W_e[:2], model.W_e)
    with torch.no_grad():
        assert torch.allclose(deeper(Y), model(Y), atol=1e-6, rtol=0)
    model.save(tmp_path / "psi.safetensors")
    again = LISTA.load(tmp_path / "psi.safetensors")
    assert again.per_step_input and torch.equal(again.encode(Y).z, model.encode(Y).z)


def test_per_step_input_bad_input():
    W, _ = sparse_problem(n=4)
    for kwargs in ({"variant": "cp"}, {"variant": "step"}, {"tied": True}):
        with pytest.raises(ValueError, match="per_step_input"):
            LISTA(W, 0.1, 2, per_step_input=True, **kwargs)
    with pytest.raises(TypeError, match="per_step_input"):
        LISTA(W, 0.1, 2, per_step_input=1)


def test_codes_per_second_times_many_calls_of_a_fast_encoder():
    """One call of well under a millisecond per timing gave speeds 20x apart between runs."""
    calls = []
    rate = ev.codes_per_second(lambda: calls.append(1), 10)
    assert len(calls) > 3 * 10 and 0 < rate < float("inf")


def test_a_resumed_second_fit_counts_only_its_own_held_out_scores(tmp_path):
    """Resuming a second fit took the first fit's validation scores for its own, so early
    stopping kept other weights than the uninterrupted second fit (0.75 against 0.40)."""
    gen = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(16, 24, generator=gen), dim=0)
    Y, Yv = torch.randn(160, 16, generator=gen), torch.randn(40, 16, generator=gen)

    def warmed_up():
        net = LISTA(W, 0.1, 3, seed=1)
        Zv = net.targets(Yv)
        net.fit(Y, epochs=3, batch_size=32, lr=1e-2, validation=(Yv, Zv), progress=False)
        return net, Zv

    second = {"epochs": 4, "batch_size": 32, "lr": 0.1, "progress": False}
    whole, Zv = warmed_up()
    whole.fit(Y, validation=(Yv, Zv), **second)
    cut, _ = warmed_up()
    stop_at = cut.n_updates_ + 7

    def interrupt(n, model):
        if n == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cut.fit(Y, validation=(Yv, Zv), checkpoint=tmp_path / "c.safetensors",
                callback=interrupt, **second)
    resumed, _ = warmed_up()
    resumed.fit(Y, validation=(Yv, Zv), checkpoint=tmp_path / "c.safetensors", resume=True,
                **second)
    for name, t in whole.state_dict().items():
        if isinstance(t, torch.Tensor):
            assert torch.equal(t, resumed.state_dict()[name]), name


def test_resuming_with_another_dictionary_is_refused(tmp_path):
    """λ was checked but W, a buffer, was overwritten by the checkpoint's: the resumed network
    belonged to another problem than the one it was built for."""
    gen = torch.Generator().manual_seed(0)
    W1, W2 = (torch.nn.functional.normalize(torch.randn(16, 24, generator=gen), dim=0)
              for _ in range(2))
    Y = torch.randn(64, 16, generator=gen)

    def interrupt(n, model):
        if n == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LISTA(W1, 0.1, 3).fit(Y, epochs=2, batch_size=8, checkpoint=tmp_path / "c.safetensors",
                              callback=interrupt, progress=False)
    with pytest.raises(ValueError, match="its W differs from this model's"):
        LISTA(W2, 0.1, 3).fit(Y, epochs=2, batch_size=8, checkpoint=tmp_path / "c.safetensors",
                              resume=True, progress=False)
    LISTA(W1, 0.1, 3).fit(Y, epochs=2, batch_size=8, checkpoint=tmp_path / "c.safetensors",
                          resume=True, progress=False)


def test_float32_targets_on_real_digits_are_certified_without_warnings():
    """FISTA in float32 stopped at the iteration cap above the default 1e-5 on most MNIST
    digits with data atoms (a coherent dictionary); the targets now solve in float64."""
    import warnings

    from latentebm.data import load_mnist, mnist_vectors

    X = mnist_vectors(load_mnist("train", sample=True)[0][:300])
    rng = np.random.default_rng(0)
    W = X[rng.choice(len(X), 64, replace=False)].T.copy()
    W /= np.linalg.norm(W, axis=0)
    model = latentebm.LISTA(torch.from_numpy(W), 0.05, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Z = model.targets(torch.from_numpy(X))
    assert Z.dtype == torch.float32
    ref = latentebm.solve(X.astype(np.float64), W.astype(np.float64), 0.05, tol=1e-12)
    energy = latentebm.lasso_energy(X.astype(np.float64), W.astype(np.float64),
                                    Z.double().numpy(), 0.05)
    assert float(((energy - ref.energy) / ref.energy).max()) <= 1e-5
