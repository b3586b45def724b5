"""The one flattener: nested state (a model's ``state_dict``, an optimizer's or an lr scheduler's
``state_dict``) ↔ a flat ``{name: tensor}`` dict plus a JSON skeleton.

Tensors go to the flat dict under ``prefix.path.to.leaf`` and are replaced in the skeleton by
``{"__tensor__": name}``; dicts with keys that are not strings (an optimizer's per-parameter
state is keyed by integers) become ``{"__items__": [[key, value], ...]}``, tuples
``{"__tuple__": [...]}``; numbers, strings, booleans and ``None`` stay as they are. Nothing is
pickled, so reading a checkpoint never runs code from it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

TENSOR, ITEMS, TUPLE = "__tensor__", "__items__", "__tuple__"
_SCALARS = (str, int, float, bool, type(None))


class SkeletonError(ValueError):
    """The skeleton does not describe the flat tensors (a damaged file): the message says what."""


def flatten(state: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """``state`` as ``(skeleton, tensors)``; tensor names start with ``prefix + "."``.

    Parameters
    ----------
    state : nested dicts, lists and tuples of tensors and JSON scalars
        E.g. ``model.state_dict()`` or ``optimizer.state_dict()``.
    prefix : str
        The namespace of the tensors in the flat dict (``"model"``, ``"optimizer"``, ...).

    Returns
    -------
    skeleton : JSON-serialisable structure
    tensors : dict[str, torch.Tensor]
        Detached tensors, keyed ``prefix.path``.
    """
    tensors: dict[str, torch.Tensor] = {}
    return _flatten(state, prefix, tensors), tensors


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach()
        return {TENSOR: path}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not ({TENSOR, ITEMS, TUPLE} & set(value)):
            return {k: _flatten(v, f"{path}.{k}", tensors) for k, v in value.items()}
        return {ITEMS: [[_key(k, path), _flatten(v, f"{path}.{k}", tensors)]
                        for k, v in value.items()]}
    if isinstance(value, tuple):
        return {TUPLE: [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} at {path!r} in a checkpoint")


def _key(key: Any, path: str) -> Any:
    if isinstance(key, _SCALARS) and not (isinstance(key, float) and not math.isfinite(key)):
        return key
    raise TypeError(f"cannot store the dict key {key!r} at {path!r} in a checkpoint")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild what :func:`flatten` took apart; a missing tensor raises :class:`SkeletonError`.

    Parameters
    ----------
    skeleton : JSON structure
        As returned by :func:`flatten` (after a JSON round trip).
    tensors : dict[str, torch.Tensor]
        The flat tensors it refers to.
    """
    if isinstance(skeleton, dict):
        if TENSOR in skeleton:
            name = skeleton[TENSOR]
            if name not in tensors:
                raise SkeletonError(f"tensor {name!r} is missing")
            return tensors[name]
        if ITEMS in skeleton:
            return {_hashable(k): unflatten(v, tensors) for k, v in skeleton[ITEMS]}
        if TUPLE in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton[TUPLE])
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        raise SkeletonError(f"a dict key is a list ({key!r})")
    return key


__all__ = ["SkeletonError", "flatten", "unflatten"]
