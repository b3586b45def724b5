"""Images larger than memory, for convolutional dictionary learning: a sharded dataset
(:mod:`.streaming`) whose rows are flattened images of one shape, stored in its index.

``write_image_shards(images, folder)`` writes them (from an array or any iterable of equally
sized images, so they never need to be in memory together); ``ShardedImages(folder)`` opens
them, and ``data[idx]`` reads just those images ``(k, channels, H, W)``. Passed to
:meth:`latentebm.ConvDictionaryLearning.fit`, only one mini-batch of images (and its codes)
is held at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .streaming import ShardedArray, ShardError, write_shards

IMAGE_SHAPE_KEY = "image_shape"
SHARD_BYTES = 64 << 20
"""Default size of one shard file (float32 images)."""


def write_image_shards(images: np.ndarray | torch.Tensor | Iterable[np.ndarray], out_dir: str
                       | os.PathLike, *, n_images: int | None = None,
                       image_shape: tuple[int, int, int] | None = None,
                       images_per_shard: int | None = None) -> Path:
    """Write equally sized images as a sharded dataset that :class:`ShardedImages` opens.

    Parameters
    ----------
    images : array or tensor of shape (n, channels, H, W), or iterable of arrays (channels, H, W)
        The images; an iterable is consumed one image at a time.
    out_dir : str or os.PathLike
        The dataset folder (an existing dataset there is replaced).
    n_images : int or None
        How many images an iterable yields (needed then).
    image_shape : tuple of int or None
        ``(channels, H, W)`` of an iterable's images (needed then).
    images_per_shard : int or None
        Images per ``.npy`` file; by default about 64 MB of float32 per file.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    ValueError
        Images of another shape than the first, a wrong count, non-finite values.
    """
    if isinstance(images, np.ndarray | torch.Tensor):
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.size == 0:
            raise ValueError(f"images must be a non-empty (n, channels, H, W) array, got shape "
                             f"{arr.shape}")
        n_images, image_shape = arr.shape[0], tuple(int(s) for s in arr.shape[1:])
        source: Iterable[np.ndarray] = iter(arr)
    else:
        if n_images is None or image_shape is None:
            raise ValueError("n_images and image_shape are needed when images is an iterable")
        source = images
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (channels, H, W), got {image_shape}")
    size = int(np.prod(shape))
    per_shard = images_per_shard or max(1, SHARD_BYTES // (4 * size))
    return write_shards(_flat_rows(source, shape), out_dir, n_rows=int(n_images),
                        n_features=size, rows_per_shard=per_shard,
                        meta={IMAGE_SHAPE_KEY: list(shape)})


def _flat_rows(images: Iterable[Any], shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    for i, image in enumerate(images):
        given = np.asarray(image)
        if given.dtype.kind not in "biuf":  # complex would lose its imaginary part, text be read
            raise TypeError(f"image {i} must hold real numbers, got dtype {given.dtype}")
        arr = given.astype(np.float32, copy=False)
        if arr.shape != shape:
            raise ValueError(f"image {i} has shape {arr.shape}, not {shape} like the first")
        if not np.isfinite(arr).all():
            raise ValueError(f"image {i} holds NaN or infinite values")
        yield arr.reshape(1, -1)


class ShardedImages:
    """A dataset written by :func:`write_image_shards`, opened read-only.

    ``shape`` is ``(n_images, channels, H, W)`` and ``data[idx]`` the images ``idx`` as a
    float32 tensor ``(len(idx), channels, H, W)``; nothing else is read.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset folder.
    verify : bool
        Check every shard's SHA-256 when opening (see :class:`.streaming.ShardedArray`).

    Raises
    ------
    ShardError
        The folder is not a complete image dataset (a missing, damaged or foreign index).
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        self.rows = ShardedArray(path, verify=verify)
        shape = self.rows.meta.get(IMAGE_SHAPE_KEY)
        if (not isinstance(shape, list) or len(shape) != 3
                or int(np.prod(shape)) != self.rows.n_features):
            raise ShardError(f"{path} holds no images (its index has no valid "
                             f"{IMAGE_SHAPE_KEY!r}; write it with write_image_shards)")
        self.image_shape = tuple(int(s) for s in shape)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.rows.n_rows, *self.image_shape)

    @property
    def device(self) -> torch.device:
        """Images are read to the CPU."""
        return torch.device("cpu")

    def __len__(self) -> int:
        return self.rows.n_rows

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return self.rows[idx].view(-1, *self.image_shape)

    def close(self) -> None:
        """Close the shard files."""
        self.rows.close()


__all__ = ["ShardedImages", "write_image_shards"]
