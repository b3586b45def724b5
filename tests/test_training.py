"""The training package: the flattener, the one checkpoint format and its loader, divergence
detection in the loop, and training state that rides in ``state_dict()``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import latentebm as le
from latentebm.training import (
    CheckpointError,
    MinibatchLoop,
    TrainingState,
    cosine_schedule,
    flatten,
    read_checkpoint,
    unflatten,
    write_checkpoint,
)
from latentebm.training.schedules import cosine_factor

D64 = torch.float64


def data(n=64, d=10, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=D64)


def trained_optimizer():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.8, 0.9))
    sched = cosine_schedule(opt, 10, 0.01)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        sched.step()
    return net, opt, sched


def test_flattener_round_trips_optimizer_and_scheduler_state_through_json():
    _, opt, sched = trained_optimizer()
    for state, prefix in ((opt.state_dict(), "optimizer"), (sched.state_dict(), "scheduler")):
        skeleton, tensors = flatten(state, prefix)
        assert all(k.startswith(prefix + ".") for k in tensors)
        back = unflatten(json.loads(json.dumps(skeleton)), tensors)
        assert back.keys() == state.keys()
        if prefix == "optimizer":
            assert back["param_groups"][0]["betas"] == (0.8, 0.9)
            for i, slots in state["state"].items():
                for key, value in slots.items():
                    assert torch.equal(back["state"][i][key], value)
        else:
            assert back == state


def test_cosine_schedule_matches_the_formula():
    _, opt, sched = trained_optimizer()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * cosine_factor(3, 10, 0.01))
    assert cosine_factor(0, 10, 0.01) == 1.0 and cosine_factor(10, 10, 0.01) == pytest.approx(0.01)


def test_writer_refuses_non_finite_tensors_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.safetensors"
    model = le.SparseCoding(10, 6, 0.1, init="random", dtype=D64)
    model.save(path)
    before = path.read_bytes()
    model.A[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="'model.A' holds NaN"):
        model.save(path)
    assert path.read_bytes() == before
    _, opt, sched = trained_optimizer()
    next(iter(opt.state.values()))["exp_avg"].fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="optimizer"):
        write_checkpoint(tmp_path / "t.safetensors", kind="x", config={}, state_dict={},
                         training=TrainingState((0, 0), {}, opt.state_dict(), None))
    assert not (tmp_path / "t.safetensors").exists()


def rewrite(src, dst, *, drop=None, meta=None, tensors=None, keep_checksum=False):
    """Copy a checkpoint with a tensor dropped or replaced, or metadata changed; without its
    checksum (as another tool would write it), unless ``keep_checksum``."""
    t = load_file(str(src))
    with open(src, "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    m = dict(header["__metadata__"])
    if not keep_checksum:
        m.pop("sha256")
        m.pop("sha256_metadata")
    if drop:
        t.pop(drop)
    t.update(tensors or {})
    m.update(meta or {})
    save_file(t, str(dst), metadata=m)
    return dst


@pytest.fixture
def saved(tmp_path):
    model = le.SparseCoding(10, 6, 0.1, init="random", dtype=D64)
    model.fit(data(), epochs=1, batch_size=16, progress=False,
              checkpoint=tmp_path / "ck.safetensors")
    return tmp_path / "ck.safetensors"


def test_loader_names_every_kind_of_damage(saved, tmp_path):
    config = json.loads(json.loads(json.dumps(read_meta(saved)))["config"])
    cases = {
        "tensor 'model.A' is missing": rewrite(saved, tmp_path / "a", drop="model.A"),
        "config lacks \\['n_atoms'\\]": rewrite(saved, tmp_path / "b", meta={
            "config": json.dumps({k: v for k, v in config.items() if k != "n_atoms"})}),
        "'config' is not valid JSON": rewrite(saved, tmp_path / "c", meta={"config": "{oops"}),
        "'W' has shape \\(10, 6\\) but its config implies \\(10, 7\\)": rewrite(
            saved, tmp_path / "d", meta={"config": json.dumps({**config, "n_atoms": 7})}),
        "'model.W' holds NaN": rewrite(saved, tmp_path / "e",
                                       tensors={"model.W": torch.full((10, 6), np.nan)}),
        "not a safetensors file": (tmp_path / "f").write_bytes(b"\x00" * 20) and tmp_path / "f",
        "training position": rewrite(saved, tmp_path / "g", meta={"training": json.dumps({
            **json.loads(read_meta(saved)["training"]), "position": [-1, "x"]})}),
        "tensor data do not match the checksum": rewrite(
            saved, tmp_path / "h", tensors={"model.W": torch.zeros((10, 6), dtype=D64)},
            keep_checksum=True),
        # one flipped bit in the JSON (λ 0.1 -> 0.3) was loaded as the model's own λ
        "metadata .* do not match the checksum": rewrite(
            saved, tmp_path / "i", meta={"config": json.dumps({**config, "lam": 0.3})},
            keep_checksum=True),
    }
    for message, path in cases.items():
        with pytest.raises(CheckpointError, match=f"checkpoint .* is damaged: .*{message}"):
            le.SparseCoding.load(path)
    # another model's checkpoint is not damaged: the message says whose it is
    with pytest.raises(CheckpointError, match="holds a 'sparse_coding' model, not a "
                                              "'conv_dictionary_learning' one") as refused:
        le.ConvDictionaryLearning.load(saved)
    assert "damaged" not in str(refused.value)
    with pytest.raises(CheckpointError, match="damaged"):  # also on resume
        le.SparseCoding(10, 6, 0.1, dtype=D64).fit(data(), batch_size=16, progress=False,
                                                   checkpoint=tmp_path / "a", resume=True)


def read_meta(path):
    with open(path, "rb") as fh:
        return json.loads(fh.read(int.from_bytes(fh.read(8), "little")))["__metadata__"]


def test_a_checkpoint_from_0_1_0_is_named_as_such(saved, tmp_path):
    old = rewrite(saved, tmp_path / "old", meta={"format": "latentebm-checkpoint-1"})
    with pytest.raises(CheckpointError, match="latentebm 0.1.0 .* older version"):
        le.SparseCoding.load(old)


def test_training_state_rides_in_the_state_dict(saved):
    model = le.SparseCoding.load(saved)
    assert model.n_steps_ == 4 and len(model.history_) == 1 and not model._init_from_data
    copy = le.SparseCoding(10, 6, 0.1, dtype=D64)
    copy.load_state_dict(model.state_dict())
    assert copy.n_steps_ == 4 and copy.history_ == model.history_
    assert torch.equal(copy.W, model.W)
    assert "W" in dict(model.named_buffers()) and not list(model.parameters())
    assert model.config.n_atoms == model.n_atoms == 6
    with pytest.raises(AttributeError):
        model.n_atoms = 7


def regression_run(path, lr, *, epochs=3, checkpoint_every=4, losses=None):
    """Least squares by SGD on the one loop; the loss is NaN/inf once ``lr`` is far too big."""
    torch.manual_seed(0)
    net = torch.nn.Linear(10, 1).double()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    X, y = data(), data(64, 1, seed=1)

    def save(epoch, batch):
        write_checkpoint(path, kind="test", config={}, state_dict=net.state_dict(),
                         training=TrainingState((epoch, batch), {}, opt.state_dict()))

    loop = MinibatchLoop(64, 16, epochs, seed=0, device="cpu", checkpoint=path, save=save,
                         checkpoint_every=checkpoint_every, watch=net, optimizer=opt,
                         progress=False)
    losses = [] if losses is None else losses
    with loop:
        for epoch in loop.epochs():
            for b in epoch:
                opt.zero_grad()
                loss = (net(X[b.idx]) - y[b.idx]).square().mean()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                loop.step_done(b, b.step + 1, loss=loss)
    return net, losses


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    losses = []
    with pytest.raises(FloatingPointError, match="no checkpoint was written") as err:
        regression_run(tmp_path / "a.safetensors", lr=50.0, epochs=200, checkpoint_every=1000,
                       losses=losses)
    step = int(str(err.value).split("at step ")[1].split(" ")[0])
    first_bad = next(i for i, v in enumerate(losses) if not np.isfinite(v))
    assert step == first_bad and f"(epoch {step // 4}, batch {step % 4})" in str(err.value)
    path = tmp_path / "b.safetensors"
    with pytest.raises(FloatingPointError, match=f"last good checkpoint {path} was kept"):
        regression_run(path, lr=50.0, epochs=200, checkpoint_every=2)
    kept = read_checkpoint(path, kind="test")
    assert all(bool(torch.isfinite(t).all()) for t in kept.state_dict.values())
    net, _ = regression_run(tmp_path / "fine.safetensors", lr=0.01)
    fine = read_checkpoint(tmp_path / "fine.safetensors")
    assert fine.training.position == (3, 0)
    assert torch.equal(net.weight, fine.state_dict["weight"])


def test_denormals_are_flushed_inside_the_loop_and_restored_after():
    from latentebm.training.denormals import denormals_flushed

    def flushed() -> bool:
        return float(torch.tensor([1e-39]) * 1.0) == 0.0

    assert not flushed()
    with denormals_flushed():
        assert flushed()
    assert not flushed()
    seen = []
    loop = MinibatchLoop(4, 2, 1, seed=0, device="cpu", progress=False)
    with loop:
        for epoch in loop.epochs():
            for b in epoch:
                seen.append(flushed())
                loop.step_done(b, b.step + 1)
    assert seen == [True, True] and not flushed()


def test_fit_options_are_keywords_of_every_fit_and_one_value_inside():
    import inspect

    from latentebm import LISTA, PSD, ConvDictionaryLearning, ConvSparseAutoencoder, SparseCoding
    from latentebm.training.fit_options import FitOptions

    shared = [f.name for f in dataclasses.fields(FitOptions)]
    for model in (SparseCoding, LISTA, PSD, ConvDictionaryLearning, ConvSparseAutoencoder):
        params = inspect.signature(model.fit).parameters
        assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in shared)
        assert "options" not in params
        assert "epochs :" in model.fit.__doc__ and "checkpoint_every :" in model.fit.__doc__
    Y = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="not as options="):
        SparseCoding(6, 3, 0.1, seed=0).fit(Y, options=FitOptions(epochs=1, batch_size=4))


def _interrupted_loop(tmp_path, epochs: int, sigint_before_step: int | None):
    """A loop of two batches per epoch that gets a SIGINT just before step
    ``sigint_before_step`` (None: after the last step); the positions it saved and the epochs
    whose end-of-epoch code ran."""
    import os
    import signal

    saved, closed = [], []
    loop = MinibatchLoop(8, 4, epochs, seed=0, device="cpu", checkpoint=tmp_path / "c",
                         save=lambda e, b: saved.append((e, b)), progress=False)
    with pytest.raises(KeyboardInterrupt):
        with loop:
            for epoch in loop.epochs():
                for b in epoch:
                    if b.step == sigint_before_step:
                        os.kill(os.getpid(), signal.SIGINT)
                    loop.step_done(b, b.step + 1)
                closed.append(epoch.index)
            if sigint_before_step is None:
                os.kill(os.getpid(), signal.SIGINT)
    return saved, closed


def test_ctrl_c_after_the_last_step_is_honoured_once_the_end_is_saved(tmp_path):
    """A SIGINT while a model closes its last epoch (a validation pass, say) set the flag after
    the last check: fit returned normally and the program carried on."""
    saved, closed = _interrupted_loop(tmp_path, 1, None)
    assert closed == [0] and saved[-1] == (1, 0)  # the finished position was written first


def test_ctrl_c_on_an_epochs_last_step_lets_the_model_close_that_epoch(tmp_path):
    """Interrupted on the last batch of an epoch, the loop stopped before the model's end-of-epoch
    code (LISTA's validation, the history entry), and the checkpoint already pointed at the next
    epoch: the resumed run never closed that epoch and ended elsewhere."""
    saved, closed = _interrupted_loop(tmp_path, 2, 1)  # step 1: the last of epoch 0's two
    assert closed == [0] and saved[-1] == (1, 0)


def _ctrl_c_twice_mid_step(tmp_path, saved: list):
    """Two SIGINTs during step 1 (of 2 epochs × 2 steps); the positions saved go to ``saved``."""
    import os
    import signal

    loop = MinibatchLoop(8, 4, 2, seed=0, device="cpu", checkpoint=tmp_path / "c",
                         save=lambda e, b: saved.append((e, b)), progress=False)
    with loop:
        for epoch in loop.epochs():
            for b in epoch:
                if b.step == 1:
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)
                loop.step_done(b, b.step + 1)


def test_a_second_ctrl_c_stops_at_once_and_saves_nothing(tmp_path, monkeypatch):
    """A second SIGINT raised in the middle of a step, and the loop saved that half-done step
    under the previous step's position: the resumed run silently differed (W by 3 %)."""
    from latentebm.training import interrupt

    monkeypatch.setattr(interrupt, "REPEAT_AFTER_S", 0.0)
    saved = []
    with pytest.raises(interrupt.ImmediateInterrupt):
        _ctrl_c_twice_mid_step(tmp_path, saved)
    assert saved == []


def test_two_ctrl_c_within_a_second_count_as_one(tmp_path):
    """Under torchrun started from a terminal every process gets Ctrl-C twice at once (the
    terminal's and the agent's copy): that is one request, honoured after the step."""
    from latentebm.training import interrupt

    assert interrupt.REPEAT_AFTER_S >= 0.5
    saved = []
    with pytest.raises(KeyboardInterrupt) as raised:
        _ctrl_c_twice_mid_step(tmp_path, saved)
    assert not isinstance(raised.value, interrupt.ImmediateInterrupt)
    assert saved == [(1, 0)]  # after step 1, the last of epoch 0: at the next epoch's start


def test_a_save_due_on_an_epochs_last_step_waits_for_the_epoch_to_close(tmp_path):
    """With checkpoint_every a multiple of the steps per epoch the checkpoint was written
    before the model closed the epoch: a run killed after it resumed with that epoch partial
    for good (LISTA never scored it and kept worse weights)."""
    saved, closed = [], []
    loop = MinibatchLoop(8, 4, 2, seed=0, device="cpu", checkpoint=tmp_path / "c",
                         save=lambda e, b: saved.append(((e, b), list(closed))),
                         checkpoint_every=2, progress=False)
    with loop:
        for epoch in loop.epochs():
            for b in epoch:
                loop.step_done(b, b.step + 1)
            closed.append(epoch.index)
    assert saved[0] == ((1, 0), [0])  # written at (1, 0) after epoch 0 had closed


def test_a_run_killed_after_an_epoch_end_checkpoint_resumes_to_the_same_lista(tmp_path):
    gen = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(16, 24, generator=gen), dim=0)
    Y, Yv = torch.randn(10, 16, generator=gen), torch.randn(30, 16, generator=gen)

    def run(**extra):
        net = le.LISTA(W, 0.1, 3, seed=1)
        net.fit(Y, epochs=3, batch_size=2, lr=0.01, validation=(Yv, net.targets(Yv)),
                checkpoint_every=5, progress=False, **extra)  # 5 steps an epoch
        return net

    whole = run()

    def stop(n, model):
        if n == 7:
            raise RuntimeError("killed")  # after the checkpoint at the end of epoch 0

    with pytest.raises(RuntimeError, match="killed"):
        run(checkpoint=tmp_path / "c.safetensors", callback=stop)
    resumed = run(checkpoint=tmp_path / "c.safetensors", resume=True)
    assert [h["partial"] for h in resumed.history_] == [False] * 3
    assert [h["val_code_error"] for h in resumed.history_] == [
        h["val_code_error"] for h in whole.history_]
    tensors = [(a, b) for a, b in zip(whole.state_dict().values(),
                                       resumed.state_dict().values(), strict=True)
               if isinstance(a, torch.Tensor)]  # (the rest is the history, with its timings)
    assert tensors and all(torch.equal(a, b) for a, b in tensors)


