"""Training throughput of ``latentebm.VAE.fit`` against the reference PyTorch example VAE loop.

The reference is written here from the description of PyTorch's ``examples/vae``: a 784-400-20
MLP with ReLU, a Bernoulli decoder (sigmoid, then binary cross-entropy summed over the batch),
the analytic KL, Adam with lr 1e-3 and batches of 128. Its data come from in-memory tensors
shuffled each epoch (the example's ``DataLoader`` + ``ToTensor`` pipeline is slower, so this
reference is the stronger baseline). Both sides: same MNIST images, same architecture, batch
size, optimiser, float32 and thread count; the contenders are interleaved in every repeat so a
change in machine load hits all of them.

Usage::

    .venv/bin/python benchmarks/vae_throughput.py --threads 2 1 --repeats 3

Writes ``benchmarks/results/vae_throughput.md`` and ``benchmarks/results/raw/vae_throughput.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HERE, pin_threads  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch thread counts to measure (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default: 3)")
    parser.add_argument("--images", type=int, default=60000,
                        help="training images per timed epoch (default: all 60000)")
    parser.add_argument(
        "--data-dir", default="/work/shared/data/mnist", help="folder with the MNIST IDX files"
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="results folder")
    args = parser.parse_args(argv)
    pin_threads(max(args.threads))

    import torch
    from _common import environment, write_atomic, write_json

    from latentebm.data import load_mnist, mnist_vectors

    images, _ = load_mnist("train", data_dir=args.data_dir)
    X = torch.from_numpy(mnist_vectors(images[: args.images]))
    contenders = {
        "reference (PyTorch example loop)": reference_epoch,
        "latentebm VAE.fit": lambda X, seed: latentebm_epoch(X, seed, binarize=False),
        "latentebm VAE.fit, dynamic binarisation": lambda X, seed: latentebm_epoch(
            X, seed, binarize=True
        ),
    }
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for fn in contenders.values():  # warm-up: imports, allocator, first-call costs
            fn(X[:1280], seed=0)
        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        for rep in range(args.repeats):
            for name, fn in contenders.items():
                r = fn(X, seed=rep)
                runs[name].append(r)
                print(
                    f"threads={threads} rep={rep} {name}: {r['images_per_second']:.0f} img/s, "
                    f"loss {r['loss_per_image']:.1f}",
                    flush=True,
                )
        results.append({"threads": threads, "runs": runs})
    env = environment(args.threads, {"torch_threads_measured": args.threads})
    out = Path(args.out)
    write_json(
        out / "raw" / "vae_throughput.json",
        {"environment": env, "results": results, "images": X.shape[0]},
    )
    write_atomic(out / "vae_throughput.md", report(results, env, X.shape[0], args))
    print(f"wrote {out / 'vae_throughput.md'}")
    return 0


def reference_epoch(X, seed: int) -> dict:
    """One epoch of the reference loop; returns images/second and the mean loss per image."""
    import time

    import torch
    import torch.nn.functional as F
    from torch import nn

    class ReferenceVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(784, 400)
            self.fc21 = nn.Linear(400, 20)
            self.fc22 = nn.Linear(400, 20)
            self.fc3 = nn.Linear(20, 400)
            self.fc4 = nn.Linear(400, 784)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    torch.manual_seed(seed)
    model = ReferenceVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    order = torch.randperm(X.shape[0])
    total = 0.0
    model.train()
    for idx in order.split(128):
        x = X[idx]
        opt.zero_grad()
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = bce + kld
        loss.backward()
        total += loss.item()
        opt.step()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "images_per_second": X.shape[0] / seconds,
        "loss_per_image": total / X.shape[0],
    }


def latentebm_epoch(X, seed: int, *, binarize: bool) -> dict:
    """One epoch of ``VAE(784, 20).fit`` (784-400-20, batch 128, Adam 1e-3), input checks
    included."""
    import time

    from latentebm import VAE

    model = VAE(784, 20, hidden=(400,), seed=seed)
    start = time.perf_counter()
    hist = model.fit(
        X, epochs=1, batch_size=128, lr=1e-3, dynamic_binarization=binarize, progress=False
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "images_per_second": X.shape[0] / seconds,
        "loss_per_image": hist[-1]["loss"],
    }


def report(results: list[dict], env: dict, n_images: int, args) -> str:
    ref = "reference (PyTorch example loop)"
    v = env["versions"]
    lines = [
        "# VAE training throughput: latentebm vs the PyTorch example loop",
        "",
        "## Reproduce",
        "",
        "```",
        ".venv/bin/python benchmarks/vae_throughput.py"
        f" --threads {' '.join(map(str, args.threads))} --repeats {args.repeats}"
        f" --images {args.images} --data-dir {args.data_dir}",
        "```",
        "",
        textwrap.fill(
            "Both loops train the same 784-400-20 ReLU MLP VAE (Bernoulli decoder, analytic KL) "
            f"on the first {n_images} MNIST training digits for one epoch in batches of 128 "
            "with Adam (lr 1e-3), float32, on the CPU with the thread count shown. The "
            "reference follows the description of PyTorch's `examples/vae` (sigmoid + binary "
            "cross-entropy summed over the batch, default Adam, `loss.item()` every step), fed "
            "from in-memory tensors. latentebm's row is `VAE(784, 20).fit(X, epochs=1, "
            "batch_size=128)` including its input validation (its loss is the batch mean, "
            "BCE-with-logits, fused Adam where available); the last row adds the per-batch "
            "Bernoulli resampling that `latentebm vae` trains with. The contenders are "
            "interleaved in every repeat; the ratio is the median over repeats of latentebm ÷ "
            "reference in the same repeat. The machine is shared with other jobs, so timings "
            "vary a lot from repeat to repeat: read the min and max columns too.",
            width=92,
        ),
        "",
        f"- Machine: {env['cpu']}, {env['logical_cpus']} logical CPUs, shared with other users "
        f"while measuring; {env['date']}",
        f"- torch {v['torch']}, numpy {v['numpy']}, latentebm {v['latentebm']} "
        f"({v['latentebm_commit']}), Python {env['python']}",
        "",
    ]
    for block in results:
        runs = block["runs"]
        lines += [
            f"## {block['threads']} thread(s)",
            "",
            "| loop | images/s (median) | min | max | loss/image after 1 epoch "
            "| ratio to reference |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, rs in runs.items():
            ips = [r["images_per_second"] for r in rs]
            ratios = [
                r["images_per_second"] / q["images_per_second"]
                for r, q in zip(rs, runs[ref], strict=True)
            ]
            lines.append(
                f"| {name} | {statistics.median(ips):.0f} | {min(ips):.0f} | {max(ips):.0f} | "
                f"{statistics.median(r['loss_per_image'] for r in rs):.1f} | "
                f"{statistics.median(ratios):.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
