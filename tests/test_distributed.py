"""torch.distributed helpers across real processes: a small harness that starts ``world``
Python processes with the environment ``torchrun`` gives them (gloo on the loopback device),
collectives and sharding, and a dead or silent rank ending the job with a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latentebm.training import distributed as dist

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(target: str, world: int, *args: str, timeout: float = 60.0,
           env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Run ``module:function`` (a module of ``tests/``) in ``world`` processes with the
    ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), one thread
    each; the function gets ``args`` as strings. Returns every rank's finished process; a run
    longer than ``timeout`` seconds kills them all and fails the test (a hang)."""
    module, func = target.split(":")
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import torch; "
            f"torch.set_num_threads(1); import {module} as m; m.{func}(*sys.argv[1:])")
    port = str(free_port())
    procs = []
    for r in range(world):
        penv = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world),
                "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
                **(env or {})}
        procs.append(subprocess.Popen([sys.executable, "-c", code, *args], env=penv,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        pytest.fail(f"{target} on {world} processes did not finish in {timeout} s (a hang)")
    return done


def check_ok(runs: list[subprocess.CompletedProcess]) -> None:
    for r, run in enumerate(runs):
        assert run.returncode == 0, f"rank {r} failed:\n{run.stderr[-3000:]}"


def run_command(args: list[str], out: Path, nproc: int = 1, timeout: float = 120.0
                ) -> subprocess.CompletedProcess:
    """``latentebm ARGS --out OUT`` as a process on the CPU, under ``torchrun --standalone
    --nproc_per_node NPROC`` when ``nproc > 1``; fails the test unless it exits with 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launcher = ([str(Path(sys.executable).with_name("torchrun")), "--standalone",
                 "--nproc_per_node", str(nproc)] if nproc > 1 else [sys.executable])
    done = subprocess.run([*launcher, "-m", "latentebm", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# --------------------------------------------------------------------------- workers
def collectives_worker(out_dir: str) -> None:
    assert dist.init_distributed() is True
    r, w = dist.rank(), dist.world_size()
    t = {"a": torch.full((2, 3), float(r + 1), dtype=torch.float64),
         "b": torch.arange(4, dtype=torch.float64) * (r + 1),
         "c": torch.tensor([r], dtype=torch.long)}
    dist.all_reduce_dict_(t)
    gathered = dist.all_gather_cat(torch.full((r + 1, 2), float(r)))
    obj = dist.broadcast_object({"seed": 7} if r == 0 else None)
    b = dist.broadcast_(torch.full((3,), float(r)))
    anyr = dist.any_rank(r == w - 1)
    dist.barrier()
    calls = []
    dist.on_main(calls.append)(r)
    local = dist.shard(torch.arange(11)).tolist()
    result = {"a": t["a"].tolist(), "b": t["b"].tolist(), "c": t["c"].tolist(),
              "gathered": gathered.tolist(), "obj": obj, "b0": b.tolist(), "any": anyr,
              "local": local, "calls": calls, "bytes": dist.traffic.bytes, "main": dist.is_main()}
    Path(out_dir, f"rank{r}.json").write_text(json.dumps(result))
    dist.shutdown()


def dying_worker(mode: str) -> None:
    dist.init_distributed()
    x = torch.ones(4)
    dist.all_reduce_(x, what="warm-up")
    if dist.rank() == 1:
        if mode == "exit":
            os._exit(3)
        time.sleep(10)  # alive but silent for longer than the 4 s timeout
    dist.all_reduce_(x, what="of the training statistics")
    print("rank 0 was not stopped")


# --------------------------------------------------------------------------- tests
def test_single_process_defaults() -> None:
    assert not dist.is_initialized()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    x = torch.arange(3.0)
    assert dist.all_reduce_(x) is x and x.tolist() == [0.0, 1.0, 2.0]
    assert dist.all_gather_cat(x) is x
    assert dist.broadcast_object({"k": 1}) == {"k": 1}
    assert dist.shard(x).tolist() == x.tolist()
    assert dist.init_distributed() is False or "RANK" in os.environ


@pytest.mark.parametrize("n,world", [(11, 2), (10, 3), (2, 4), (0, 2)])
def test_shards_cover_every_index_once_in_order(n: int, world: int) -> None:
    idx = torch.arange(n)
    parts = [dist.shard(idx, r, world) for r in range(world)]
    assert torch.cat(parts).tolist() == list(range(n))
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank"):
        dist.shard_bounds(n, world, world)


def test_timeout_env_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dist.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=dist.TIMEOUT_ENV):
        dist.timeout_seconds()
    monkeypatch.setenv(dist.TIMEOUT_ENV, "2.5")
    assert dist.timeout_seconds() == 2.5


def test_collectives_on_two_gloo_processes(tmp_path: Path) -> None:
    check_ok(launch("test_distributed:collectives_worker", 2, str(tmp_path)))
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(res):
        assert got["a"] == [[3.0] * 3] * 2
        assert got["b"] == [0.0, 3.0, 6.0, 9.0]
        assert got["c"] == [1]
        assert got["gathered"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert got["obj"] == {"seed": 7}
        assert got["b0"] == [0.0] * 3
        assert got["any"] is True
        assert got["main"] is (r == 0)
        assert got["bytes"] > 0
        assert got["calls"] == ([0] if r == 0 else [])
    assert res[0]["local"] + res[1]["local"] == list(range(11))


@pytest.mark.parametrize("mode", ["exit", "silent"])
def test_a_lost_rank_stops_the_job_with_a_clear_error(mode: str) -> None:
    start = time.monotonic()
    runs = launch("test_distributed:dying_worker", 2, mode, timeout=50,
                  env={dist.TIMEOUT_ENV: "4"})
    assert time.monotonic() - start < 50
    if mode == "exit":
        assert runs[1].returncode == 3
    assert runs[0].returncode != 0
    err = runs[0].stderr
    assert "DistributedError" in err and "of the training statistics" in err, err[-2000:]
    assert "Another process probably died" in err and "--resume" in err
    assert "rank 0 was not stopped" not in runs[0].stdout
