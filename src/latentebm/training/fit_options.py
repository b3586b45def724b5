"""The options every ``fit`` takes besides what it learns from: epochs, mini-batch size,
checkpointing, callback and progress bar.

:class:`FitOptions` carries them from the public ``fit`` to the training loop in one value.
:func:`with_fit_options` declares them once per ``fit``: their defaults, the keyword arguments
of its public signature and their docstring entries (the ``{fit_batches}`` and
``{fit_options}`` fragments of :mod:`latentebm._docs`) all come from the same numbers::

    @with_fit_options(epochs=10, batch_size=256, checkpoint_every=100)
    def fit(self, Y, *, lr=1e-3, options: FitOptions):
        options = options.checked(n)
        ...

is called as ``model.fit(Y, lr=..., epochs=..., batch_size=..., checkpoint=..., resume=...)``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from .._docs import doc_filler, fit_batches, fit_options
from .._validation import check_bool
from . import distributed
from .loop import check_loop_args, resuming

R = TypeVar("R")

#: the options placed first among a ``fit``'s keyword-only arguments; the others come last
_LEADING = ("epochs", "batch_size")


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How a ``fit`` runs.

    Attributes
    ----------
    epochs : int
        Number of epochs of the whole run (a resumed run continues up to it).
    batch_size : int
        Mini-batch size (the global one under ``torchrun``).
    checkpoint : str, os.PathLike or None
        The checkpoint path; ``None`` writes none.
    checkpoint_every : int
        Steps between checkpoints.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    callback : callable or None
        Called after every step (its arguments depend on the model).
    progress : bool
        Show a progress bar (rank 0 only).
    """

    epochs: int
    batch_size: int
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 100
    resume: bool = False
    callback: Callable[..., object] | None = None
    progress: bool = True

    def checked(self, n: int) -> FitOptions:
        """These options with ``epochs``, ``batch_size`` and ``checkpoint_every`` checked to be
        integers ≥ 1, ``batch_size`` clipped to the ``n`` training samples, and the callback,
        the checkpoint path and the flags of the right types.

        Parameters
        ----------
        n : int
            Number of training samples.

        Returns
        -------
        FitOptions
        """
        epochs, batch_size, every = check_loop_args(n, self.epochs, self.batch_size,
                                                    self.checkpoint_every)
        check_hooks(self.checkpoint, callback=self.callback)
        return dataclasses.replace(
            self, epochs=epochs, batch_size=batch_size, checkpoint_every=every,
            resume=check_bool(self.resume, "resume"),
            progress=check_bool(self.progress, "progress"))

    @property
    def resuming(self) -> bool:
        """Whether the run continues from ``checkpoint``: asked to, and the file exists."""
        return resuming(self.resume, self.checkpoint)


def check_hooks(checkpoint: Any, **callbacks: Any) -> None:
    """Refuse, before any training step, a ``checkpoint`` that is not a path (or None) and a
    callback that is not callable (or None), naming the argument.

    Parameters
    ----------
    checkpoint : str, os.PathLike or None
        The checkpoint argument of a ``fit``.
    **callbacks : callable or None
        The ``fit``'s callbacks by name.
    """
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
    # found out at the first save otherwise, after the first steps (rank 0 alone writes it)
    if checkpoint is not None and distributed.is_main():
        path = Path(checkpoint)
        if path.is_dir():
            raise ValueError(f"checkpoint {checkpoint} is a folder; give a file path")
        # missing folders are created at the first save; a file in their place cannot be
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ValueError(f"checkpoint {checkpoint}: {blocking} is a file, not a folder")
    for name, fn in callbacks.items():
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")


