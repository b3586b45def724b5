"""Data larger than memory: rows written once into ``.npy`` shards, read lazily by rank.

A prepared dataset is a folder::

    index.json          {"format": "latentebm-shards-1", "n_rows", "n_features", "dtype",
                         "scale", "shards": [{"file", "rows", "bytes", "sha256"}], "meta"}
    shard-00000.npy     float32 rows (rows, n_features), C order
    shard-00001.npy     ...

:func:`prepare_patches` (whitened natural-image patches) and :func:`write_shards` (any array,
e.g. MNIST vectors) write it; every shard is written to a temporary name and renamed, and the
index last, so a folder with an index is complete. :class:`ShardedArray` opens it and reads
rows on demand (``data[idx]`` gives a tensor) with positioned reads straight into the batch, so
the process holds one batch, not the data: its resident memory does not grow with the dataset
(the operating system's page cache may keep the files, shared and reclaimable).
:func:`stream_batches` gives each rank its share of every global mini-batch in the same seeded
order as :class:`latentebm.training.MinibatchLoop`, from any ``(epoch, batch)`` position.

Example (10 million 12×12 patches, 5.8 GB, then dictionary learning on two processes)::

    prepare_patches("/data/patches", 10_000_000, images="/data/photos")
    data = ShardedArray("/data/patches")
    torchrun --nproc_per_node 2 -m latentebm sparse-coding --shards /data/patches ...
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import json_digest, write_json
from .._validation import check_bool, check_int, check_seed
from ..training import distributed as dist
from ..training.loop import epoch_order
from .images import OLSHAUSEN_FIELD_CUTOFF, each_image, load_images, whiten_1f
from .patches import extract_patches

FORMAT = "latentebm-shards-1"
INDEX_NAME = "index.json"
INDEX_DIGEST = "sha256_index"
"""The key of the index's own checksum (every index this version writes has one; an index
without it, from before, is read as it is)."""
DTYPE = np.dtype("<f4")
DEFAULT_ROWS_PER_SHARD = 1 << 20
_HASH_BLOCK = 1 << 23


class ShardError(ValueError):
    """A prepared dataset is incomplete or damaged (the message names the file and says how)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- writing
