"""DistributedDataParallel over the shared training loop: two gloo processes, each taking its
share of every global batch (the loop's seeded order), end with the weights one process gets on
the same global batches (float64, 1e-10), also when the shares are unequal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_distributed import check_ok, launch, run_command
from torch import nn

from latentebm.training import MinibatchLoop
from latentebm.training import distributed as dist


def setup() -> tuple[torch.Tensor, nn.Module]:
    torch.manual_seed(0)
    X = torch.randn(91, 8, dtype=torch.float64)
    return X, nn.Sequential(nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 8)).double()


def train(out: Path) -> None:
    X, net = setup()
    model = dist.data_parallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loop = MinibatchLoop(91, 33, 3, seed=4, device="cpu", optimizer=opt, watch=net,
                         progress=False)
    with loop:
        for epoch in loop.epochs():
            for b in epoch:
                x = X[dist.shard(b.idx)]
                loss = dist.global_mean((model(x) - x).pow(2).sum(), b.idx.numel())
                opt.zero_grad()
                loss.backward()
                opt.step()
                loop.step_done(b, b.step + 1, loss=loss)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))


def worker(out_dir: str) -> None:
    dist.init_distributed()
    train(Path(out_dir) / f"rank{dist.rank()}.st")
    dist.shutdown()


def test_ddp_on_two_processes_equals_one(tmp_path: Path) -> None:
    check_ok(launch("test_distributed_ddp:worker", 2, str(tmp_path)))
    train(tmp_path / "single.st")
    single = load_file(str(tmp_path / "single.st"))
    _, start = setup()
    for r in range(2):
        got = load_file(str(tmp_path / f"rank{r}.st"))
        for k, v in single.items():
            assert float((got[k] - v).norm()) <= 1e-10 * float(v.norm()), (r, k)
    moved = sum(float((single[k] - v).norm()) for k, v in start.state_dict().items())
    assert moved > 0.1  # it trained


def test_global_mean_is_the_plain_mean_on_one_process() -> None:
    assert float(dist.global_mean(torch.tensor(6.0), 4)) == 1.5
    net = nn.Linear(2, 2)
    assert dist.data_parallel(net) is net


def save_rank(out_dir: str, tag: str, model: nn.Module, trace: list[float]) -> None:
    """This rank's tensors of ``model`` and its per-epoch ``trace``, tagged with the rank."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()
               if isinstance(v, torch.Tensor)},
              str(Path(out_dir) / f"{tag}-rank{dist.rank()}.st"))
    Path(out_dir, f"{tag}-rank{dist.rank()}.json").write_text(json.dumps(trace))


def check_ranks(out_dir: Path, tag: str, single: nn.Module, trace: list[float]) -> None:
    """Both ranks' :func:`save_rank` files equal the one-process model and trace."""
    for r in range(2):
        got = load_file(str(out_dir / f"{tag}-rank{r}.st"))
        for k, v in single.state_dict().items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert float((got[k] - v).norm()) <= 1e-10 * max(float(v.norm()), 1e-300), (
                    tag, r, k)
        saved = json.loads((out_dir / f"{tag}-rank{r}.json").read_text())
        assert saved == pytest.approx(trace, rel=1e-10)


# --------------------------------------------------------------------------- LISTA
VARIANTS = [("lista", False), ("cp", True), ("step", False)]


def lista_fit(variant: str, tied: bool, checkpoint: Path | None = None):
    from latentebm import LISTA

    gen = torch.Generator().manual_seed(2)
    W = torch.randn(10, 14, generator=gen, dtype=torch.float64)
    W /= W.norm(dim=0)
    Y = torch.randn(75, 10, generator=gen, dtype=torch.float64)
    model = LISTA(W, 0.3, 3, variant=variant, tied=tied, seed=1)
    hist = model.fit(Y, epochs=3, batch_size=31, lr=1e-2, progress=False, tol=1e-10,
                     checkpoint=checkpoint)
    return model, hist


def lista_worker(out_dir: str) -> None:
    dist.init_distributed()
    for variant, tied in VARIANTS:
        ckpt = Path(out_dir) / f"{variant}.ckpt" if variant == "lista" else None
        model, hist = lista_fit(variant, tied, ckpt)
        save_rank(out_dir, variant, model, [e["code_error"] for e in hist])
    dist.shutdown()


def test_lista_ddp_on_two_processes_equals_one(tmp_path: Path) -> None:
    check_ok(launch("test_distributed_ddp:lista_worker", 2, str(tmp_path)))
    for variant, tied in VARIANTS:
        single, hist = lista_fit(variant, tied)
        check_ranks(tmp_path, variant, single, [e["code_error"] for e in hist])
    assert (tmp_path / "lista.ckpt").exists()  # written by rank 0


# --------------------------------------------------------------------------- VAE
VAE_OBJECTIVES = [("elbo", 1), ("iwae", 3)]


def vae_fit(objective: str, k: int, checkpoint: Path | None = None):
    from latentebm import VAE

    gen = torch.Generator().manual_seed(5)
    X = torch.rand(53, 12, generator=gen, dtype=torch.float64)
    model = VAE(12, 3, hidden=(7,), seed=3, dtype=torch.float64)
    hist = model.fit(X, epochs=2, batch_size=20, lr=1e-2, dynamic_binarization=True,
                     objective=objective, k=k, warmup_epochs=1.0, progress=False,
                     checkpoint=checkpoint)
    return model, hist


def vae_worker(out_dir: str) -> None:
    dist.init_distributed()
    for objective, k in VAE_OBJECTIVES:
        ckpt = Path(out_dir) / f"vae-{objective}.ckpt"
        model, hist = vae_fit(objective, k, ckpt)
        save_rank(out_dir, f"vae-{objective}", model, [e["loss"] for e in hist])
    dist.shutdown()


def test_vae_ddp_on_two_processes_equals_one(tmp_path: Path) -> None:
    """Unequal shares (53 images, batches of 20 and 13), the same binarisation and noise
    draws: two processes end with one process's weights and epoch losses."""
    check_ok(launch("test_distributed_ddp:vae_worker", 2, str(tmp_path)))
    for objective, k in VAE_OBJECTIVES:
        single, hist = vae_fit(objective, k)
        check_ranks(tmp_path, f"vae-{objective}", single, [e["loss"] for e in hist])
        assert (tmp_path / f"vae-{objective}.ckpt").exists()


def test_torchrun_runs_the_vae_command_and_rank_zero_reports(tmp_path: Path) -> None:
    args = ["vae", "--sample", "--latent", "2", "--hidden", "16", "--epochs", "1",
            "--batch-size", "100", "--k", "4", "--nll-images", "10", "--monitor-k", "0",
            "--quiet"]
    two = run_command(args, tmp_path / "two", nproc=2)
    assert two.stdout.count("wrote:") == 1  # rank 0 alone reports
    run_command(args, tmp_path / "one")
    a, b = (load_file(str(tmp_path / d / "checkpoint.safetensors")) for d in ("one", "two"))
    for name, v in a.items():
        if v.is_floating_point():  # float32: the same steps up to rounding
            assert float((v - b[name]).norm()) <= 1e-4 * max(float(v.norm()), 1e-12), name
