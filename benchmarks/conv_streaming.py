"""Peak memory of convolutional dictionary learning, images in memory against images streamed
from disk (:class:`latentebm.data.image_shards.ShardedImages`).

Two problems, 32 filters of 8x8, circular boundaries, λ = 0.1, Tikhonov high-pass of grey
crops (as in B4):

- ``B4``: B4's 10 central 128x128 crops of kodim01..10, the whole set as one batch, 20 epochs
  (ADMM, the default ``method="auto"`` for circular boundaries, ≤ 10 iterations, 5 kernel
  steps per batch: B4's default row);
- ``100``: 100 images of 480x480 (Kodak24 repeated: the central 480x480 crop of each of the
  bundled 500x500 images; the largest local photographs, two thirds of a 720x480 frame),
  batches of 2, one epoch (ADMM ≤ 10 iterations, 2 kernel steps).

Every run is a fresh process (``run`` below) that prints its own peak resident set size
(``VmHWM``: :func:`_common.own_peak_rss_mb`) and wall time; the in-memory run holds the images
as one tensor and, with the default ``warm_start``, the codes of every image. The 100-image
in-memory run is not started: its code buffer alone (100 × 32 × 480 × 480 float64, 5.9 GB) is
reported instead.

    .venv/bin/python benchmarks/conv_streaming.py [--threads 2] [--only B4|100]

Writes ``benchmarks/results/conv_streaming.md`` (and the shards under ``results/raw/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import own_peak_rss_mb
from b3_conv_sparse_coding import load_image, tikhonov_highpass
from b4_conv_dictionary_learning import CROP, N_IMAGES, initial_dictionary

HERE = Path(__file__).resolve().parent
RAW = HERE / "results" / "raw"
LAM, N_ATOMS, KERNEL = 0.1, 32, 8
BIG_SHAPE, BIG_COUNT = (480, 480), 100
SETTINGS = {
    "B4": {"epochs": 20, "batch_size": N_IMAGES, "max_iter": 10, "dict_steps": 5},
    "100": {"epochs": 1, "batch_size": 2, "max_iter": 10, "dict_steps": 2},
}


def b4_images() -> np.ndarray:
    return np.stack([tikhonov_highpass(load_image(f"kodim{i:02d}.png", CROP))
                     for i in range(1, N_IMAGES + 1)])[:, None]


def big_images():
    """The 100 images, one at a time (Kodak24 repeated)."""
    from b3_conv_sparse_coding import DATA
    from skimage import io
    from skimage.color import rgb2gray
    from skimage.util import img_as_float64

    h, w = BIG_SHAPE
    for i in range(BIG_COUNT):
        img = rgb2gray(img_as_float64(io.imread(DATA / "kodak24" / f"kodim{i % 24 + 1:02d}.png")))
        if img.shape[0] > img.shape[1]:
            img = img.T
        r, c = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        yield tikhonov_highpass(np.ascontiguousarray(img[r:r + h, c:c + w]))[None]


def prepare(key: str) -> Path:
    from latentebm.data.image_shards import write_image_shards

    folder = RAW / f"conv_streaming_{key}"
    if (folder / "index.json").exists():
        return folder
    if key == "B4":
        return write_image_shards(b4_images(), folder)
    return write_image_shards(big_images(), folder, n_images=BIG_COUNT,
                              image_shape=(1, *BIG_SHAPE))


def run(folder: str, key: str, mode: str, threads: int) -> None:
    """One run in this process; prints a JSON line with the peak RSS and the wall time."""
    import torch

    import latentebm as le
    from latentebm.data.image_shards import ShardedImages

    torch.set_num_threads(threads)
    data = ShardedImages(folder)
    Y = data if mode == "streamed" else data[torch.arange(len(data))].double()
    model = le.ConvDictionaryLearning(N_ATOMS, KERNEL, 1, lam=LAM, boundary="circular",
                                      init=initial_dictionary()[:, None], seed=0,
                                      dtype=torch.float64)
    start = time.perf_counter()
    model.fit(Y, tol=0.0, replace_threshold=None, progress=False, **SETTINGS[key])
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_rss_mb": own_peak_rss_mb(),
                      "seconds": seconds, "energy": model.history_[-1]["mean_energy"]}))


def measure(folder: Path, key: str, mode: str, threads: int) -> dict:
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                       "OPENBLAS_NUM_THREADS")}}
    out = subprocess.run([sys.executable, __file__, "--run", str(folder), key, mode,
                          "--threads", str(threads)], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(SETTINGS))
    parser.add_argument("--run", nargs=3, metavar=("FOLDER", "KEY", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(*args.run, threads=args.threads)
        return
    load_before = os.getloadavg()
    rows = []
    for key in [args.only] if args.only else list(SETTINGS):
        folder = prepare(key)
        modes = ["in memory", "streamed"] if key == "B4" else ["streamed"]
        for mode in modes:
            result = measure(folder, key, mode.replace(" ", "_"), args.threads)
            rows.append((key, mode, result))
            print(key, mode, result, flush=True)
    load_after = os.getloadavg()
    write_report(rows, args.threads, load_before, load_after)


def write_report(rows, threads, load_before, load_after) -> None:
    import torch

    import latentebm as le

    h, w = BIG_SHAPE
    buffer_gb = BIG_COUNT * N_ATOMS * h * w * 8 / 1e9
    lines = [
        "# Convolutional dictionary learning: peak memory, images in memory or streamed",
        "",
        f"- Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, latentebm "
        f"{le.__version__}, torch {torch.__version__}, {threads} threads, {os.cpu_count()} "
        f"logical CPUs; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "- Reproduce: `.venv/bin/python benchmarks/conv_streaming.py`; each row is a fresh "
        "process, its own peak resident set size (`VmHWM`; it includes the Python "
        "interpreter and torch, about 300 MB; `ru_maxrss`, used before 2026-12-07, also "
        "counted the parent's resident size at the fork).",
        f"- 32 filters 8x8, λ = {LAM}, circular boundaries, float64. B4: 10 images 128x128, "
        "batch 10, 20 epochs, ADMM codes (`method=\"auto\"`) ≤ 10 iterations, 5 kernel "
        f"steps. 100: Kodak24 repeated to {BIG_COUNT} images of {w}x{h}, batch 2, one epoch, "
        "ADMM ≤ 10 iterations, 2 kernel steps. glibc's default allocator (no "
        "`keep_large_allocations`).",
        f"- Held in memory, the 100-image run's warm-start codes alone would take "
        f"{buffer_gb:.1f} GB (100 × 32 × {h} × {w} float64) and the images "
        f"{BIG_COUNT * h * w * 8 / 1e9:.2f} GB; it was not started.",
        "",
        "- Streamed runs start each batch's codes from zero (no warm start, the default when "
        "streaming), so with a small iteration cap they end the same epochs at a higher energy "
        "(the last column: mean energy per image over the last epoch).",
        "",
        "| problem | images | peak RSS | wall time | final epoch energy |",
        "|---|---|---:|---:|---:|",
    ]
    for key, mode, r in rows:
        lines.append(f"| {key} | {mode} | {r['peak_rss_mb']:.0f} MB | {r['seconds']:.1f} s | "
                     f"{r['energy']:.6g} |")
    out = HERE / "results" / "conv_streaming.md"
    out.write_text("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
