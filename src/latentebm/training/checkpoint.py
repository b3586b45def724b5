"""The one checkpoint format: safetensors with JSON metadata, written atomically.

A file holds

- ``model.*`` tensors and the ``model`` skeleton: the model's ``state_dict()`` (its training
  counters and history ride along as the module's extra state), through :mod:`.flatten`;
- ``config``: the model's config dataclass as JSON (its constructor arguments) and ``kind``;
- for a training checkpoint, ``training``: the position ``(epoch, batch)`` to continue from, the
  ``fit`` arguments a resumed run must repeat, the optimizer's and lr scheduler's
  ``state_dict()`` (``optimizer.*``, ``scheduler.*`` tensors plus skeletons) and named extra
  tensors (``extra.*``, e.g. warm-start codes).

The writer refuses non-finite tensors, so a diverged run never overwrites a good file; it writes
to a temporary name and renames, with a SHA-256 of the tensors (``sha256``) and one of the
other metadata (``sha256_metadata``) that the loader checks, since safetensors checks neither
the data nor the meaning of the header. :func:`read_checkpoint` is the one
loader: a file it cannot use raises :class:`CheckpointError` saying ``checkpoint PATH is
damaged: <what>`` (or that it comes from an older, incompatible latentebm, or holds another kind
of model). Nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_path, json_digest
from .flatten import SkeletonError, flatten, unflatten

FORMAT = "latentebm-checkpoint-2"
#: formats written by earlier releases, which this version cannot read
OLD_FORMATS = {"latentebm-checkpoint-1": "0.1.0"}
#: the largest JSON header a checkpoint may have (guards against reading garbage lengths)
MAX_HEADER = 1 << 30


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, foreign, or from an incompatible version."""


