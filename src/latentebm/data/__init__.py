"""Data: MNIST (IDX files, verified download, bundled sample) and natural-image patches.

MNIST arrays are uint8 images ``(n, 28, 28)`` and int64 labels ``(n,)``; natural images are
float64 in [0, 1], ``(H, W)`` or ``(H, W, C)``; patches are rows ``(n, size*size*C)``.
"""

from .images import load_images, local_contrast_normalize, whiten_1f, zca_whiten
from .mnist import load_mnist, mnist_cache_dir, mnist_vectors, read_idx, write_idx
from .patches import extract_patches, natural_patches, random_windows, windows

__all__ = [
    "load_mnist",
    "mnist_vectors",
    "mnist_cache_dir",
    "read_idx",
    "write_idx",
    "load_images",
    "whiten_1f",
    "zca_whiten",
    "local_contrast_normalize",
    "extract_patches",
    "natural_patches",
    "windows",
    "random_windows",
]
