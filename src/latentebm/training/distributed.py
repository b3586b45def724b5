"""Training across processes with ``torch.distributed`` (launched by ``torchrun``).

Everything here works without a process group too (one process: rank 0 of 1, collectives are
no-ops), so a ``fit`` calls the same helpers whether or not it runs under ``torchrun``::

    from latentebm.training import distributed as dist
    dist.init_distributed()          # reads RANK / WORLD_SIZE / MASTER_ADDR ... if present
    local = dist.shard(global_batch_indices)
    ...
    dist.all_reduce_dict_({"A": dA, "B": dB})
    if dist.is_main():
        write the checkpoint

Backends: gloo for CPU tensors and, where CUDA is available, NCCL for CUDA tensors (one group,
``"cpu:gloo,cuda:nccl"``: a collective runs on the backend of its tensors' device, so a model
on the CPU trains the same on a GPU machine). Every collective has a timeout
(``LATENTEBM_DIST_TIMEOUT`` seconds, default 300): a rank that died or hangs makes the others
stop with :class:`DistributedError`, which says which collective failed and what to do, instead
of waiting for ever. ``torchrun`` then stops the whole job and prints the failed rank.
"""

from __future__ import annotations

import datetime
import gc
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from .._docs import doc_filler

DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "LATENTEBM_DIST_TIMEOUT"
MIXED = "cpu:gloo,cuda:nccl"

T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective failed: another process died, was killed, or did not answer in time."""


class _Traffic:
    """Bytes this process handed to collectives (payload only), for the scaling benchmark."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0

    def add(self, n_bytes: int) -> None:
        self.bytes += n_bytes
        self.calls += 1

    def reset(self) -> None:
        self.bytes = self.calls = 0


traffic = _Traffic()

_fill_doc = doc_filler({
    "what": "what : str, optional\n    Name of the collective in error messages.",
    "returns_tensor_itself": "Returns\n-------\ntorch.Tensor\n    ``tensor`` itself.",
    "rank_world": ("rank_ : int or None, default=None\n    The rank; this process's by default.\n"
                   "world : int or None, default=None\n"
                   "    Number of ranks; the group's size by default."),
})


# --------------------------------------------------------------------------- the group
def is_initialized() -> bool:
    """Whether a process group is up (``torch.distributed`` available and initialised)."""
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes checkpoints, figures and metrics."""
    return rank() == 0


def timeout_seconds() -> float:
    """The collective timeout: ``LATENTEBM_DIST_TIMEOUT`` (seconds) or 300."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw!r}")
    return value


def device() -> torch.device:
    """Where small bookkeeping tensors of a collective live: ``cuda:LOCAL_RANK`` when the
    group is NCCL only, else the CPU (gloo)."""
    if is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(
    backend: str | None = None, *, timeout_s: float | None = None
) -> bool:
    """Join the process group described by the ``torchrun`` environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without
    them (a plain ``python`` run) nothing happens and training runs on one process. Calling it
    again once the group is up does nothing.

    Parameters
    ----------
    backend : ``"gloo"``, ``"nccl"``, ``"cpu:gloo,cuda:nccl"`` or None
        None: ``"cpu:gloo,cuda:nccl"`` when CUDA is available, ``"gloo"`` otherwise. With
        CUDA each process uses ``cuda:LOCAL_RANK`` as its current device.
    timeout_s : float, optional
        Collective timeout in seconds (default :func:`timeout_seconds`).

    Returns
    -------
    bool
        Whether this process is part of a group of more than one process.
    """
    if is_initialized():
        return world_size() > 1
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not tdist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; cannot run under torchrun")
    if backend is None:
        backend = MIXED if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl", MIXED):
        raise ValueError(f"backend must be 'gloo', 'nccl' or {MIXED!r}, got {backend!r}")
    timeout = timeout_seconds() if timeout_s is None else float(timeout_s)
    if not timeout > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if backend != "gloo":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return world_size() > 1


def shutdown() -> None:
    """Leave the process group (if any).

    ``DistributedDataParallel`` wrappers that finished training may still wait for the garbage
    collector (they sit in reference cycles); collected after the group is gone, their C++
    reducer aborts the process ("terminate called without an active exception"), so they are
    collected first.
    """
    if is_initialized():
        gc.collect()
        tdist.destroy_process_group()


@contextmanager
def process_group(backend: str | None = None, *, timeout_s: float | None = None
                  ) -> Iterator[bool]:
    """:func:`init_distributed` for the block, :func:`shutdown` after it (only if this block
    created the group).

    Parameters
    ----------
    backend : str or None, default=None
        As :func:`init_distributed`.
    timeout_s : float or None, default=None
        As :func:`init_distributed`.

    Yields
    ------
    bool
        Whether this process is part of a group of more than one process.
    """
    created = not is_initialized()
    try:
        yield init_distributed(backend, timeout_s=timeout_s)
    finally:
        if created:
            shutdown()