@dataclass
class TrainingState:
    """Where a run stands, as a checkpoint holds it.

    Parameters
    ----------
    position : tuple[int, int]
        ``(epoch, batch)`` of the next step.
    fit : dict
        The ``fit`` arguments a resumed run must repeat (JSON values).
    optimizer, scheduler : dict or None
        ``state_dict()`` of the optimizer and of the lr scheduler.
    extra : dict[str, torch.Tensor]
        Other tensors the run needs, e.g. warm-start codes ``(n_samples, *code_shape)``.
    """

    position: tuple[int, int]
    fit: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` returns: ``config`` as a JSON dict, the model's
    ``state_dict`` (tensors on the requested device) and the :class:`TrainingState` or
    ``None`` for a finished model."""

    path: Path
    kind: str
    config: dict[str, Any]
    state_dict: dict[str, Any]
    training: TrainingState | None

    def damaged(self, what: str) -> CheckpointError:
        """The error for this file, saying what is wrong with it.

        Parameters
        ----------
        what : str
            What is wrong.

        Returns
        -------
        CheckpointError
            The error (returned, not raised).
        """
        return CheckpointError(f"checkpoint {self.path} is damaged: {what}")


def _version() -> str:
    try:
        return metadata.version("latentebm")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, Any],
    training: TrainingState | None = None,
) -> Path:
    """Write one checkpoint atomically; refuse it if any tensor is NaN or infinite.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` file (replaced only once the new one is complete).
    kind : str
        The model kind (``"sparse_coding"``, ...), checked by the loader.
    config : dict
        The model's constructor arguments (JSON values).
    state_dict : dict
        ``model.state_dict()``.
    training : TrainingState, optional
        The run's state, for a checkpoint that ``fit(resume=True)`` continues from.

    Raises
    ------
    FloatingPointError
        A tensor holds NaN or inf; nothing is written and an existing file is left intact.
    OSError
        The write failed (a full disk, say); an existing file is left intact and the message
        says so.
    """
    skeleton, tensors = flatten(dict(state_dict), "model")
    meta = {"format": FORMAT, "kind": kind, "latentebm": _version(),
            "config": json.dumps(config, sort_keys=True), "model": json.dumps(skeleton)}
    if training is not None:
        opt_skel, opt_tensors = flatten(training.optimizer, "optimizer")
        sched_skel, sched_tensors = flatten(training.scheduler, "scheduler")
        extra = {f"extra.{k}": v.detach() for k, v in training.extra.items()}
        tensors.update({**opt_tensors, **sched_tensors, **extra})
        meta["training"] = json.dumps({
            "position": list(training.position), "fit": training.fit,
            "optimizer": opt_skel, "scheduler": sched_skel, "extra": sorted(training.extra),
        }, sort_keys=True)
    bad = _non_finite(tensors)
    if bad is not None:
        raise FloatingPointError(
            f"refusing to write checkpoint {path}: tensor {bad!r} holds NaN or inf values"
            + (" (the existing file is left intact)" if os.path.exists(path) else "")
        )
    payload = {name: t.to("cpu").contiguous() for name, t in tensors.items()}
    meta["sha256"] = tensor_digest(payload)
    meta["sha256_metadata"] = metadata_digest(meta)
    try:
        with atomic_path(path, ".safetensors") as tmp:
            save_file(payload, str(tmp), metadata=meta)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own
        kept = ("the previous checkpoint there is intact" if os.path.exists(path)
                else "no checkpoint was written")
        reason = getattr(exc, "strerror", None) or exc
        raise OSError(getattr(exc, "errno", None) or errno.EIO,
                      f"could not write checkpoint {path} ({reason}); {kept}") from exc
    return Path(path)


def metadata_digest(meta: dict[str, str]) -> str:
    """SHA-256 of the metadata entries (the tensors' digest among them) but its own: a flipped
    bit in the configuration, the training position or the fit settings is named as damage.

    Parameters
    ----------
    meta : dict of str to str
        The safetensors header's metadata.

    Returns
    -------
    str
        The hex digest.
    """
    return json_digest(meta, excluding="sha256_metadata")


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order: a flipped bit in
    the data (which safetensors itself does not check) changes it.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor
        Any shapes, dtypes and devices (hashed on the CPU).

    Returns
    -------
    str
        The hex digest.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu")
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.reshape(-1)
        if flat.numel() and flat.stride(0) != 1:  # an expanded one-element tensor: stride 0
            flat = flat.clone(memory_format=torch.contiguous_format)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor with a NaN or inf entry, or ``None``."""
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and t.numel() \
                and not bool(torch.isfinite(t).all()):
            return name
    return None


def read_checkpoint(
    path: str | os.PathLike, *, kind: str | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint`.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` file.
    kind : str, optional
        The model kind the caller expects.
    device : str or torch.device
        Where the tensors are loaded.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        ``checkpoint PATH is damaged: <what>`` for an unreadable header or tensor data, bad
        JSON, a missing tensor or a NaN/inf tensor; a file from latentebm 0.1.0, or one that
        holds a model of another kind, is named as such.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")

    def damaged(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is damaged: {what}")

    meta = _header_metadata(path, damaged)
    fmt = meta.get("format")
    if fmt in OLD_FORMATS:
        raise CheckpointError(
            f"checkpoint {path} was written by latentebm {OLD_FORMATS[fmt]} (format {fmt!r}), "
            f"an older version whose checkpoints this one ({FORMAT!r}) cannot read; "
            "train the model again with this version"
        )
    if fmt != FORMAT:
        raise damaged(f"not a latentebm checkpoint (format {fmt!r}, expected {FORMAT!r})")
    if "sha256_metadata" in meta and meta["sha256_metadata"] != metadata_digest(meta):
        raise damaged("its metadata (configuration, training position, settings) do not match "
                      "the checksum written with them (the file was altered or corrupted after "
                      "it was saved)")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {path} holds a {meta.get('kind')!r} model, not a {kind!r} one: load it "
            "with the model class that wrote it")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise damaged(f"its tensor data cannot be read ({exc})") from exc
    if "sha256" in meta and meta["sha256"] != tensor_digest(tensors):  # files of 0.2.0 before it
        raise damaged("its tensor data do not match the checksum written with them (the file "
                      "was altered or corrupted after it was saved)")
    bad = _non_finite(tensors)
    if bad is not None:
        raise damaged(f"tensor {bad!r} holds NaN or inf values")
    config = _json(meta, "config", damaged, want=dict)
    try:
        state = unflatten(_json(meta, "model", damaged, want=dict), tensors)
        training = None
        if "training" in meta:
            t = _json(meta, "training", damaged, want=dict)
            missing = [k for k in ("position", "fit", "optimizer", "scheduler", "extra")
                       if k not in t]
            if missing:
                raise damaged(f"its training state lacks {missing}")
            extra = {}
            for name in t["extra"]:
                if f"extra.{name}" not in tensors:
                    raise SkeletonError(f"tensor 'extra.{name}' is missing")
                extra[name] = tensors[f"extra.{name}"]
            position = t["position"]
            if not (isinstance(position, list) and len(position) == 2
                    and all(isinstance(p, int) and p >= 0 for p in position)):
                raise damaged(f"its training position {position!r} is not (epoch, batch)")
            training = TrainingState((position[0], position[1]), t["fit"],
                                     unflatten(t["optimizer"], tensors),
                                     unflatten(t["scheduler"], tensors), extra)
    except SkeletonError as exc:
        raise damaged(str(exc)) from exc
    if not isinstance(state, dict):
        raise damaged("its model state is not a dict of tensors")
    return Checkpoint(path, str(meta["kind"]), config, state, training)


def check_same_settings(path: str | os.PathLike, saved: dict[str, Any], now: dict[str, Any]
                        ) -> None:
    """Raise ``ValueError`` listing every setting in ``now`` that the checkpoint holds with
    another value: a run resumes only as it began.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint's path (for the message).
    saved : dict
        The settings stored in the checkpoint.
    now : dict
        The settings of this run; a key missing from ``saved`` counts as different.
    """
    diffs = [f"{k}: checkpoint has {saved.get(k, '(unset)')!r}, now {v!r}"
             for k, v in now.items() if saved.get(k, "(unset)") != v]
    if diffs:
        raise ValueError(f"checkpoint {path} is from another configuration ("
                         + "; ".join(diffs) + ")")


def _header_metadata(path: Path, damaged) -> dict[str, str]:
    """The safetensors header's ``__metadata__``, read without loading the tensors."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < size <= min(MAX_HEADER, path.stat().st_size - 8):
                raise damaged("not a safetensors file (bad header length)")
            header = json.loads(fh.read(size))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(f"not a safetensors file ({exc})") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise damaged("it has no latentebm metadata")
    return meta


def _json(meta: dict[str, str], key: str, damaged, *, want: type) -> Any:
    if key not in meta:
        raise damaged(f"its metadata lacks {key!r}")
    try:
        value = json.loads(meta[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise damaged(f"its metadata {key!r} is not valid JSON ({exc})") from exc
    if not isinstance(value, want):
        raise damaged(f"its metadata {key!r} is not a JSON {want.__name__}")
    return value


__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "TrainingState", "check_same_settings",
           "metadata_digest", "read_checkpoint", "tensor_digest", "write_checkpoint"]
