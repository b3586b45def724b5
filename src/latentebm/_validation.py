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


def as_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    like: torch.Tensor | None = None,
    like_name: str = "the model",
    allow_empty: bool = False,
    finite: bool = True,
) -> torch.Tensor:
    """Convert ``x`` to a floating tensor and check it: type, device, rank, emptiness, values.

    The checks run in that order, so a tensor on the wrong device is named as such before
    any of its values is looked at.

    Parameters
    ----------
    x : array_like or torch.Tensor
        NumPy input of an integer or boolean type becomes float32 (float64 stays float64);
        a tensor must already be float32 or float64 (no silent casts of tensors).
    name : str
        The argument's name, used in every error message.
    ndim : int or tuple of int, optional
        Allowed ranks.
    dtype, device : optional
        Convert to this dtype / move to this device after the type checks.
    like : torch.Tensor, optional
        A reference (e.g. a model's weights): a tensor ``x`` must share its device and dtype
        (``ValueError`` / ``TypeError`` naming both); anything else is converted to them.
    like_name : str
        How errors call ``like``.
    allow_empty : bool
        Accept a tensor with no elements.
    finite : bool
        Reject NaN and infinite values (see :func:`check_finite`).

    Returns
    -------
    torch.Tensor
        ``x`` as a tensor (shares memory with ``x`` where no conversion was needed).
    """
    if isinstance(x, torch.Tensor):
        t = x
        if t.layout != torch.strided:
            raise TypeError(f"{name} must be a dense tensor, got layout {t.layout}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 tensor, got dtype {t.dtype}")
        if like is not None:
            check_same_device_dtype(like, like_name, **{name: t})
    else:
        t = _from_array(x, name)
        if like is not None:
            t = t.to(like.device, like.dtype)
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
    if finite:
        check_finite(t, name)
    return t


def _from_array(x: Any, name: str) -> torch.Tensor:
    """A CPU tensor from array-like ``x`` (integers and booleans become float32)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad argument
        raise TypeError(f"{name} must be array-like, of one shape, got {type(x).__name__} "
                        f"({exc})") from exc
    if arr.dtype == object or arr.dtype.kind in "mM" or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.dtype != np.float64:
        wide = np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 8
        with np.errstate(over="ignore"):  # an overflow becomes inf, reported as such below
            arr = arr.astype(np.float64 if wide else np.float32)
    arr = np.ascontiguousarray(arr).reshape(arr.shape)  # ascontiguousarray makes 0-d 1-d
    if not arr.flags.writeable:
        arr = arr.copy()  # torch cannot wrap read-only memory (e.g. a memmap)
    return torch.from_numpy(arr)


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``t`` holds NaN or infinite values.

    One host synchronisation: call it at a public entry point, never inside a loop. Works for
    every dtype (integer and boolean tensors are finite by construction) and device; a tensor
    on the ``meta`` device holds no values and is an error.

    Parameters
    ----------
    t : torch.Tensor, any shape
        The tensor to check.
    name : str
        The argument's name for the error message.
    """
    if t.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values")
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return
    # a NaN or an infinity anywhere makes the sum NaN or infinite, so a finite sum (one pass,
    # no mask allocated) settles it; a non-finite one may be an overflow of finite values
    if bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all()):
        return
    raise ValueError(f"{name} contains NaN or infinite values")


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


def check_choice(value: Any, name: str, choices: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``.

    Parameters
    ----------
    value : object
        The argument given.
    name : str
        Its name, for the message.
    choices : tuple
        The values it may take.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
) -> float:
    """A finite real number within the given bounds, returned as float."""
    if isinstance(value, np.ndarray) and value.ndim == 0:  # np.array(0.3), as a 0-d tensor is
        value = value[()]
    if isinstance(value, torch.Tensor) and value.dim() == 0:  # as NumPy: one number, no axes
        if value.device.type == "meta":
            raise ValueError(f"{name} is on the meta device and holds no value")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        shape = getattr(value, "shape", None)
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}"
                        + (f" of shape {tuple(shape)}" if shape is not None else ""))
    try:
        value = float(value)
    except OverflowError:  # an int beyond float64, e.g. 10**400
        raise ValueError(f"{name} must be finite, got an integer of {len(str(abs(value)))} "
                         "digits, beyond float64") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not bool) in ``[low, high]`` that fits in 64 bits, as torch needs.

    Parameters
    ----------
    value : int
        The value to check (NumPy integers accepted).
    name : str
        The argument's name for the error message.
    low, high : int, optional
        Inclusive bounds.

    Returns
    -------
    int
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must fit in a 64-bit integer, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A flag: ``True`` or ``False`` (NumPy booleans accepted); a string such as ``"no"``, whose
    truth value is ``True``, is refused rather than read as one."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


#: Seeds are integers in [0, MAX_SEED]: what NumPy, scikit-learn and torch all accept, with
#: room for the per-epoch seeds derived from them.
MAX_SEED = 2**32 - 1


def check_seed(seed: Any, name: str = "seed") -> int:
    """A random seed: an integer (not bool) in ``[0, MAX_SEED]``; see :func:`check_int`."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and (
        not 0 <= int(seed) <= MAX_SEED
    ):
        raise ValueError(f"{name} must be an integer in [0, 2**32 - 1], got {int(seed)}")
    return check_int(seed, name)


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