def with_fit_options(
    *,
    epochs: int,
    batch_size: int,
    checkpoint_every: int,
    n: str = "n_samples",
    epochs_note: str = "",
    batch: str = "Mini-batch",
    unit: str = "step",
    callback_args: str = "step, model",
    callback_note: str = "",
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a ``fit`` the keyword arguments of :class:`FitOptions`, with these defaults.

    The decorated function takes a keyword-only ``options`` (a :class:`FitOptions`) instead;
    the returned one takes the options' fields as keyword-only arguments (``epochs`` and
    ``batch_size`` first, the others last, as its signature shows) and fills the
    ``{fit_batches}`` and ``{fit_options}`` lines of its docstring (see
    :func:`latentebm._docs.fit_batches` and :func:`latentebm._docs.fit_options`, which take
    the other arguments).

    Parameters
    ----------
    epochs, batch_size, checkpoint_every : int
        The defaults of these options.
    n, epochs_note, batch : str
        As in :func:`latentebm._docs.fit_batches`.
    unit, callback_args, callback_note : str
        As in :func:`latentebm._docs.fit_options`.

    Returns
    -------
    callable
        The decorator.
    """
    defaults = FitOptions(epochs=epochs, batch_size=batch_size, checkpoint_every=checkpoint_every)
    fill = doc_filler({
        "fit_batches": fit_batches(epochs=epochs, batch_size=batch_size, n=n,
                                   epochs_note=epochs_note, batch=batch),
        "fit_options": fit_options(checkpoint_every=checkpoint_every, unit=unit,
                                   callback_args=callback_args, callback_note=callback_note),
    })
    names = [f.name for f in dataclasses.fields(FitOptions)]

    # typed ``(...) -> R`` for static checkers, which cannot see the keywords added here (the
    # runtime signature, shown by ``help`` and IDEs that inspect, has them all)
    def decorate(fit: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fit)
        @trains_with_gradients
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if "options" in kwargs:
                raise TypeError(f"{fit.__qualname__}() takes the fit options as keyword "
                                f"arguments ({', '.join(names)}), not as options=")
            given = {name: kwargs.pop(name) for name in names if name in kwargs}
            return fit(*args, **kwargs, options=dataclasses.replace(defaults, **given))

        wrapper.__signature__ = _public_signature(inspect.signature(fit), defaults)
        return fill(wrapper)

    return decorate


def trains_with_gradients(fit: Callable[..., R]) -> Callable[..., R]:
    """Run a model's ``fit`` with gradients on, even when called under ``torch.no_grad()``, and
    leave the model in the train or eval mode it had; refuse it under ``torch.inference_mode()``
    (whose tensors cannot join a graph) and for a model whose every parameter is frozen
    (nothing to train).

    Parameters
    ----------
    fit : callable
        A method whose first argument is the model (a ``torch.nn.Module``).

    Returns
    -------
    callable
        The wrapped method.
    """
    @functools.wraps(fit)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        name = type(model).__name__
        if torch.is_inference_mode_enabled():
            raise RuntimeError(f"{name}.fit trains with gradients, which "
                               "torch.inference_mode() forbids: call it outside that block")
        params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
        if params and not any(p.requires_grad for p in params):
            raise ValueError(f"every parameter of the {name} has requires_grad=False, so fit "
                             "has nothing to train; unfreeze the ones to learn")
        was_training = model.training if isinstance(model, torch.nn.Module) else None
        try:
            with torch.enable_grad():
                return fit(model, *args, **kwargs)
        finally:
            if was_training is not None:
                model.train(was_training)

    return wrapper


def _public_signature(sig: inspect.Signature, defaults: FitOptions) -> inspect.Signature:
    """``sig`` with its ``options`` argument replaced by the fields of ``defaults``."""
    own = [p for p in sig.parameters.values() if p.name != "options"]
    shared = {f.name: inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=getattr(defaults, f.name), annotation=f.type)
              for f in dataclasses.fields(FitOptions)}
    first = [shared.pop(name) for name in _LEADING]
    cut = next((i for i, p in enumerate(own) if p.kind is inspect.Parameter.KEYWORD_ONLY),
               len(own))
    return sig.replace(parameters=[*own[:cut], *first, *own[cut:], *shared.values()])


__all__ = ["FitOptions", "check_hooks", "trains_with_gradients", "with_fit_options"]
