"""Resident memory of dictionary learning on data larger than memory (issue 14's target: 10
million 12×12 patches, 5.8 GB in float32, under 2 GB per process).

    python benchmarks/streaming_rss.py prepare --n 2000000 --out /tmp/latentebm-patches-2M
    python benchmarks/streaming_rss.py measure --data /tmp/latentebm-patches-2M
    torchrun --standalone --nproc_per_node 2 benchmarks/streaming_rss.py measure --data ...

``measure`` reads one whole epoch through :func:`stream_batches` (every row once), then runs
one epoch of ``SparseCoding.fit`` on the :class:`ShardedArray`, and prints this process's peak
resident set size (``VmHWM``: :func:`_common.own_peak_rss_mb`) after each part as one JSON line
per rank.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import own_peak_rss_mb

from latentebm import SparseCoding
from latentebm.data.streaming import ShardedArray, prepare_patches, stream_batches
from latentebm.training import distributed as dist


def peak_rss_mb() -> float:
    return own_peak_rss_mb()


def prepare(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    prepare_patches(args.out, args.n, size=12, images=args.images, seed=0)
    print(json.dumps({"prepared": args.n, "seconds": round(time.perf_counter() - start, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}))


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_distributed()
    report: dict[str, float | int] = {"rank": dist.rank(), "world": dist.world_size(),
                                      "after_import_mb": round(peak_rss_mb(), 1)}
    start = time.perf_counter()
    data = ShardedArray(args.data, verify=True)
    report.update(rows=len(data), open_verify_s=round(time.perf_counter() - start, 1),
                  after_open_mb=round(peak_rss_mb(), 1))
    start = time.perf_counter()
    seen = 0
    for _, _, idx, _ in stream_batches(data, args.batch, 1, seed=0):
        seen += idx.numel()
    report.update(rows_read=seen, read_epoch_s=round(time.perf_counter() - start, 1),
                  after_read_epoch_mb=round(peak_rss_mb(), 1))
    start = time.perf_counter()
    model = SparseCoding(data.shape[1], args.atoms, 0.5, seed=0)
    model.fit(data, epochs=1, batch_size=args.batch, tol=1e-2, max_iter=args.max_iter,
              progress=False)
    report.update(fit_epoch_s=round(time.perf_counter() - start, 1),
                  after_fit_mb=round(peak_rss_mb(), 1))
    print(json.dumps(report), flush=True)
    dist.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--out", required=True)
    p.add_argument("--images", default=None, help="folder of photographs (default: skimage's)")
    m = sub.add_parser("measure")
    m.add_argument("--data", required=True)
    m.add_argument("--batch", type=int, default=4096)
    m.add_argument("--atoms", type=int, default=144)
    m.add_argument("--max-iter", type=int, default=20)
    args = parser.parse_args()
    prepare(args) if args.what == "prepare" else measure(args)


if __name__ == "__main__":
    main()