# --------------------------------------------------------------------------- collectives
def _collective(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (RuntimeError, tdist.DistBackendError) as exc:
        raise DistributedError(
            f"rank {rank()} of {world_size()}: the collective {what} failed ({exc}). Another "
            "process probably died, was killed or stopped answering (timeout "
            f"{timeout_seconds():g} s, set by {TIMEOUT_ENV}); the job stops. Restart it with "
            "--resume to continue from the last checkpoint."
        ) from exc


@_fill_doc
def all_reduce_(tensor: torch.Tensor, *, what: str = "all_reduce") -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returned for chaining.

    Parameters
    ----------
    tensor : torch.Tensor of any shape
        Reduced in place.
    {what}

    {returns_tensor_itself}
    """
    if world_size() > 1:
        traffic.add(tensor.numel() * tensor.element_size())
        _collective(what, lambda: tdist.all_reduce(tensor))
    return tensor


@_fill_doc
def all_reduce_dict_(tensors: dict[str, torch.Tensor], *, what: str = "all_reduce"
                     ) -> dict[str, torch.Tensor]:
    """Sum every tensor of ``tensors`` over all processes, in place, with one collective per
    (dtype, device) group: the tensors are packed into one flat buffer, reduced, unpacked.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor
        Tensors of any shapes, reduced in place.
    {what}

    Returns
    -------
    dict of str to torch.Tensor
        ``tensors`` itself.
    """
    if world_size() == 1:
        return tensors
    groups: dict[tuple[torch.dtype, torch.device], list[str]] = {}
    for name, t in tensors.items():
        groups.setdefault((t.dtype, t.device), []).append(name)
    for names in groups.values():
        flat = torch.cat([tensors[k].reshape(-1) for k in names])
        all_reduce_(flat, what=f"{what} ({', '.join(names)})")
        offset = 0
        for k in names:
            n = tensors[k].numel()
            tensors[k].copy_(flat[offset: offset + n].view_as(tensors[k]))
            offset += n
    return tensors


@_fill_doc
def all_reduce_floats(values: list[float], *, what: str = "all_reduce") -> list[float]:
    """Python numbers (e.g. a batch's sums for the history) summed over all processes, in
    one float64 collective; ``values`` itself with one process.

    Parameters
    ----------
    values : list of float
        This process's numbers; the same length on every rank.
    {what}

    Returns
    -------
    list of float
        The sums, in order, the same on every rank.
    """
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device())
    return all_reduce_(t, what=what).tolist()


@_fill_doc
def all_gather_cat(tensor: torch.Tensor, *, what: str = "all_gather") -> torch.Tensor:
    """The ``tensor`` of every rank concatenated along dim 0, in rank order.

    Parameters
    ----------
    tensor : torch.Tensor of shape (n_rank, *dims)
        This rank's part; ``n_rank`` may differ between ranks (``dims`` and the dtype must
        agree).
    {what}

    Returns
    -------
    torch.Tensor of shape (sum of n_rank, *dims)
    """
    if world_size() == 1:
        return tensor
    sizes = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size())]
    _collective(f"{what} (sizes)", lambda: tdist.all_gather(all_sizes, sizes))
    counts = [int(s) for s in all_sizes]
    biggest = max(counts)
    padded = tensor.new_zeros((biggest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    traffic.add(padded.numel() * padded.element_size() * (len(counts) - 1))
    _collective(what, lambda: tdist.all_gather(parts, padded))
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


@_fill_doc
def broadcast_(tensor: torch.Tensor, src: int = 0, *, what: str = "broadcast") -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s, in place.

    Parameters
    ----------
    tensor : torch.Tensor of any shape
        Same shape and dtype on every rank.
    src : int, default=0
        Rank whose tensor is sent.
    {what}

    {returns_tensor_itself}
    """
    if world_size() > 1:
        traffic.add(tensor.numel() * tensor.element_size())
        _collective(what, lambda: tdist.broadcast(tensor, src))
    return tensor


@_fill_doc
def broadcast_object(obj: Any, src: int = 0, *, what: str = "broadcast_object") -> Any:
    """Rank ``src``'s ``obj`` (picklable; our own processes only) on every rank.

    Parameters
    ----------
    obj : Any
        The object on rank ``src`` (ignored elsewhere).
    src : int, default=0
        Rank whose object is sent.
    {what}

    Returns
    -------
    Any
        Rank ``src``'s object.
    """
    if world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    traffic.add(len(pickle.dumps(obj)) if rank() == src else 0)
    _collective(what, lambda: tdist.broadcast_object_list(box, src))
    return box[0]


@_fill_doc
def all_gather_object(obj: Any, *, what: str = "all_gather_object") -> list[Any]:
    """Every rank's ``obj`` (picklable; our own processes only), in rank order.

    Parameters
    ----------
    obj : Any
        This rank's object.
    {what}

    Returns
    -------
    list
        One object per rank.
    """
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    traffic.add(len(pickle.dumps(obj)) * (world_size() - 1))
    _collective(what, lambda: tdist.all_gather_object(out, obj))
    return out


@_fill_doc
def any_rank(flag: bool, *, what: str = "any_rank") -> bool:
    """Whether ``flag`` is true on at least one rank (the same answer on every rank).

    Parameters
    ----------
    flag : bool
        This rank's flag.
    {what}

    Returns
    -------
    bool
    """
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device())
    return bool(all_reduce_(t, what=what)[0] > 0)


