"""What every model shares: its config dataclass, input checks at the public entry points, the
training state that rides in ``state_dict()``, and ``save``/``load``/resume over the one
checkpoint format (:mod:`latentebm.training.checkpoint`).

A model subclasses :class:`LatentModel` and declares

- ``KIND``: the name its checkpoints carry;
- ``Config``: a frozen dataclass (subclass of :class:`ModelConfig`) of its constructor
  arguments, the one source of them: ``model.config`` is built in ``__init__``, each field is
  readable as ``model.<field>``, and :meth:`LatentModel.from_config` rebuilds the model;
- ``TRAINING_STATE``: plain attributes (step counters, history, ...) that travel in the module's
  extra state, so ``state_dict()`` / ``load_state_dict()`` round-trip them.

Conventions every model follows (see the README's "Errors and recovery"):

- ``encode(Y)`` returns a :class:`~latentebm.solvers.SolverResult`: ``z`` the codes
  ``(batch, *code_shape)`` and, where the model computes them, ``energy`` ``(batch,)``, ``gap``
  (a certified duality gap), ``converged``, ``n_iter_per_sample`` and ``n_iter``; fields the
  model does not compute are ``None`` (a feed-forward encoder: :func:`codes_only`). NumPy in,
  NumPy out.
- Public entry points (``fit``, ``encode``, ``decode``, ``energy``, ...) validate their input
  once (device first, then dtype, rank, shape, finiteness); ``forward`` never validates and
  never synchronises with the host, and training steps go through ``forward`` so that a model
  wrapped in ``DistributedDataParallel`` synchronises its gradients.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .._docs import DOCS
from .._validation import as_tensor, check_bool, check_seed, resolve_device
from ..data.image_shards import ShardedImages
from ..data.streaming import ShardedArray
from ..problem import check_signal_scale
from ..solvers import SolverResult
from ..training import distributed as dist
from ..training.checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainingState,
    check_same_settings,
    read_checkpoint,
    write_checkpoint,
)
from ..training.extra_state import TrainingAttributes
from ..training.fit_options import FitOptions
from ..training.loop import MinibatchLoop

DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: the docstring entries of the constructor arguments a model ends with, for :func:`doc_filler`
MODEL_DOCS = {"model_seed_device_dtype": "\n".join([
    "seed : int, default=0\n    Seed of the initial weights (and of atoms drawn from the data) "
    "and of the epoch\n    order.",
    DOCS["model_device"], DOCS["model_dtype"]])}


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` or ``"float64"``; any other dtype is a ``TypeError`` naming ``dtype``."""
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base of the models' config dataclasses: JSON in and out, and the two fields every model
    has (keyword-only, so they follow each model's own fields).

    Attributes
    ----------
    seed : int
        Seeds the model's initial weights (and its epoch order in ``fit``).
    dtype : str
        ``"float32"`` or ``"float64"``.
    """

    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        """The seed is in ``[0, 2**32 - 1]``, fields typed ``bool`` hold booleans (``"no"`` is
        truthy) and ``dtype`` is a known name: checked here once for every model, whether built
        by hand or from a checkpoint."""
        object.__setattr__(self, "seed", check_seed(self.seed))  # NumPy integers become int
        for f in dataclasses.fields(self):
            if f.type in ("bool", bool):
                check_bool(getattr(self, f.name), f.name)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any], ckpt: Checkpoint) -> ModelConfig:
        """The config a checkpoint holds; a missing or unknown key names the file as damaged."""
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ckpt.damaged(f"its config lacks {missing}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ckpt.damaged(f"its config has unknown keys {unknown}")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise ckpt.damaged(f"its config is invalid ({exc})") from exc


@dataclasses.dataclass(frozen=True)
class DenseLassoConfig(ModelConfig):
    """Base of the configs of the models built on a dense dictionary ``W``
    ``(n_features, n_atoms)`` and the Lasso energy ``½‖y − Wz‖² + λ‖z‖₁``: the fields they
    all start with.

    Attributes
    ----------
    n_features : int
        Signal size.
    n_atoms : int
        Number of atoms.
    lam : float
        λ ≥ 0.
    """

    n_features: int
    n_atoms: int
    lam: float


def finite_result(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` ``(batch, ...)`` itself, or a ``FloatingPointError`` when some sample's values
    overflowed the dtype (finite inputs whose products or squares do not fit)."""
    finite = torch.isfinite(t).flatten(1).all(1) if t.dim() > 1 else torch.isfinite(t)
    if not bool(finite.all()):
        raise FloatingPointError(
            f"the {what} of {int((~finite).sum())} sample(s) overflow "
            f"{str(t.dtype).replace('torch.', '')}: the codes or signals are too large for "
            "it; rescale them, or use a float64 model")
    return t


def codes_only(z: Any, n_iter: int | None = None) -> SolverResult:
    """The :class:`SolverResult` of a feed-forward encoder: codes ``z`` ``(batch, ...)`` and
    nothing it does not compute (``n_iter``: its number of steps, if any). Non-finite codes
    are a ``FloatingPointError``, never a result."""
    finite = torch.isfinite(torch.as_tensor(z)).flatten(1).all(1)
    if not bool(finite.all()):
        raise FloatingPointError(
            f"the encoder's codes of {int((~finite).sum())} sample(s) are not finite: its "
            "weights hold NaN or inf, or a step (e.g. 1/lipschitz) or the signals' scale "
            "overflows the precision")
    return SolverResult(z=z, gap=None, energy=None, converged=None, n_iter_per_sample=None,
                        n_iter=n_iter, method="encoder")


class LatentModel(TrainingAttributes, nn.Module):
    """Base class of the library's models (see the module docstring for the contract)."""

    KIND: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: plain attributes saved in ``state_dict()`` as the module's extra state
    TRAINING_STATE: ClassVar[tuple[str, ...]] = ("n_steps_", "history_")
    #: buffers a model is built from and never trains (LISTA's dictionary): resuming a fit
    #: from a checkpoint that holds other values is refused
    RESUME_SAME_BUFFERS: ClassVar[tuple[str, ...]] = ()

    config: ModelConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if dataclasses.is_dataclass(cls.Config):
            for f in dataclasses.fields(cls.Config):
                if not hasattr(cls, f.name):
                    setattr(cls, f.name, property(_config_getter(f.name),
                                                  doc=f"``config.{f.name}`` (read-only)."))

    # ----------------------------------------------------------------- device and dtype
    def reference(self) -> torch.Tensor:
        """A tensor that carries the model's device and dtype (its first floating tensor)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            if t.is_floating_point():
                return t
        raise RuntimeError(f"{type(self).__name__} has no floating-point tensor")

    @property
    def device(self) -> torch.device:
        return self.reference().device

    @property
    def dtype(self) -> torch.dtype:
        return self.reference().dtype

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> LatentModel:
        """``nn.Module``'s conversion (``.double()``, ``.to(dtype)``), keeping ``config.dtype``
        the model's own, so a saved model reloads in the precision it was used in; a
        conversion to another floating dtype (``.half()``) is refused before it happens."""
        probe = fn(torch.empty(0, dtype=self.reference().dtype))
        if probe.is_floating_point() and probe.dtype not in DTYPES.values():
            raise TypeError(f"{type(self).__name__} runs in float32 or float64, not "
                            f"{str(probe.dtype).replace('torch.', '')}")
        out = super()._apply(fn, *args, **kwargs)
        config = getattr(self, "config", None)
        if dataclasses.is_dataclass(config) and hasattr(config, "dtype"):
            dtype = self.reference().dtype
            if dtype in DTYPES.values() and config.dtype != dtype_name(dtype):
                self.config = dataclasses.replace(config, dtype=dtype_name(dtype))
        return out

    # ----------------------------------------------------------------- input checks
    def check_input(self, x: Any, name: str, *, ndim: int | tuple[int, ...] | None = None,
                    signals: bool = False) -> tuple[torch.Tensor, bool]:
        """``x`` as a validated tensor on the model's device and dtype, and whether results go
        back as NumPy. A tensor must already be on the model's device (checked before its
        values) and of its dtype; anything else is converted. Finite, non-empty, rank ``ndim``;
        with ``signals``, signals whose energies the model computes, so their squared norms
        must neither underflow nor overflow the dtype
        (:func:`~latentebm.problem.check_signal_scale`). A sharded dataset on disk is refused
        (reading it whole here would defeat it).
        """
        if isinstance(x, ShardedArray | ShardedImages):
            raise TypeError(
                f"{name} is a {type(x).__name__} of shape {tuple(x.shape)}, which "
                f"{type(self).__name__} does not stream (SparseCoding.fit streams a ShardedArray, "
                f"ConvDictionaryLearning.fit a ShardedImages); pass the data in memory, "
                f"{name}[:], instead"
            )
        ref = self.reference()
        if isinstance(x, torch.Tensor):
            if x.device != ref.device:
                raise ValueError(f"{name} is on {x.device} but the model is on {ref.device}")
            if x.is_floating_point() and x.dtype != ref.dtype:
                raise TypeError(f"{name} has dtype {x.dtype} but the model uses {ref.dtype}")
            checked, numpy_out = as_tensor(x, name, ndim=ndim), False
        else:
            t = as_tensor(x, name, ndim=ndim)
            checked, numpy_out = t.to(ref.device, ref.dtype), True
            if checked.dtype != t.dtype and not bool(torch.isfinite(checked).all()):
                raise ValueError(
                    f"{name} holds values beyond the range of "
                    f"{str(ref.dtype).replace('torch.', '')}, the model's dtype (largest "
                    f"magnitude {float(t.abs().max()):.3g}); rescale it, or use a float64 model")
        if signals:
            check_signal_scale(checked)
        return checked, numpy_out

    # ----------------------------------------------------------------- checkpoints
    @classmethod
    def from_config(cls, config: ModelConfig, *, device: str | torch.device | None = None
                    ) -> LatentModel:
        """A fresh model built from ``config`` (weights as the constructor draws them)."""
        kwargs = dict(dataclasses.asdict(config))
        if "dtype" in kwargs:
            kwargs["dtype"] = DTYPES[kwargs["dtype"]]
        return cls(**kwargs, device=device)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model (config, weights, training counters and history) to a safetensors
        file, atomically; reload it with :meth:`load`.

        Parameters
        ----------
        path : str or os.PathLike
            The file (its folder must exist).
        """
        write_checkpoint(path, kind=self.KIND, config=self.config.to_json(),
                         state_dict=self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None
             ) -> LatentModel:
        """A model saved by :meth:`save` or by a ``fit`` checkpoint.

        Parameters
        ----------
        path : str or os.PathLike
            The safetensors file.
        device : str or torch.device or None
            Where to load it (default: the CPU).

        Returns
        -------
        LatentModel
            A model of this class, in the dtype it was saved in.

        Raises
        ------
        CheckpointError
            A ``ValueError`` saying ``checkpoint PATH is damaged: <what>`` when the file cannot
            be used (``FileNotFoundError`` when it is missing).
        """
        if device is not None:
            device = resolve_device(device)  # a bad device is the caller's, not the file's
        ckpt = read_checkpoint(path, kind=cls.KIND)
        config = cls.Config.from_json(ckpt.config, ckpt)
        try:
            model = cls.from_config(config, device=device)
        except (TypeError, ValueError) as exc:
            raise ckpt.damaged(f"its config is invalid ({exc})") from exc
        model.load_checkpoint_state(ckpt)
        return model

    def load_checkpoint_state(self, ckpt: Checkpoint) -> None:
        """Copy a checkpoint's model state into this model; a missing, extra or reshaped
        tensor names the file as damaged."""
        own = self.state_dict()
        theirs = ckpt.state_dict
        missing = sorted(set(own) - set(theirs))
        unexpected = sorted(set(theirs) - set(own))
        if missing or unexpected:
            raise ckpt.damaged(f"its model state lacks {missing} / has unexpected {unexpected}")
        for name, t in own.items():
            if isinstance(t, torch.Tensor):
                other = theirs[name]
                if not isinstance(other, torch.Tensor) or other.shape != t.shape:
                    shape = tuple(other.shape) if isinstance(other, torch.Tensor) else other
                    raise ckpt.damaged(f"tensor {name!r} has shape {shape} but its config "
                                       f"implies {tuple(t.shape)}")
        try:
            self.load_state_dict(theirs)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ckpt.damaged(f"its model state does not load ({exc})") from exc

    def write_training_checkpoint(
        self,
        path: str | os.PathLike,
        fit: dict[str, Any],
        position: tuple[int, int],
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        extra: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """A checkpoint that ``fit(resume=True)`` continues from (see :meth:`resume_from`)."""
        state = TrainingState(
            position=tuple(position), fit=fit,
            optimizer=None if optimizer is None else optimizer.state_dict(),
            scheduler=None if scheduler is None else scheduler.state_dict(),
            extra=dict(extra or {}),
        )
        write_checkpoint(path, kind=self.KIND, config=self.config.to_json(),
                         state_dict=self.state_dict(), training=state)

    def training_loop(
        self,
        n: int,
        options: FitOptions,
        *,
        start: tuple[int, int],
        fit_args: dict[str, Any],
        desc: str,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        extra: Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> MinibatchLoop:
        """The :class:`~latentebm.training.loop.MinibatchLoop` of a ``fit`` over ``n`` samples:
        epoch order from the model's seed, the model's weights and ``optimizer`` watched for
        divergence, a progress bar on rank 0 only (when ``options.progress``), the callback
        called as ``callback(count, model)`` unless a step passes other arguments, and
        checkpoints written by rank 0 alone with :meth:`write_training_checkpoint`.

        Parameters
        ----------
        n : int
            Number of training samples.
        options : FitOptions
            The ``fit``'s options, already checked (:meth:`FitOptions.checked
            <latentebm.training.fit_options.FitOptions.checked>`).
        start : tuple of int
            ``(epoch, batch)`` to start from (a resumed run's position).
        fit_args : dict
            The ``fit`` arguments a resumed run must repeat (see :meth:`resume_from`).
        desc : str
            Label of the progress bar.
        optimizer, scheduler : optional
            Saved with the checkpoint; the optimizer is checked for NaN/inf, the scheduler
            stepped after every step.
        extra : mapping of str to torch.Tensor, callable or None, default=None
            Extra tensors of the checkpoint, or a callable that returns them at every save.

        Returns
        -------
        MinibatchLoop
        """
        checkpoint = options.checkpoint

        @dist.on_main
        def save(epoch: int, batch: int) -> None:
            tensors = extra() if callable(extra) else extra
            self.write_training_checkpoint(checkpoint, fit_args, (epoch, batch),
                                           optimizer=optimizer, scheduler=scheduler,
                                           extra=tensors)

        return MinibatchLoop(
            n, options.batch_size, options.epochs, seed=self.seed, device=self.device,
            start=start, checkpoint=checkpoint, save=save,
            checkpoint_every=options.checkpoint_every, watch=self, optimizer=optimizer,
            scheduler=scheduler, callback=options.callback, desc=desc,
            progress=options.progress and dist.is_main(),
        )

    def resume_from(
        self,
        path: str | os.PathLike,
        fit: dict[str, Any],
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> TrainingState:
        """Load a training checkpoint into this model (and ``optimizer``, ``scheduler``) and
        return its :class:`TrainingState` (position, extra tensors on the model's device).

        The checkpoint must come from a model with the same config and a ``fit`` with the same
        arguments ``fit`` (a ``ValueError`` lists every difference).
        """
        ckpt = read_checkpoint(path, kind=self.KIND)
        if ckpt.training is None:  # before the settings, which only a training state has
            raise ValueError(f"checkpoint {path} holds a finished model (written by save()), "
                             "not a training state: resume from the file fit(checkpoint=...) "
                             "writes, or load this one with load()")
        check_same_settings(path, {**ckpt.config, **ckpt.training.fit},
                            {**self.config.to_json(), **fit})
        for name in self.RESUME_SAME_BUFFERS:  # what the model was built from, not trained
            own, theirs = getattr(self, name), ckpt.state_dict.get(name)
            if not (isinstance(theirs, torch.Tensor) and theirs.shape == own.shape
                    and torch.equal(theirs.to(own.device, own.dtype), own)):
                raise ValueError(f"checkpoint {path} is from another configuration (its {name} "
                                 f"differs from this model's): a run resumes only as it began")
        self.load_checkpoint_state(ckpt)
        try:
            if optimizer is not None:
                optimizer.load_state_dict(ckpt.training.optimizer)
            if scheduler is not None:
                scheduler.load_state_dict(ckpt.training.scheduler)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path} is damaged: its optimizer or scheduler "
                                  f"state does not load ({exc})") from exc
        ref = self.reference()
        state = ckpt.training
        state.extra = {k: v.to(ref.device) for k, v in state.extra.items()}
        return state


def _config_getter(name: str):
    def get(self: LatentModel) -> Any:
        return getattr(self.config, name)

    return get


__all__ = [
    "DTYPES", "MODEL_DOCS", "LatentModel", "ModelConfig", "codes_only", "finite_result",
    "dtype_name",
]
