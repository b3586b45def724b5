"""The one patch extractor: square windows of images at given or random positions.

:func:`windows` cuts them from a batch of equal-sized images (torch, any device);
:func:`random_windows` draws the positions with a ``torch.Generator``; :func:`extract_patches`
draws them with NumPy over a list of differently sized images (the natural-image data path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .._validation import check_int, check_seed
from .images import check_image, each_image, load_images, whiten_1f, zca_whiten

__all__ = ["windows", "random_windows", "extract_patches", "natural_patches"]


def windows(
    images: torch.Tensor, which: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, size: int
) -> torch.Tensor:
    """The ``size × size`` windows ``images[which[i], :, rows[i]:, cols[i]:]``.

    Parameters
    ----------
    images : torch.Tensor, shape (N, C, H, W)
        The images.
    which, rows, cols : torch.Tensor of int, shape (n,)
        Image index and top-left corner of each window (on ``images``' device or the CPU).
    size : int
        Window side, at most ``min(H, W)``.

    Returns
    -------
    torch.Tensor, shape (n, C, size, size)
        Copies of the windows.
    """
    grid = images.unfold(2, size, 1).unfold(3, size, 1)  # (N, C, H', W', size, size), a view
    dev = images.device
    return grid[which.to(dev), :, rows.to(dev), cols.to(dev)]


def random_windows(
    images: torch.Tensor, n: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` windows at uniformly random positions of uniformly random images.

    Draws, in this order, the image indices, the rows and the columns from ``generator``.

    Parameters
    ----------
    images : torch.Tensor or ShardedImages, shape (N, C, H, W)
        The images (from a :class:`~latentebm.data.image_shards.ShardedImages`, only those
        drawn are read; the windows are the same).
    n : int
        Number of windows.
    size : int
        Window side, at most ``min(H, W)``.
    generator : torch.Generator
        Source of the positions (on the CPU).

    Returns
    -------
    torch.Tensor, shape (n, C, size, size)
    """
    N, _, H, W = images.shape
    if not 1 <= size <= min(H, W):
        raise ValueError(f"size must be in [1, {min(H, W)}] for images of {H}x{W}, got {size}")
    which = torch.randint(N, (n,), generator=generator)
    rows = torch.randint(H - size + 1, (n,), generator=generator)
    cols = torch.randint(W - size + 1, (n,), generator=generator)
    if not isinstance(images, torch.Tensor):  # read only the images the windows come from
        drawn, which = torch.unique(which, return_inverse=True)
        images = images[drawn]
    return windows(images, which, rows, cols, size)


def _as_image_list(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        images = [images]
    elif not isinstance(images, Sequence) or isinstance(images, str | bytes):
        raise TypeError(
            f"images must be an array or a sequence of arrays, got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError("images is empty")
    out = [check_image(img, f"images[{i}]") for i, img in enumerate(images)]
    channels = {1 if img.ndim == 2 else img.shape[2] for img in out}
    if len(channels) > 1:
        raise ValueError(f"images mixes grey and colour / channel counts {sorted(channels)}")
    return out


def extract_patches(
    images: np.ndarray | Sequence[np.ndarray],
    size: int,
    n_patches: int,
    *,
    seed: int | np.random.Generator,
    remove_mean: bool = True,
) -> np.ndarray:
    """Cut ``n_patches`` square patches at uniformly random positions.

    Every valid top-left position across all images is equally likely; the same ``seed``
    gives the same patches.

    Parameters
    ----------
    images : array_like, shape (H, W) or (H, W, C), or a sequence of them
        The images (all with the same channel count, sizes may differ).
    size : int
        Patch side, at most the smallest image side.
    n_patches : int
        Number of patches.
    seed : int or numpy.random.Generator
        Source of the positions.
    remove_mean : bool
        Subtract each patch's mean (its DC component).

    Returns
    -------
    numpy.ndarray, shape (n_patches, size * size * C)
        float64 rows, each flattened in C order from ``(size, size, C)`` (channel fastest).
    """
    imgs = _as_image_list(images)
    size = check_int(size, "size", low=1)
    n_patches = check_int(n_patches, "n_patches", low=1)
    if not isinstance(remove_mean, bool):
        raise TypeError(f"remove_mean must be a bool, got {type(remove_mean).__name__}")
    for i, img in enumerate(imgs):
        if size > min(img.shape[:2]):
            raise ValueError(f"size={size} is larger than images[{i}] of shape {img.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(
        check_seed(seed)
    )

    counts = np.array([(im.shape[0] - size + 1) * (im.shape[1] - size + 1) for im in imgs])
    flat = rng.integers(0, counts.sum(), size=n_patches)
    which = np.searchsorted(np.cumsum(counts), flat, side="right")
    offset = flat - np.concatenate(([0], np.cumsum(counts)[:-1]))[which]

    n_chan = 1 if imgs[0].ndim == 2 else imgs[0].shape[2]
    out = np.empty((n_patches, size * size * n_chan))
    for i, img in enumerate(imgs):
        sel = np.flatnonzero(which == i)
        if sel.size == 0:
            continue
        rows, cols = np.divmod(offset[sel], img.shape[1] - size + 1)
        img3 = img[..., None] if img.ndim == 2 else img
        batch = torch.from_numpy(np.ascontiguousarray(img3.transpose(2, 0, 1)))[None]
        zeros = torch.zeros(sel.size, dtype=torch.long)
        cut = windows(batch, zeros, torch.from_numpy(rows), torch.from_numpy(cols), size)
        out[sel] = cut.permute(0, 2, 3, 1).reshape(sel.size, -1).numpy()
    if remove_mean:
        out -= out.mean(axis=1, keepdims=True)
    return out


def natural_patches(
    size: int = 12,
    n_patches: int = 10000,
    *,
    images: str | os.PathLike | Sequence[np.ndarray] | None = None,
    whiten: str = "1f",
    grey: bool = True,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Whitened natural-image patches ready for dictionary learning.

    Patches have their mean removed and the whole set is scaled to unit overall variance.

    Parameters
    ----------
    size : int
        Patch side in pixels.
    n_patches : int
        Number of patches.
    images : str or os.PathLike or sequence of ndarray of shape (H, W) or (H, W, C), or None
        ``None`` for scikit-image's photographs, a folder path, or a list of arrays.
    whiten : {"1f", "zca", "none"}
        ``"1f"`` (Olshausen & Field filter on each whole image before cutting), ``"zca"``
        (ZCA on the patches, eps 1% of the mean patch variance) or ``"none"``.
    grey : bool
        Convert to grey (colour arrays are converted); ``False`` keeps colour.
    seed : int or numpy.random.Generator
        Source of the patch positions.

    Returns
    -------
    ndarray of shape (n_patches, size * size) or (n_patches, size * size * C)
        float32 patches (``size*size*3`` for colour photographs with ``grey=False``).
    """
    if whiten not in ("1f", "zca", "none"):
        raise ValueError(f"whiten must be '1f', 'zca' or 'none', got {whiten!r}")
    if not isinstance(grey, bool):
        raise TypeError(f"grey must be a bool, got {type(grey).__name__}")
    names = None
    if images is None or isinstance(images, str | os.PathLike):
        imgs, names = load_images(images, grey=grey, return_names=True)
    else:
        imgs = _as_image_list(images)
        if grey and imgs[0].ndim == 3:
            imgs = [_rgb_to_grey(im, f"images[{i}]") for i, im in enumerate(imgs)]
    if whiten == "1f":
        imgs = each_image(whiten_1f, imgs, names)
    x = extract_patches(imgs, size, n_patches, seed=seed, remove_mean=True)
    if whiten == "zca":
        if n_patches < 2:
            raise ValueError(f"n_patches must be >= 2 for whiten='zca', got {n_patches}")
        x = x / _overall_std(x)
        x, _ = zca_whiten(x, eps=1e-2)
    return (x / _overall_std(x)).astype(np.float32)


def _rgb_to_grey(img: np.ndarray, name: str) -> np.ndarray:
    from skimage.color import rgb2gray

    if img.shape[2] == 1:
        return img[..., 0]
    if img.shape[2] in (3, 4):
        return rgb2gray(img[..., :3])
    raise ValueError(f"{name} must be grey, RGB or RGBA for grey=True, got shape {img.shape}")


def _overall_std(x: np.ndarray) -> float:
    std = float(x.std())
    if std == 0.0:
        raise ValueError("the patches are all constant; use images with some texture")
    return std
