"""SparseCoding on two gloo processes equals one process on the same global batches (float64,
to 1e-10 relative): online and SGD updates, dead-atom re-initialisation, streamed shards, and a
checkpoint written by rank 0 that one process resumes from (a different world size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_distributed import check_ok, launch, run_command

from latentebm import SparseCoding
from latentebm.data.streaming import ShardedArray, write_shards
from latentebm.training import distributed as dist

FIT = {"batch_size": 37, "tol": 1e-8, "max_iter": 500, "dead_after": 2, "progress": False}


def problem() -> np.ndarray:
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    Z = torch.randn(150, 10, generator=gen, dtype=torch.float64)
    Z *= torch.rand(150, 10, generator=gen, dtype=torch.float64) < 0.3
    return (Z @ W.T + 0.05 * torch.randn(150, 16, generator=gen, dtype=torch.float64)).numpy()


def run_fits(out: Path, shards: Path, tag: str) -> None:
    """Every fit the test compares; writes ``{name}{tag}.safetensors`` / ``.json``."""
    Y = problem()
    data = {"online": Y, "sgd": Y, "streamed": ShardedArray(shards)}
    for name, Yn in data.items():
        model = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
        method = "sgd" if name == "sgd" else "online"
        hist = model.fit(Yn, epochs=3, method=method, lr=0.5, **FIT)
        save_file({"W": model.W, "A": model.A, "B": model.B}, str(out / f"{name}{tag}.st"))
        (out / f"{name}{tag}.json").write_text(json.dumps(hist))
    model = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    model.fit(Y, epochs=2, checkpoint=out / "ckpt.safetensors", checkpoint_every=3, **FIT)


def worker(out: str, shards: str) -> None:
    dist.init_distributed()
    run_fits(Path(out), Path(shards), f"-rank{dist.rank()}")
    dist.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sc")
    write_shards(problem().astype(np.float32), out / "shards", rows_per_shard=40)
    check_ok(launch("test_distributed_sparse_coding:worker", 2, str(out), str(out / "shards")))
    (out / "ckpt.safetensors").rename(out / "ckpt-2proc.safetensors")
    run_fits(out, out / "shards", "-single")
    return out


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to 1e-10 relative in the Frobenius norm (exactly, where ``b`` is zero)."""
    return float((a - b).norm()) <= 1e-10 * float(b.norm())


@pytest.mark.parametrize("name", ["online", "sgd", "streamed"])
def test_two_processes_take_the_single_process_steps(runs: Path, name: str) -> None:
    single = load_file(str(runs / f"{name}-single.st"))
    h_single = json.loads((runs / f"{name}-single.json").read_text())
    for r in range(2):
        got = load_file(str(runs / f"{name}-rank{r}.st"))
        for key in ("W", "A", "B"):
            assert close(got[key], single[key]), (name, r, key)
        h = json.loads((runs / f"{name}-rank{r}.json").read_text())
        assert [e["reinitialized"] for e in h] == [e["reinitialized"] for e in h_single]
        np.testing.assert_allclose([e["mean_energy"] for e in h],
                                   [e["mean_energy"] for e in h_single], rtol=1e-10)
    assert sum(e["reinitialized"] for e in h_single) > 0  # dead atoms were re-initialised


def test_rank_zero_checkpoint_resumes_on_one_process(runs: Path, tmp_path: Path) -> None:
    Y = problem()
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes((runs / "ckpt-2proc.safetensors").read_bytes())
    resumed = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    resumed.fit(Y, epochs=3, checkpoint=ckpt, resume=True, **FIT)
    straight = load_file(str(runs / "online-single.st"))
    assert close(resumed.W, straight["W"])


def test_torchrun_runs_the_command_and_rank_zero_reports(tmp_path: Path) -> None:
    args = ["sparse-coding", "--dataset", "mnist", "--sample", "--n-train", "256", "--n-test",
            "50", "--atoms", "16", "--epochs", "1", "--batch-size", "64", "--quiet"]
    two = run_command(args, tmp_path / "two", nproc=2)
    assert two.stdout.count("wrote:") == 1  # rank 0 alone reports
    assert (tmp_path / "two" / "metrics.json").exists()
    run_command(args, tmp_path / "one")
    W1, W2 = (load_file(str(tmp_path / d / "checkpoint.safetensors"))["model.W"]
              for d in ("one", "two"))
    # float32: each sample's code is solved alone (gram_cd, in float64), so only the order in
    # which the statistics are summed over the processes differs (measured: 4e-7)
    assert float((W1 - W2).norm() / W1.norm()) < 1e-5


