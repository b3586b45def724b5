"""MNIST from the original IDX ``.gz`` files: parsing, checksum-verified download, cache.

Where :func:`load_mnist` looks, in order:

1. ``data_dir`` if given;
2. the folder named by the environment variable ``LATENTEBM_DATA``;
3. the cache, ``$LATENTEBM_CACHE/mnist`` (default ``~/.cache/latentebm/mnist``);
4. the network: each mirror in :data:`MIRRORS` in turn, fetched by ``pooch`` into the cache
   and kept only if its sha256 matches.

A user folder (1, 2) may also hold the files uncompressed or one level down in ``mnist/``.
Its files are parsed strictly but never deleted. Cache files must match the published
sha256; a file that does not is deleted, never used. ``sample=True`` reads the small sample
bundled with the package (20 000 training and 500 test digits), also checksum-verified.

MNIST: Yann LeCun and Corinna Cortes, licensed CC BY-SA 3.0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import shutil
import sys
import urllib.parse
import urllib.request
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._docs import fill_doc
from .._io import file_mode, write_bytes

__all__ = [
    "load_mnist",
    "mnist_vectors",
    "read_idx",
    "write_idx",
    "parse_idx",
    "idx_bytes",
    "mnist_cache_dir",
    "MIRRORS",
]

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <name>`` per line) as ``{name: hex}``."""
    return {name: digest for digest, name in (line.split() for line in text.strip().splitlines())}


#: sha256 of the original files, as published (MD5s match those on Yann LeCun's page).
SHA256: dict[str, str] = _parse_sums("""
440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609  train-images-idx3-ubyte.gz
3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c  train-labels-idx1-ubyte.gz
8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6  t10k-images-idx3-ubyte.gz
f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6  t10k-labels-idx1-ubyte.gz
""")

#: The environment variable that names a folder of the MNIST files (after ``data_dir``).
DATA_ENV = "LATENTEBM_DATA"

#: The bundled sample (regenerate with scripts/make_mnist_sample.py).
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_SHA256: dict[str, str] = _parse_sums("""
669c97111946d7e9d37bbe0b65cdffcaa508c72bd3f60fd9928dd8913512853d  train-images-idx3-ubyte.gz
0d63bfe03965cade2ddd2f6eb7b551ab557bafd0e607b963b8ea1c7e59367f45  train-labels-idx1-ubyte.gz
4fb033ac49621ffb23557df5d81c082c8a56336b3b76ce845c0ddcaaaec299e2  t10k-images-idx3-ubyte.gz
58f68b157d53451c304c693c10fc827d368b4cd0cbe53b39acf5e507818d59ba  t10k-labels-idx1-ubyte.gz
""")

#: Base URLs tried in order; the file name is appended.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 16
_UBYTE = 0x08


# --------------------------------------------------------------------------- IDX format


