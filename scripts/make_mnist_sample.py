"""Regenerate the MNIST sample bundled in ``src/latentebm/data/sample/``.

Takes the first 20000 training and the first 500 test digits (images and labels) from the
original IDX ``.gz`` files and writes them in the same format, gzip with mtime 0 and no file
name, so the output bytes depend only on the input and the zlib version. Also rewrites the
sample's README.md with the sha256 of each file; if those differ from ``SAMPLE_SHA256`` in
``latentebm/data/mnist.py`` the script says so (update the constants by hand).

Usage: python scripts/make_mnist_sample.py [FULL_MNIST_DIR] (default ../shared/data/mnist)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from latentebm.data.mnist import (
    FILES,
    SAMPLE_DIR,
    SAMPLE_SHA256,
    SHA256,
    load_mnist,
    write_idx,
)

# 20000 training digits: with fewer, 256 atoms memorise whole digits instead of breaking into
# strokes (2000 digits: 23 % strokes, 10000: 58 %, 20000: 82 % after four epochs; see README).
COUNTS = {"train": 20000, "test": 500}
REPO = Path(__file__).resolve().parents[1]

README = """\
# Bundled MNIST sample

The first {n_train} training digits and the first {n_test} test digits of MNIST, in the original
IDX format (gzip-compressed), so that `load_mnist(split, sample=True)` and the demos run offline.
{n_train} training digits are what `make demo` needs for its 256 atoms to become pen strokes
rather than memorised whole digits (with 2000 digits only about a quarter are strokes).
Regenerate with `python scripts/make_mnist_sample.py` from the full original files; the loader
checks every file against the sha256 below (also stored in `latentebm/data/mnist.py`).

MNIST: Yann LeCun and Corinna Cortes, <http://yann.lecun.com/exdb/mnist/>, licensed under the
Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0). This sample is a subset of
that data set, unchanged apart from the number of digits, and is shared under the same licence.

| file | digits | bytes | sha256 |
|---|---:|---:|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "full_dir", nargs="?", default=REPO.parent / "shared" / "data" / "mnist", type=Path
    )
    args = parser.parse_args(argv)

    for name in SHA256:
        digest = hashlib.sha256((args.full_dir / name).read_bytes()).hexdigest()
        if digest != SHA256[name]:
            parser.error(f"{args.full_dir / name} is not the original file (sha256 {digest})")

    rows, digests = [], {}
    for split, (image_name, label_name) in FILES.items():
        images, labels = load_mnist(split, data_dir=args.full_dir)
        n = COUNTS[split]
        for name, array in ((image_name, images[:n]), (label_name, labels[:n].astype("uint8"))):
            path = write_idx(SAMPLE_DIR / name, array)
            data = path.read_bytes()
            digests[name] = hashlib.sha256(data).hexdigest()
            rows.append(f"| `{name}` | {n} | {len(data):,} | `{digests[name]}` |")
            print(f"{path.relative_to(REPO)}  {len(data):>8,} bytes  {digests[name]}")

    readme = README.format(n_train=COUNTS["train"], n_test=COUNTS["test"], rows="\n".join(rows))
    tmp = SAMPLE_DIR / ".README.md.part"
    tmp.write_text(readme, encoding="utf-8")
    tmp.replace(SAMPLE_DIR / "README.md")
    if digests != SAMPLE_SHA256:
        print("SAMPLE_SHA256 in src/latentebm/data/mnist.py is out of date; set it to:")
        for name, digest in digests.items():
            print(f"{digest}  {name}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