@pytest.mark.parametrize("make_model", [
    lambda: le.SparseCoding(10, 12, lam=0.1),
    lambda: le.LISTA(torch.nn.functional.normalize(torch.randn(10, 12), dim=0), 0.1, 2),
    lambda: le.PSD(10, 12, 0.1),
], ids=["SparseCoding", "LISTA", "PSD"])
def test_a_second_fit_appends_its_epochs_to_the_history(make_model):
    """A one-epoch fit's entry used to be taken for the next fit's own running entry of the same
    epoch number, and replaced."""
    Y = data().float()
    model = make_model()
    model.fit(Y, epochs=1, batch_size=16, progress=False)
    first = dict(model.history_[0])
    model.fit(Y, epochs=1, batch_size=16, progress=False)
    assert [(h["epoch"], h["partial"]) for h in model.history_] == [(0, False), (0, False)]
    assert model.history_[0] == first


@pytest.mark.parametrize("make_model", [
    lambda: le.VAE(16, 2, hidden=(8,)),
    lambda: le.PSD(16, 8, 0.1, encoder="lista", n_steps=2),
    lambda: le.ConvSparseAutoencoder(4, kernel_size=3),
])
def test_a_model_converted_to_float64_saves_and_reloads_as_float64(make_model, tmp_path):
    """A VAE moved with .double() kept config.dtype float32: it reloaded rounded to float32
    and then refused the float64 data it was used with."""
    model = make_model().double()
    assert model.config.dtype == "float64"
    model.save(tmp_path / "m.safetensors")
    again = type(model).load(tmp_path / "m.safetensors")
    assert again.dtype == torch.float64
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(),
                                 strict=True):
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b), name
    assert model.float().config.dtype == "float32"