def disk_free(path: Path) -> int:
    """Bytes free on the file system that ``path`` (or, where it does not exist yet, its
    nearest existing parent) is on."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class ShardWriter:
    """Write ``n_rows`` rows of ``n_features`` floats into shards of ``rows_per_shard`` rows,
    chunk by chunk (only the chunk in hand is in memory).

    Parameters
    ----------
    out_dir : path
        The dataset folder (created; an existing dataset there is replaced).
    n_rows, n_features : int
        The total shape ``(n_rows, n_features)``.
    rows_per_shard : int
        Rows per ``.npy`` file (the last one may be shorter).
    meta : dict, optional
        JSON values stored in the index (how the data was made).
    unit_rms : bool
        Record in the index the ``scale`` that gives the rows unit overall RMS when read
        (measured while writing; the stored values are left as they are).

    Use as a context manager, calling :meth:`write` with chunks ``(k, n_features)``; the index
    is written when the block ends after exactly ``n_rows`` rows.
    """

    def __init__(self, out_dir: str | os.PathLike, n_rows: int, n_features: int, *,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                 meta: dict[str, Any] | None = None, unit_rms: bool = False) -> None:
        for name, v in (("n_rows", n_rows), ("n_features", n_features),
                        ("rows_per_shard", rows_per_shard)):
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.dir = Path(out_dir)
        self.n_rows, self.n_features = int(n_rows), int(n_features)
        self.rows_per_shard = int(rows_per_shard)
        self.meta = dict(meta or {})
        self.unit_rms = check_bool(unit_rms, "unit_rms")
        self.shards: list[dict[str, Any]] = []
        self._written = 0
        self._sq_sum = 0.0
        self._file = None
        self._tmp = None
        self._hash = None
        self._left = 0

    def __enter__(self) -> ShardWriter:
        needed, free = self.n_rows * self.n_features * DTYPE.itemsize, disk_free(self.dir)
        if needed > free:  # refused before a byte is written, not after hours of writing
            raise ValueError(f"{self.n_rows} rows of {self.n_features} float32 values need "
                             f"{needed / 1e9:.3g} GB, and the disk of {self.dir} has "
                             f"{free / 1e9:.3g} GB free")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / INDEX_NAME).unlink(missing_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        incomplete = exc_type is not None or self._written != self.n_rows
        if self._file is not None:  # only when incomplete: a full last shard is closed
            self._file.close()
            self._file = None
            os.unlink(self._tmp)
        if exc_type is not None:
            return
        if incomplete:
            raise ValueError(f"ShardWriter got {self._written} rows but n_rows={self.n_rows}")
        index = self.index()
        digest = json_digest(index, excluding=INDEX_DIGEST)
        write_json(self.dir / INDEX_NAME, {**index, INDEX_DIGEST: digest})

    def index(self) -> dict[str, Any]:
        """The index as written to ``index.json``.

        Returns
        -------
        dict
            ``format``, ``n_rows``, ``n_features``, ``dtype``, ``scale``, ``rms``, ``shards``
            and ``meta``.
        """
        rms = math.sqrt(self._sq_sum / (self.n_rows * self.n_features))
        scale = 1.0 / rms if self.unit_rms and rms > 0 else 1.0
        return {"format": FORMAT, "n_rows": self.n_rows, "n_features": self.n_features,
                "dtype": DTYPE.str, "scale": scale, "rms": rms, "shards": self.shards,
                "meta": self.meta}

    def write(self, chunk: np.ndarray) -> None:
        """Append rows ``chunk`` ``(k, n_features)`` (finite; stored as float32).

        Parameters
        ----------
        chunk : array_like of shape (k, n_features)
            The next ``k`` rows; the total written may not exceed ``n_rows``.
        """
        given = np.asarray(chunk)
        if given.dtype.kind not in "biuf":  # complex would lose its imaginary part, text be read
            raise TypeError(f"chunk must hold real numbers, got dtype {given.dtype}")
        rows = np.ascontiguousarray(given, dtype=DTYPE)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"chunk must have shape (k, {self.n_features}), got {rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError("chunk contains NaN or infinite values")
        if self._written + rows.shape[0] > self.n_rows:
            raise ValueError(f"more than n_rows={self.n_rows} rows written")
        self._sq_sum += float(np.square(rows, dtype=np.float64).sum())
        while rows.shape[0]:
            if self._file is None:
                self._open_shard()
            take = rows[: self._left]
            self._emit(take.tobytes())
            self._left -= take.shape[0]
            self._written += take.shape[0]
            rows = rows[take.shape[0]:]
            if self._left == 0:
                self._close_shard()

    def _open_shard(self) -> None:
        rows = min(self.rows_per_shard, self.n_rows - self._written)
        name = f"shard-{len(self.shards):05d}.npy"
        self._tmp = self.dir / f".{name}.tmp"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in _close_shard/__exit__
        self._hash = hashlib.sha256()
        self._left = rows
        self.shards.append({"file": name, "rows": rows})
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": DTYPE.str, "fortran_order": False, "shape": (rows, self.n_features)}
        )
        self._emit(header.getvalue())

    def _emit(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    def _close_shard(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        entry = self.shards[-1]
        entry["bytes"] = self._tmp.stat().st_size
        entry["sha256"] = self._hash.hexdigest()
        os.replace(self._tmp, self.dir / entry["file"])


def write_shards(rows: np.ndarray | Iterable[np.ndarray], out_dir: str | os.PathLike, *,
                 n_rows: int | None = None, n_features: int | None = None,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write ``rows`` as a sharded dataset in ``out_dir``.

    E.g. MNIST: ``write_shards(mnist_vectors(load_mnist()[0]), "mnist-shards")``.

    Parameters
    ----------
    rows : ndarray or torch.Tensor of shape (n, d), or iterable of ndarray of shape (k, d)
        The whole array, or chunks of it (then ``n_rows`` and ``n_features`` are needed).
    out_dir : str or os.PathLike
        The dataset folder (created; an existing dataset there is replaced).
    n_rows, n_features : int or None
        The total shape ``(n, d)`` when ``rows`` is an iterable; ignored for an array.
    rows_per_shard : int
        Rows per ``.npy`` file (the last one may be shorter).
    meta : dict or None
        JSON values stored in the index.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    if isinstance(rows, np.ndarray | torch.Tensor):
        arr = np.asarray(rows)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"rows must be a non-empty (n, d) array, got shape {arr.shape}")
        n_rows, n_features = arr.shape
        chunks: Iterable[np.ndarray] = (arr[i: i + 65536] for i in range(0, n_rows, 65536))
    else:
        if n_rows is None or n_features is None:
            raise ValueError("n_rows and n_features are needed when rows is an iterable")
        chunks = rows
    with ShardWriter(out_dir, n_rows, n_features, rows_per_shard=rows_per_shard,
                     meta=meta) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return Path(out_dir)


def prepare_patches(
    out_dir: str | os.PathLike,
    n_patches: int,
    *,
    size: int = 12,
    images: str | os.PathLike | Sequence[np.ndarray] | None = None,
    whiten: str = "1f",
    seed: int = 0,
    chunk: int = 200_000,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
) -> Path:
    """Write ``n_patches`` whitened natural-image patches ``(size*size,)`` as a sharded dataset.

    The streaming form of :func:`latentebm.data.natural_patches`: grey images (``None``:
    scikit-image's photographs; a folder; or arrays) are whitened once (``"1f"``: Olshausen &
    Field's filter, or ``"none"``), then patches are cut ``chunk`` at a time at seeded random
    positions, their mean removed, and written. Readers scale them to unit overall variance
    (the index's ``scale``, measured while writing), as ``natural_patches`` does. Memory: the
    images plus one chunk. The same arguments give the same bytes.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The dataset folder (created; an existing dataset there is replaced).
    n_patches : int
        Number of patches (rows).
    size : int
        Patch side in pixels; rows have ``size * size`` features for grey images.
    images : str or os.PathLike or sequence of ndarray of shape (H, W), or None
        ``None`` for scikit-image's photographs (grey), a folder (read as grey), or arrays.
    whiten : {"1f", "none"}
        Olshausen & Field's filter on each whole image, or none.
    seed : int
        Seed of the patch positions.
    chunk : int
        Patches cut and written at a time.
    rows_per_shard : int
        Rows per ``.npy`` file.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    if whiten not in ("1f", "none"):
        raise ValueError(f"whiten must be '1f' or 'none' for streaming, got {whiten!r}")
    for name, v in (("n_patches", n_patches), ("chunk", chunk), ("size", size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    seed = check_seed(seed)
    names = None
    if images is None or isinstance(images, str | os.PathLike):
        imgs, names = load_images(images, grey=True, return_names=True)
    else:
        imgs = list(images)
        if not imgs:
            raise ValueError("images is empty: give a folder, None (scikit-image's photographs) "
                             "or at least one array")
    if whiten == "1f":
        imgs = each_image(whiten_1f, imgs, names)
    rng = np.random.default_rng(seed)
    meta = {"kind": "patches", "size": size, "whiten": whiten, "seed": seed,
            **({"whiten_cutoff": OLSHAUSEN_FIELD_CUTOFF} if whiten == "1f" else {}),
            "images": str(images) if isinstance(images, str | os.PathLike) else
            ("skimage" if images is None else f"{len(imgs)} arrays")}
    n_features = size * size * (1 if imgs[0].ndim == 2 else imgs[0].shape[2])
    with ShardWriter(out_dir, n_patches, n_features, rows_per_shard=rows_per_shard,
                     meta=meta, unit_rms=True) as writer:
        for start in range(0, n_patches, chunk):
            k = min(chunk, n_patches - start)
            writer.write(extract_patches(imgs, size, k, seed=rng, remove_mean=True))
    return Path(out_dir)


# --------------------------------------------------------------------------- reading
class _Shard:
    """One ``.npy`` file of ``rows`` float32 rows ``(rows, n_features)``, opened for reading."""

    def __init__(self, path: Path, rows: int, n_features: int, size: int) -> None:
        self.path = path
        self.row_bytes = n_features * DTYPE.itemsize
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unknown .npy version {version}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
            except ValueError as exc:
                raise ShardError(f"shard {path} is damaged: its .npy header is unreadable "
                                 f"({exc})") from exc
            offset = f.tell()
            if shape != (rows, n_features) or fortran or dtype != DTYPE:
                raise ShardError(f"shard {path} is damaged: it holds {dtype} {shape} but the "
                                 f"index says float32 {(rows, n_features)}")
            actual = os.fstat(f.fileno()).st_size
            if actual != size or actual != offset + rows * n_features * DTYPE.itemsize:
                raise ShardError(f"shard {path} is damaged: {actual} bytes, the index says "
                                 f"{size} (truncated or overwritten)")
        self.offset = offset
        self._fd = os.open(path, os.O_RDONLY)

    def read_into(self, out: np.ndarray, rows: np.ndarray) -> None:
        """Copy rows ``rows`` (ascending) into ``out`` ``(len(rows), n_features)``; runs of
        consecutive rows are read with one system call."""
        view = memoryview(out).cast("B")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for first, stop in zip(np.r_[0, breaks], np.r_[breaks, rows.size], strict=True):
            want = (stop - first) * self.row_bytes
            got = os.preadv(self._fd, [view[first * self.row_bytes: stop * self.row_bytes]],
                            self.offset + int(rows[first]) * self.row_bytes)
            if got != want:
                raise ShardError(f"shard {self.path} is damaged: it ended early (truncated "
                                 "after it was opened)")

    def close(self) -> None:
        os.close(self._fd)


class ShardedArray:
    """A prepared dataset opened read-only: ``data.shape == (n_rows, n_features)`` and
    ``data[idx]`` the rows ``idx`` (integers in any order, repeats allowed, negative ones
    counting from the end, or a slice) as a float32 tensor ``(len(idx), n_features)``, scaled
    by the index's ``scale``.

    Parameters
    ----------
    path : path
        The dataset folder (with ``index.json``).
    verify : bool
        Check every shard's SHA-256 against the index when opening (under ``torchrun`` the
        ranks share the work). Without it only sizes and headers are checked.

    Raises :class:`ShardError` (a ``ValueError``) naming the file when the index or a shard is
    missing, truncated, or does not match its checksum.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        self.path = Path(path)
        index_path = self.path / INDEX_NAME
        if not index_path.is_file():
            raise ShardError(f"{self.path} is not a prepared dataset (no {INDEX_NAME}; "
                             "the prepare step did not finish?)")
        try:
            index = json.loads(index_path.read_text())
            if not isinstance(index, dict):
                raise ShardError(f"{index_path} is damaged (not a JSON object)")
            if INDEX_DIGEST in index and index[INDEX_DIGEST] != json_digest(
                    index, excluding=INDEX_DIGEST):
                raise ShardError(f"{index_path} is damaged: its content (sizes, scale, shard "
                                 "list, settings) does not match the checksum written with it; "
                                 "run the prepare step again")
            if index.get("format") != FORMAT:
                raise ShardError(f"{index_path} has format {index.get('format')!r}, not "
                                 f"{FORMAT!r}")
            self.n_rows, self.n_features = int(index["n_rows"]), int(index["n_features"])
            self.scale = float(index["scale"])
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise ShardError(f"{index_path} is damaged (scale {self.scale!r}: not a finite "
                                 "positive number)")
            entries = [(e["file"], int(e["rows"]), int(e["bytes"]), e["sha256"])
                       for e in index["shards"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ShardError):
                raise
            raise ShardError(f"{index_path} is damaged ({exc!r})") from exc
        self.meta = index.get("meta", {})
        if sum(rows for _, rows, _, _ in entries) != self.n_rows:
            raise ShardError(f"{index_path} is damaged: its shards do not add up to "
                             f"{self.n_rows} rows")
        if verify:
            self._verify(entries)
        self._shards = []
        for name, rows, size, _ in entries:
            file = self.path / name
            if not file.is_file():
                raise ShardError(f"shard {file} is missing")
            self._shards.append(_Shard(file, rows, self.n_features, size))
        self._ends = np.cumsum([rows for _, rows, _, _ in entries])

    def _verify(self, entries: list[tuple[str, int, int, str]]) -> None:
        bad = []
        for i in range(dist.rank(), len(entries), dist.world_size()):
            name, _, _, digest = entries[i]
            file = self.path / name
            if not file.is_file():
                bad.append(f"shard {file} is missing")
            elif _sha256(file) != digest:
                bad.append(f"shard {file} is damaged: its SHA-256 does not match the index")
        bad = sorted(sum(dist.all_gather_object(bad, what="shard verification"), []))
        if bad:
            raise ShardError("; ".join(bad) + ". Run the prepare step again.")

    @property
    def device(self) -> torch.device:
        """Rows are read to the CPU."""
        return torch.device("cpu")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_features)

    def __len__(self) -> int:
        return self.n_rows

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` ``(k,)`` as float32 ``(k, n_features)`` (unscaled, a fresh array).

        Parameters
        ----------
        idx : array_like of int of shape (k,)
            Row numbers in ``[0, n_rows)``, any order, repeats allowed (flattened).

        Returns
        -------
        ndarray of shape (k, n_features)
            float32 rows, not multiplied by ``scale`` (``data[idx]`` is).
        """
        if not self._shards and self.n_rows:
            raise ValueError(f"the dataset {self.path} was closed; open it again to read it")
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise IndexError(f"row indices must lie in [0, {self.n_rows})")
        out = np.empty((idx.size, self.n_features), dtype=DTYPE)
        which = np.searchsorted(self._ends, idx, side="right")
        starts = np.concatenate(([0], self._ends[:-1]))
        for s in np.unique(which):
            sel = np.flatnonzero(which == s)
            local = idx[sel] - starts[s]
            order = np.argsort(local, kind="stable")  # ascending offsets read the file forwards
            part = np.empty((sel.size, self.n_features), dtype=DTYPE)
            self._shards[s].read_into(part, local[order])
            out[sel[order]] = part
        return out

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.n_rows))
        elif isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        chosen = np.asarray(idx)
        if chosen.size and chosen.dtype.kind not in "iu":
            # a boolean mask or float positions would be read as row numbers
            raise TypeError(f"rows must be selected by integers or a slice, got {chosen.dtype} "
                            "values")
        if chosen.size and chosen.min() < 0:  # Python's negative indices count from the end
            if chosen.min() < -self.n_rows:
                raise IndexError(f"row indices must lie in [-{self.n_rows}, {self.n_rows})")
            chosen = np.where(chosen < 0, chosen + self.n_rows, chosen)
        rows = torch.from_numpy(self.read(chosen))
        return rows.mul_(self.scale) if self.scale != 1.0 else rows

    def close(self) -> None:
        """Close the shard files."""
        for shard in self._shards:
            shard.close()
        self._shards = []

    def __del__(self) -> None:
        if getattr(self, "_shards", None):
            self.close()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # a copy or a pickle (a spawned worker) opens the files again by path: sharing the
        # descriptors, a copy's close left the other reading whatever file got their numbers
        return _reopen, (str(self.path),)


def _reopen(path: str) -> ShardedArray:
    """:class:`ShardedArray` ``path`` opened again for a copy or an unpickled one (sizes and
    headers checked; the checksums were when the original was opened)."""
    return ShardedArray(path, verify=False)


def stream_batches(
    data: ShardedArray,
    batch_size: int,
    epochs: int,
    *,
    seed: int,
    start: tuple[int, int] = (0, 0),
    rank: int | None = None,
    world: int | None = None,
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """This rank's share of every global mini-batch: ``(epoch, batch, idx, rows)``.

    The global order of epoch ``e`` is :func:`latentebm.training.epoch_order` ``(seed, n, e)``
    (the one :class:`~latentebm.training.MinibatchLoop` uses), cut into global batches of
    ``batch_size``; rank ``r`` of ``world`` gets the contiguous share
    :func:`latentebm.training.distributed.shard` of each, so the ranks together see every row
    once per epoch and the order does not depend on the number of processes. Starting from
    ``start = (epoch, batch)`` gives exactly the batches a run from the beginning gives from
    there on.

    Parameters
    ----------
    data : ShardedArray
        The dataset, ``n_rows`` rows.
    batch_size : int
        Global mini-batch size (summed over ranks).
    epochs : int
        Total number of epochs (the last epoch index is ``epochs - 1``).
    seed : int
        Seed of the epoch orders.
    start : tuple of (int, int)
        ``(epoch, batch)`` to start from.
    rank, world : int or None
        This process's rank and the number of processes; ``None`` asks
        :mod:`latentebm.training.distributed`.

    Yields
    ------
    epoch : int
        Epoch number.
    batch : int
        Global batch number within the epoch.
    idx : torch.Tensor of shape (k,)
        The global row numbers of this rank's share.
    rows : torch.Tensor of shape (k, n_features)
        float32 rows (scaled by the index's ``scale``).
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    epochs = check_int(epochs, "epochs", low=0)
    seed = check_seed(seed)
    n = data.n_rows
    steps = math.ceil(n / batch_size)
    if (not isinstance(start, tuple | list) or len(start) != 2
            or not 0 <= check_int(start[0], "start epoch", low=0) <= epochs
            or not 0 <= check_int(start[1], "start batch", low=0) < steps):
        raise ValueError(f"start must be (epoch, batch) with epoch in [0, {epochs}] and batch "
                         f"in [0, {steps}) ({steps} batches of {batch_size} per epoch), got "
                         f"{start!r}")
    for epoch in range(start[0], epochs):
        order = epoch_order(seed, n, epoch, "cpu")
        for b in range(start[1] if epoch == start[0] else 0, steps):
            idx = dist.shard(order[b * batch_size: (b + 1) * batch_size], rank, world)
            yield epoch, b, idx, data[idx]


__all__ = ["FORMAT", "ShardError", "ShardWriter", "ShardedArray", "prepare_patches",
           "stream_batches", "write_shards"]
