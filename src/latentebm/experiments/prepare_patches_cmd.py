"""``latentebm prepare-patches``: write whitened natural-image patches once, as a sharded
dataset that ``latentebm sparse-coding --shards`` streams (data larger than memory)."""

from __future__ import annotations

import argparse
import resource

from ..data.streaming import ShardedArray, prepare_patches
from ..training import distributed
from ._args import add_common_arguments, command_arguments, count_argument
from ._run import Run

NAME = "prepare-patches"
HELP = ("write whitened natural-image patches as float32 shards with a checksummed index, for "
        "sparse-coding --shards (datasets larger than memory)")
INTERRUPTED = ("interrupted: the shards in --out are incomplete (no index.json); run the "
               "command again to write them anew")


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-patches", type=count_argument, required=True,
                        help="patches to write (10 000 000 12x12 patches are 5.8 GB)")
    parser.add_argument("--patch", type=count_argument, default=12, help="patch side (default: 12)")
    parser.add_argument("--images", default=None,
                        help="folder of photographs, read as grey (default: scikit-image's "
                        "bundled ones)")
    parser.add_argument("--whiten", choices=["1f", "none"], default="1f",
                        help="Olshausen & Field's 1/f whitening of each photograph (default: 1f)")
    parser.add_argument("--rows-per-shard", type=count_argument, default=1_000_000,
                        help="patches per .npy shard (default: 1000000)")
    add_common_arguments(parser, epochs=None, lam=None, trains=False,
                         data_dir_help="not read by this command: its photographs come from "
                         "--images")


add_arguments = command_arguments(NAME, _add_flags)


def run(args: argparse.Namespace) -> Run:
    """Write the shards into ``--out/patches`` and check them by reading the index back.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags (:func:`add_arguments`): ``n_patches``, ``patch``, ``images``,
        ``whiten``, ``rows_per_shard``, ``seed`` and ``out``.

    Returns
    -------
    Run
        The output folder, with ``patches/`` (shards and ``index.json``) and ``metrics.json``.
    """
    if distributed.world_size() > 1:  # every process would write the same files at once
        raise ValueError("prepare-patches writes its shards from one process: run it with "
                         "`latentebm prepare-patches` (or python -m latentebm), not under "
                         "torchrun; training on the shards can then use torchrun")
    run_dir = Run.from_args(args)
    folder = run_dir.path("patches")
    prepare_patches(folder, args.n_patches, size=args.patch, images=args.images,
                    whiten=args.whiten, seed=args.seed, rows_per_shard=args.rows_per_shard)
    data = ShardedArray(folder)
    metrics = {
        "shards": str(folder),
        "n_rows": data.n_rows,
        "n_features": data.n_features,
        "scale": data.scale,
        "seconds": run_dir.elapsed(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    run_dir.write_metrics(metrics)
    print(f"prepare-patches: {data.n_rows} patches of {args.patch}x{args.patch} in "
          f"{folder} ({metrics['seconds']:.0f} s, peak memory {metrics['peak_rss_mb']:.0f} "
          f"MB); train on them with: latentebm sparse-coding --dataset natural --shards "
          f"{folder} --out DIR")
    return run_dir
