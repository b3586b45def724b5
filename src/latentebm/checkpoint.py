"""Checkpoints: tensors in safetensors, the configuration as JSON in its metadata.

Writes are atomic (temporary file, then ``os.replace``), so an interrupted save never leaves a
half-written checkpoint; loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._io import atomic_path

FORMAT = "latentebm-checkpoint-1"


def save_checkpoint(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any], kind: str
) -> Path:
    """Save ``tensors`` (moved to CPU, made contiguous) with ``config`` and the model ``kind``."""
    payload = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    metadata = {"format": FORMAT, "kind": kind, "config": json.dumps(config, sort_keys=True)}
    with atomic_path(path, ".safetensors") as tmp:
        save_file(payload, str(tmp), metadata=metadata)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike, *, kind: str | None = None, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(tensors, config)``; a missing, corrupt or foreign file raises a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(str(path), device=str(device))
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {path} is corrupt or not a safetensors file: {exc}") from exc
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} was not written by latentebm")
    if kind is not None and metadata.get("kind") != kind:
        raise ValueError(
            f"checkpoint {path} holds a {metadata.get('kind')!r} model, expected {kind!r}"
        )
    return tensors, json.loads(metadata["config"])


def check_config_matches(saved: dict[str, Any], current: dict[str, Any], keys: list[str]) -> None:
    """Raise ``ValueError`` naming every key in ``keys`` whose saved value differs."""
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise ValueError("checkpoint is from another configuration (" + "; ".join(diffs) + ")")