@_fill_doc
def barrier(*, what: str = "barrier") -> None:
    """Wait for every rank (within the collective timeout).

    Parameters
    ----------
    {what}
    """
    # a tiny all-reduce rather than tdist.barrier(): the same timeout on every backend
    any_rank(False, what=what)


def on_main(write: Callable[..., None]) -> Callable[..., None]:
    """``write`` (a checkpoint or figure writer) run by rank 0 alone, every rank then waiting
    until it is done, so that what it wrote can be read by all (e.g. on resume).

    Parameters
    ----------
    write : callable
        The writer; its return value is dropped.

    Returns
    -------
    callable
        A function with ``write``'s arguments, to be called on every rank.
    """

    def call(*args: Any, **kwargs: Any) -> None:
        if is_main():
            write(*args, **kwargs)
        barrier(what=f"while rank 0 ran {getattr(write, '__name__', 'a writer')}")

    return call


# --------------------------------------------------------------------------- gradients
def data_parallel(module: torch.nn.Module, *, find_unused_parameters: bool = False
                  ) -> torch.nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` when there is more than one process
    (its gradients are then averaged over the processes in ``backward``), else ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        On this process's device (:func:`device`); training must call it (its ``forward``).
    find_unused_parameters : bool, default=False
        Let some parameters get no gradient in a step (e.g. a VAE's pixel-noise scale under a
        Bernoulli likelihood); costs a graph traversal per step.

    Returns
    -------
    torch.nn.Module
    """
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [module_device.index] if (module_device := next(
        (p.device for p in module.parameters()), torch.device("cpu"))).type == "cuda" else None
    # our models' buffers are the same on every rank already: no broadcast before each forward
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                   find_unused_parameters=find_unused_parameters)


def global_mean(local_sum: torch.Tensor, n_global: int) -> torch.Tensor:
    """The loss to backpropagate so that the gradient ``DistributedDataParallel`` averages is
    the gradient of the mean over the whole global batch, however it is split.

    Parameters
    ----------
    local_sum : torch.Tensor of shape ()
        This process's per-sample losses summed.
    n_global : int
        Number of samples in the global batch.

    Returns
    -------
    torch.Tensor of shape ()
        ``local_sum * world_size() / n_global`` (``local_sum / n_global`` with one process).
    """
    return local_sum * (world_size() / n_global)


# --------------------------------------------------------------------------- sharding
@_fill_doc
def shard_bounds(n: int, rank_: int | None = None, world: int | None = None
                 ) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank_``'s contiguous share of ``n`` items: shares differ by
    at most one item, the first ``n % world`` ranks get the larger ones, and together they
    cover ``0..n-1`` once, in order.

    Parameters
    ----------
    n : int
        Number of items.
    {rank_world}

    Returns
    -------
    tuple of int
        ``(start, stop)``.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"rank must be in [0, {w}), got {r}")
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


@_fill_doc
def shard(indices: torch.Tensor, rank_: int | None = None, world: int | None = None
          ) -> torch.Tensor:
    """This rank's contiguous share of ``indices`` (see :func:`shard_bounds`); concatenating the
    shares of ranks ``0..world-1`` gives ``indices`` back.

    Parameters
    ----------
    indices : torch.Tensor of shape (n, ...)
        Items to share out along dim 0.
    {rank_world}

    Returns
    -------
    torch.Tensor of shape (stop - start, ...)
        A view of ``indices``.
    """
    start, stop = shard_bounds(indices.shape[0], rank_, world)
    return indices[start:stop]


__all__ = [
    "DistributedError",
    "all_gather_cat",
    "all_gather_object",
    "all_reduce_",
    "all_reduce_dict_",
    "all_reduce_floats",
    "any_rank",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "data_parallel",
    "device",
    "global_mean",
    "init_distributed",
    "is_initialized",
    "is_main",
    "on_main",
    "process_group",
    "rank",
    "shard",
    "shard_bounds",
    "shutdown",
    "timeout_seconds",
    "traffic",
    "world_size",
]
