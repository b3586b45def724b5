"""Benchmark inputs: MNIST digits and whitened natural-image patches.

Both come from latentebm's own data layer (``latentebm.data``). A small local fallback keeps the
benchmarks usable on a checkout whose data layer is older: the MNIST IDX reader and the
Olshausen & Field 1/f whitening below are written here from the published descriptions.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(os.environ.get("LATENTEBM_DATA", "/work/shared/data"))


def mnist(split: str, data_dir: Path = DEFAULT_DATA) -> tuple[np.ndarray, str]:
    """MNIST ``split`` as float64 ``(n, 784)`` in [0, 1] (pixels / 255) and a source note."""
    folder = data_dir / "mnist"
    try:
        from latentebm.data import load_mnist

        images, _ = load_mnist(split, data_dir=folder, download=False)
        source = "latentebm.data.load_mnist"
    except ImportError:
        name = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
        images = _read_idx_images(folder / name[split])
        source = "benchmarks/_data.py IDX reader"
    return images.reshape(images.shape[0], -1).astype(np.float64) / 255.0, source


def _read_idx_images(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    magic, n, h, w = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 0x00000803:
        raise ValueError(f"{path}: not an IDX uint8 image file (magic {magic:#x})")
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(int(n), int(h), int(w))


def patches(n: int, size: int = 12, seed: int = 0, data_dir: Path = DEFAULT_DATA):
    """``n`` whitened grey ``size × size`` patches from Kodak24, float32 ``(n, size²)``.

    1/f zero-phase whitening of each whole image, random positions, patch mean removed, the
    set scaled to unit overall variance. Returns the patches and a source note.
    """
    folder = data_dir / "kodak24"
    try:
        from latentebm.data import natural_patches

        x = natural_patches(size, n, images=folder, whiten="1f", grey=True, seed=seed)
        return np.asarray(x, dtype=np.float32), "latentebm.data.natural_patches"
    except ImportError:
        return _local_patches(folder, n, size, seed), "benchmarks/_data.py fallback"


def _local_patches(folder: Path, n: int, size: int, seed: int) -> np.ndarray:
    from PIL import Image

    imgs = []
    for f in sorted(folder.glob("*.png")):
        rgb = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) / 255.0
        grey = rgb @ np.array([0.2125, 0.7154, 0.0721])
        imgs.append(_whiten(grey))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(imgs), size=n)
    out = np.empty((n, size * size))
    for i, img in enumerate(imgs):
        sel = np.flatnonzero(which == i)
        r = rng.integers(0, img.shape[0] - size + 1, size=sel.size)
        c = rng.integers(0, img.shape[1] - size + 1, size=sel.size)
        win = np.lib.stride_tricks.sliding_window_view(img, (size, size))
        out[sel] = win[r, c].reshape(sel.size, -1)
    out -= out.mean(1, keepdims=True)
    return (out / out.std()).astype(np.float32)


def _whiten(img: np.ndarray, f0_ratio: float = 0.4) -> np.ndarray:
    """Zero-phase filter ``R(f) = f exp(-(f/f0)^4)`` on the mirror-padded image, ``f`` and
    ``f0`` in cycles per pixel (Olshausen & Field's ``0.4 N`` cycles per picture)."""
    h, w = img.shape
    x = np.pad(img - img.mean(), ((0, h), (0, w)), mode="symmetric")
    f = np.hypot(np.fft.fftfreq(x.shape[0])[:, None], np.fft.rfftfreq(x.shape[1])[None, :])
    filt = f * np.exp(-((f / f0_ratio) ** 4))
    out = np.fft.irfft2(np.fft.rfft2(x) * filt, s=x.shape)[:h, :w]
    return (out - out.mean()) / out.std()
