"""DistributedDataParallel over the shared training loop: two gloo processes, each taking its
share of every global batch (the loop's seeded order), end with the weights one process gets on
the same global batches (float64, 1e-10), also when the shares are unequal."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from test_distributed import check_ok, launch
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