@fill_doc
def parse_idx(data: bytes, name: str = "IDX data", *, ndim: int | None = None) -> np.ndarray:
    """Decode an uncompressed IDX file into a uint8 array.

    Header: ``0x00 0x00 0x08 <ndim>`` (unsigned bytes), then ``ndim`` big-endian uint32
    dimensions, then the row-major data. ``ndim`` (if given) is the required rank: MNIST
    labels have magic 0x00000801, images 0x00000803. A bad magic number, rank or byte count
    raises ``ValueError`` naming ``name``.

    Parameters
    ----------
    data : bytes
        The whole (uncompressed) IDX file.
    {error_name}
    {idx_ndim}

    {returns_idx}
    """
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    rank = data[3]
    if data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or rank == 0:
        raise ValueError(f"{name}: bad IDX magic number 0x{magic:08X} (expected 0x0000080N)")
    if ndim is not None and rank != ndim:
        raise ValueError(
            f"{name}: bad IDX magic number 0x{magic:08X}, expected 0x{0x800 + ndim:08X}"
        )
    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    expected = header + math.prod(shape)  # exact: a corrupt header may claim 2^32 per axis
    if len(data) != expected:
        raise ValueError(
            f"{name}: IDX header says shape {shape} ({expected} bytes) but there are "
            f"{len(data)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


@fill_doc
def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``) as a uint8 array.

    A truncated or corrupt gzip stream or IDX body raises ``ValueError`` naming the file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    {idx_ndim}

    {returns_idx}
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    return parse_idx(data, str(path), ndim=ndim)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (1 to 255 dimensions) as the bytes of an IDX file.

    Parameters
    ----------
    array : ndarray of shape (d_1, ..., d_k)
        uint8 array, ``1 <= k <= 255``.

    Returns
    -------
    bytes
        The header followed by the row-major data (uncompressed).
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"array must have dtype uint8, got {arr.dtype}")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got shape {arr.shape}")
    header = bytes([0, 0, _UBYTE, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file; gzip it when ``path`` ends in ``.gz``.

    The gzip header carries no name and mtime 0, so equal arrays give equal bytes (for a
    given zlib). Written to a temporary name, then ``os.replace``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; a ``.gz`` suffix means gzip-compressed.
    array : ndarray of shape (d_1, ..., d_k)
        uint8 array, ``1 <= k <= 255``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    return write_bytes(path, data)


# --------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def mnist_cache_dir() -> Path:
    """``$LATENTEBM_CACHE/mnist`` if that variable is set, else ``~/.cache/latentebm/mnist``.

    Returns
    -------
    pathlib.Path
        The cache folder (not created here).
    """
    root = os.environ.get("LATENTEBM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "latentebm"
    return base / "mnist"


def _how_to_get(name: str, source: str = "data_dir") -> str:
    other = f"unset {DATA_ENV}" if source == DATA_ENV else "leave data_dir out"
    return (
        f"download it from {MIRRORS[0]}{name} (sha256 {SHA256[name]}), "
        f"or {other} and load_mnist() will download it into the cache"
    )


def _find_in_user_dir(folder: Path, name: str, source: str) -> Path:
    """Locate ``name`` (or its uncompressed form) in ``folder`` or ``folder/mnist``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{source} {str(folder)!r} is not a directory")
    for d in (folder, folder / "mnist"):
        for candidate in (d / name, d / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{source} {str(folder)!r} has no MNIST file {name!r}; {_how_to_get(name, source)}"
    )


def _copy_file_url(url: str, output_file: str, pooch_: object = None) -> None:
    """A pooch downloader for ``file://`` URLs (a local mirror), which pooch does not know."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    with open(source, "rb") as src, open(output_file, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def _downloader(url: str) -> Callable[..., None]:
    """pooch's downloader for ``url`` (with our timeout for HTTP), or a local-file copier."""
    import pooch

    progress = sys.stderr.isatty()
    if url.startswith("file:"):
        return _copy_file_url
    if url.startswith(("http://", "https://")):
        return pooch.HTTPDownloader(progressbar=progress, timeout=DOWNLOAD_TIMEOUT_S)
    return pooch.downloaders.choose_downloader(url, progressbar=progress)


def _download(name: str, dest: Path) -> None:
    """Fetch ``name`` with pooch from the first mirror whose payload matches its sha256.

    pooch writes to a temporary file and moves it to ``dest`` only when the hash matches, so a
    bad payload is never kept; the file then gets the mode the umask allows.
    """
    import pooch
    import requests

    errors = []
    for base in MIRRORS:
        url = base + name
        try:
            downloader = _downloader(url)
        except ValueError as exc:  # a protocol pooch cannot fetch
            errors.append(f"{url}: {exc}")
            continue
        try:
            pooch.retrieve(url, known_hash=f"sha256:{SHA256[name]}", fname=name,
                           path=dest.parent, downloader=downloader)
        except ValueError as exc:
            errors.append(f"{url}: sha256 mismatch ({exc})")
            continue
        except (OSError, requests.exceptions.RequestException) as exc:
            errors.append(f"{url}: {exc}")
            continue
        os.chmod(dest, file_mode())
        return
    raise OSError(f"could not download MNIST file {name!r}:\n  " + "\n  ".join(errors))


def _cached_file(name: str, download: bool) -> Path:
    """Return a verified cache path for ``name``, downloading it if allowed."""
    path = mnist_cache_dir() / name
    if path.is_file():
        if _sha256(path) == SHA256[name]:
            return path
        warnings.warn(
            f"cached MNIST file {path} failed its sha256 check and was deleted",
            stacklevel=3,
        )
        path.unlink()
    if not download:
        raise FileNotFoundError(
            f"MNIST file {name!r} is not in the cache {str(path.parent)!r} and download=False; "
            f"download it from {MIRRORS[0]}{name} (sha256 {SHA256[name]}) into that folder, "
            "pass data_dir, or set LATENTEBM_DATA"
        )
    _download(name, path)
    return path


def _sample_file(name: str) -> Path:
    path = SAMPLE_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"bundled MNIST sample file {path} is missing; reinstall")
    if _sha256(path) != SAMPLE_SHA256[name]:
        raise ValueError(f"bundled MNIST sample file {path} failed its sha256 check; reinstall")
    return path


def _resolve(name: str, data_dir, download: bool, sample: bool) -> Path:
    if sample:
        return _sample_file(name)
    if data_dir is not None:
        return _find_in_user_dir(Path(os.fspath(data_dir)).expanduser(), name, "data_dir")
    env = os.environ.get(DATA_ENV)
    if env:
        return _find_in_user_dir(Path(env).expanduser(), name, DATA_ENV)
    return _cached_file(name, download)


# --------------------------------------------------------------------------- public API


def load_mnist(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    sample: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split: images uint8 ``(n, 28, 28)`` and labels int64 ``(n,)``.

    See the module docstring for where the files are looked for.

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"`` (60000 digits) or ``"test"`` (10000).
    data_dir : str or os.PathLike or None
        Folder holding the IDX files (or ``mnist/`` inside it); ``None`` tries
        ``LATENTEBM_DATA``, then the cache.
    download : bool
        Download into the cache when the files are not there.
    sample : bool
        Load the bundled sample instead (20 000 / 500 digits, the first of each split); needs
        no files or network and cannot be combined with ``data_dir``.

    Returns
    -------
    images : ndarray of shape (n, 28, 28)
        uint8 pixels.
    labels : ndarray of shape (n,)
        int64 digits 0-9.
    """
    if not isinstance(split, str) or split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    if not isinstance(sample, bool):
        raise TypeError(f"sample must be a bool, got {type(sample).__name__}")
    if sample and data_dir is not None:
        raise ValueError("data_dir cannot be combined with sample=True")

    image_name, label_name = FILES[split]
    image_path = _resolve(image_name, data_dir, download, sample)
    label_path = _resolve(label_name, data_dir, download, sample)
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: expected 28x28 images, got shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{image_path} holds no images")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{label_path} has {labels.shape[0]} labels but {image_path} has "
            f"{images.shape[0]} images"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: labels must be digits 0-9, found {labels.max()}")
    return images, labels.astype(np.int64)


def mnist_vectors(images: np.ndarray) -> np.ndarray:
    """Flatten images ``(n, h, w)`` to float32 vectors ``(n, h*w)`` in [0, 1].

    uint8 pixels are divided by 255; floating input must already lie in [0, 1].

    Parameters
    ----------
    images : ndarray of shape (n, h, w)
        uint8 or floating-point images (non-empty, finite).

    Returns
    -------
    ndarray of shape (n, h * w)
        float32 vectors in [0, 1].
    """
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ValueError(f"images must have shape (n, height, width), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"images is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return arr.reshape(arr.shape[0], -1).astype(np.float32) / np.float32(255)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"images must be uint8 or floating point, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("images contains NaN or infinite values")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"floating-point images must lie in [0, 1], got [{arr.min()}, {arr.max()}]"
        )
    return arr.reshape(arr.shape[0], -1).astype(np.float32)