def test_streamed_fit_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    data = ShardedArray(write_shards(problem().astype(np.float32), tmp_path / "s",
                                     rows_per_shard=64))
    straight = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    straight.fit(data, epochs=2, **FIT)
    ckpt = tmp_path / "c.safetensors"
    resumed = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    resumed.fit(data, epochs=1, checkpoint=ckpt, **FIT)
    again = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    again.fit(data, epochs=2, checkpoint=ckpt, resume=True, **FIT)
    assert torch.equal(again.W, straight.W)
    def drop_time(h: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "seconds"} for e in h]

    assert drop_time(again.history_) == drop_time(straight.history_)


def _ctrl_c_fit(batch_size: int) -> dict:
    """FIT at ``batch_size``, without dead-atom re-initialisation: with batches of 8 and atoms
    dead after 2 steps, two processes part from one at step 5, where a code is exactly zero in
    one and a rounding above it in the other, and another atom is replaced."""
    return {**FIT, "batch_size": batch_size, "dead_after": 10_000}


def ctrl_c_on_one_rank_worker(out: str, batch_size: str) -> None:
    """Rank 1 alone gets Ctrl-C during step 4; writes what each rank saw."""
    import os
    import signal

    dist.init_distributed()

    def ctrl_c(step: int, model: SparseCoding) -> None:
        if step == 4 and dist.rank() == 1:
            os.kill(os.getpid(), signal.SIGINT)

    model = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    try:
        model.fit(problem(), epochs=3, checkpoint=Path(out) / "ckpt.safetensors",
                  checkpoint_every=100, callback=ctrl_c, **_ctrl_c_fit(int(batch_size)))
        ended = "finished"
    except KeyboardInterrupt:
        ended = "interrupted"
    (Path(out) / f"rank{dist.rank()}.json").write_text(
        json.dumps({"ended": ended, "n_steps": model.n_steps_}))
    dist.shutdown()


@pytest.mark.parametrize("batch_size, stopped_after", [
    (37, 5),  # 5 steps per epoch: agreed at the next epoch's start
    (8, 8),   # 19 steps per epoch: at the 8th step, the AGREE_EVERY-th safe point
])
def test_ctrl_c_on_one_process_stops_every_process_at_the_same_step(
        tmp_path: Path, batch_size: int, stopped_after: int) -> None:
    """Each process acted on its own Ctrl-C: the one interrupted went into the checkpoint's
    barrier while the other waited in the next step's collectives, until the timeout, and no
    checkpoint was written."""
    check_ok(launch("test_distributed_sparse_coding:ctrl_c_on_one_rank_worker", 2,
                    str(tmp_path), str(batch_size), timeout=90,
                    env={"LATENTEBM_DIST_TIMEOUT": "30"}))
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert seen[0] == seen[1] == {"ended": "interrupted", "n_steps": stopped_after}
    saved = SparseCoding.load(tmp_path / "ckpt.safetensors")
    assert saved.n_steps_ == stopped_after
    # and it resumes, on one process, to the uninterrupted run
    options = _ctrl_c_fit(batch_size)
    resumed = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    resumed.fit(problem(), epochs=3, checkpoint=tmp_path / "ckpt.safetensors", resume=True,
                **options)
    straight = SparseCoding(16, 24, 3.0, seed=1, dtype=torch.float64)
    straight.fit(problem(), epochs=3, **options)
    assert close(resumed.W, straight.W)


def cli_worker(out: str, rank_1_extra: str) -> None:
    """``latentebm sparse-coding`` on the bundled sample, rank 1 with extra flags; exits with
    the command's status."""
    import os
    import sys

    from latentebm.cli import main

    argv = ["sparse-coding", "--sample", "--n-train", "64", "--n-test", "8", "--atoms", "8",
            "--epochs", "1", "--out", out, "--quiet"]
    if os.environ["RANK"] == "1":
        argv += rank_1_extra.split()
    sys.exit(main(argv))


@pytest.mark.parametrize("extra, named", [
    ("--lam 0.3", "lam: rank 0 0.1, rank 1 0.3"),   # coded with another λ, silently
    ("--seed 5", "seed: rank 0 0, rank 1 5"),       # shares of other permutations
    ("--epochs 2", "epochs: rank 0 1, rank 1 2"),   # waited for rank 0 until the timeout
])
def test_processes_started_with_other_settings_are_refused(tmp_path: Path, extra: str,
                                                           named: str) -> None:
    runs = launch("test_distributed_sparse_coding:cli_worker", 2, str(tmp_path / "run"), extra,
                  timeout=90, env={"LATENTEBM_DIST_TIMEOUT": "30"})
    for run in runs:
        assert run.returncode == 2, run.stderr[-2000:]
        assert named in run.stderr and "same command" in run.stderr
    assert not (tmp_path / "run").exists()