def test_resuming_with_fewer_epochs_than_the_checkpoint_ran_is_refused(tmp_path):
    """fit(epochs=3, resume=True) on a finished five-epoch run returned the five-epoch model,
    and the command recorded epochs 3 beside a five-epoch history."""
    ckpt = tmp_path / "c.safetensors"
    le.SparseCoding(10, 6, 0.1, dtype=D64).fit(data(), epochs=3, batch_size=16, progress=False,
                                               checkpoint=ckpt)
    with pytest.raises(ValueError, match="has trained 3 epoch.*more than the 2 epoch"):
        le.SparseCoding(10, 6, 0.1, dtype=D64).fit(data(), epochs=2, batch_size=16,
                                                   progress=False, checkpoint=ckpt, resume=True)


def test_a_resumed_epochs_means_are_the_uninterrupted_ones_to_the_bit(tmp_path):
    """The running sums came back as mean × count, which differs from the sum in the last bit
    about once in thirty: 2.1478586893367417 became ...413."""
    Y = torch.randn(200, 16, generator=torch.Generator().manual_seed(0)).numpy()
    options = {"epochs": 2, "batch_size": 13, "progress": False}

    def model():
        return le.SparseCoding(16, 24, 0.2, seed=3, dtype=D64)

    whole = model()
    whole.fit(Y, **options)

    def interrupt(n, m):
        if n == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model().fit(Y, checkpoint=tmp_path / "c.safetensors", callback=interrupt, **options)
    resumed = model()
    resumed.fit(Y, checkpoint=tmp_path / "c.safetensors", resume=True, **options)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole.history_]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history_] == strip


def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_training(tmp_path):
    """A path whose folder was a file failed only at the first save, after 100 steps, saying
    "could not write checkpoint ... (File exists)"."""
    (tmp_path / "afile").write_text("x")
    for path, message in ((tmp_path / "afile" / "c.safetensors", "afile is a file"),
                          (tmp_path / "afile" / "sub" / "c.safetensors", "afile is a file"),
                          (tmp_path, "is a folder")):
        with pytest.raises(ValueError, match=message):
            le.SparseCoding(10, 6, 0.1, dtype=D64).fit(data(), batch_size=16, progress=False,
                                                       checkpoint=path)
    # a folder that does not exist yet is created at the first save, as before
    le.SparseCoding(10, 6, 0.1, dtype=D64).fit(data(), batch_size=16, progress=False,
                                               checkpoint=tmp_path / "new" / "c.safetensors")
    assert (tmp_path / "new" / "c.safetensors").is_file()
