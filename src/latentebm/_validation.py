"""Input validation shared by every public entry point.

Each check raises ``ValueError`` or ``TypeError`` whose message names the offending argument.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float64)


def is_numpy_like(x: Any) -> bool:
    """True for inputs that should come back as NumPy arrays (anything that is not a tensor)."""
    return not isinstance(x, torch.Tensor)


def as_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_empty: bool = False,
    finite: bool = True,
) -> torch.Tensor:
    """Convert ``x`` to a floating tensor and check rank, emptiness and finiteness.

    NumPy input of an integer or boolean type becomes float32 (float64 stays float64);
    a torch tensor must already be float32 or float64 (no silent casts of tensors).
    """
    if isinstance(x, torch.Tensor):
        t = x
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 tensor, got dtype {t.dtype}")
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad argument
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
        if arr.dtype != np.float64:
            arr = arr.astype(np.float32)
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:
            arr = arr.copy()  # torch cannot wrap read-only memory (e.g. a memmap)
        t = torch.from_numpy(arr)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if finite and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def check_same_device_dtype(reference: torch.Tensor, ref_name: str, **others: torch.Tensor) -> None:
    """Every tensor in ``others`` must share ``reference``'s device and dtype."""
    for name, t in others.items():
        if t.device != reference.device:
            raise ValueError(
                f"{name} is on {t.device} but {ref_name} is on {reference.device}; "
                "move them to the same device"
            )
        if t.dtype != reference.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {ref_name} has dtype {reference.dtype}; "
                "use one precision for both"
            )


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
) -> float:
    """A finite real number within the given bounds, returned as float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None) -> int:
    """An integer (not bool) no smaller than ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_lam(lam: Any, name: str = "lam") -> float:
    """The regularisation strength: a finite number >= 0."""
    return check_scalar(lam, name, low=0.0)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Parse a device string; ``None`` means CPU. A CUDA request without CUDA is an error."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a valid torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was requested but MPS is not available here")
    return dev
