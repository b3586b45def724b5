"""The general regularized latent-variable energy ``E(x, y, z) = C(y, Dec(Pred(x), z)) + λR(z)``.

One observed input ``x`` maps, through the latent ``z``, to a whole set of plausible ``y``: the
low-energy set ``{y : F(x, y) small}`` with the free energy ``F(x, y) = min_z E(x, y, z)``.
The regularizer ``R`` keeps that set small; with ``λ = 0`` and an over-complete ``z`` every
``y`` is reachable and the energy is flat.

Inference ``z* = argmin_z E``:

- decoder linear in ``z`` (a :class:`~latentebm.decoders.LinearInZDecoder`, ``Dec(h, z) = b(h)
  + Az``) with the squared-error cost: exactly the library's FISTA (:mod:`latentebm.solvers`)
  over the operator ``A`` and the target ``y − b(h)``, with its duality-gap certificate;
- any other decoder or cost: proximal gradient with backtracking on the smooth part, gradient by
  autograd (:mod:`latentebm.solvers.smooth`).

Sparse coding is the instance with no predictor, ``Dec(z) = Wz`` and ``R = ‖·‖₁``; PSD and
convolutional sparse coding are instances too: :meth:`LatentVariableEBM.from_model` builds the
energy of any of them from what the model exposes.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch import nn

from .._docs import fill_doc
from .._validation import as_tensor, check_int, check_lam, check_same_device_dtype
from ..problem import to_output
from ..regularizers import REGULARIZERS, Regularizer, get_regularizer
from ..solvers import SolverResult, autograd_proximal_gradient, proximal_gradient
from ..solvers.api import check_tol
from ..training.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ..training.extra_state import TrainingAttributes
from .decoders import LinearInZDecoder, SquaredError, decoder_for

KIND = "latent_variable_ebm"
def as_regularizer(reg: Any) -> Regularizer:
    """A :class:`Regularizer` instance, or one named ``"l1"`` / ``"nonneg_l1"``.

    Parameters
    ----------
    reg : Regularizer or str
        An instance (returned as is) or a name; a bool is refused.

    Returns
    -------
    Regularizer
    """
    if isinstance(reg, bool):
        raise TypeError(f"regularizer must be a Regularizer or a name, got {reg!r}")
    return get_regularizer(reg)


@fill_doc
class LatentVariableEBM(TrainingAttributes, nn.Module):
    """``E(x, y, z) = C(y, Dec(h, z)) + λR(z)`` with ``h = Pred(x)``.

    Tensors must be on the model's device and dtype (those of the decoder's parameters); NumPy
    input is converted and results come back as NumPy. The outputs of a user-supplied decoder
    and cost are checked on their first call (shape of ``y``; one value per sample).

    ``forward(x, y, z)`` is the per-sample energy on validated tensors (no checks): training
    goes through it, so a ``DistributedDataParallel`` wrapper synchronises the gradients. The
    update counter, history and per-step energy trace travel in ``state_dict()``.

    Parameters
    ----------
    predictor : nn.Module or None
        Maps ``x`` ``(batch, ...)`` to ``h``; ``None``: unconditional (``x`` is then ``None``
        everywhere).
    decoder : nn.Module
        ``forward(h, z) -> ŷ`` with ``ŷ`` of the shape of ``y`` (samples treated
        independently), e.g. a :class:`~latentebm.decoders.ConditionalLinearDecoder`.
    regularizer : Regularizer or str, default="l1"
        A library :class:`Regularizer`, or ``"l1"``, ``"nonneg_l1"``.
    lam : float, default=0.1
        λ ≥ 0.
    cost : callable or None, default=None
        ``(y, ŷ) -> (batch,)``; ``None``: ``½‖y − ŷ‖²``.
    code_shape : tuple of int or None, default=None
        The latent's shape for one sample when the decoder has no
        ``code_shape(signal_shape)`` method.
    """

    TRAINING_STATE = ("n_updates_", "history_", "energy_trace_")

    def __init__(
        self,
        predictor: nn.Module | None,
        decoder: nn.Module,
        regularizer: Any = "l1",
        lam: float = 0.1,
        *,
        cost: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        code_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if predictor is not None and not isinstance(predictor, nn.Module):
            raise TypeError(f"predictor must be an nn.Module or None, got {type(predictor)}")
        if not isinstance(decoder, nn.Module):
            raise TypeError(f"decoder must be an nn.Module, got {type(decoder).__name__}")
        self.predictor = predictor
        self.decoder = decoder
        self.regularizer = as_regularizer(regularizer)
        self._lam = check_lam(lam)
        cost = SquaredError() if cost is None else cost
        if not callable(cost):
            raise TypeError(f"cost must be callable (y, y_hat) -> (batch,), got {cost!r}")
        self.cost = cost
        self._cost_checked = False
        if code_shape is not None:
            if isinstance(code_shape, (int, np.integer)) and not isinstance(code_shape, bool):
                code_shape = (code_shape,)  # one dimension, as for a dense code
            try:
                dims = tuple(code_shape)
            except TypeError:
                raise TypeError(f"code_shape must be a tuple of ints, got {code_shape!r}"
                                ) from None
            code_shape = tuple(check_int(d, "code_shape", low=1) for d in dims)
        self._code_shape = code_shape
        self.n_updates_ = 0
        self.history_: list[dict[str, Any]] = []
        self.energy_trace_: list[float] = []

    @property
    def lam(self) -> float:
        """``λ ≥ 0``, the weight of ``R(z)``; may be set (checked like the constructor's)."""
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        self._lam = check_lam(value)

    @classmethod
    def from_model(cls, model: Any) -> LatentVariableEBM:
        """A model of the library as this general energy, built from what the model exposes
        (models never import this module).

        Parameters
        ----------
        model : object
            Either with ``energy_parts()`` returning ``(predictor, operator, offset,
            regularizer, lam)`` (a conditional model such as PSD: ``Dec(h, z) = A z +
            offset(h)``), or with ``operator()`` (a dense or convolutional
            :class:`~latentebm.operators.LinearOperator`), ``regularizer()`` and ``lam``
            (SparseCoding, ConvDictionaryLearning: no predictor, ``Dec(z) = A z``).

        The decoder holds a copy of the atoms and the predictor is a copy of the model's, so
        the energy is the model's at this moment and later changes to either leave the other
        alone; inference is the same FISTA over the same operator. An energy whose decoder
        stacks a fixed block (PSD's ``[W; √β I]``) is for inference and evaluation: its
        :meth:`fit` refuses, since training would change that block.
        """
        if callable(getattr(model, "energy_parts", None)):
            predictor, op, offset, reg, lam = model.energy_parts()
        elif callable(getattr(model, "operator", None)) and hasattr(model, "lam"):
            predictor, op, offset = None, model.operator(), None
            reg, lam = model.regularizer(), model.lam
        else:
            raise TypeError(f"cannot build an energy from a {type(model).__name__}: it has "
                            "neither energy_parts() nor operator() and lam")
        return cls(copy.deepcopy(predictor), decoder_for(op, offset), reg, lam)

    # ----------------------------------------------------------------- description
    @property
    def linear_in_z(self) -> bool:
        """True when inference is FISTA over a library operator (certified)."""
        return isinstance(self.decoder, LinearInZDecoder) and isinstance(self.cost, SquaredError)

    def reference(self) -> torch.Tensor:
        """A tensor carrying the model's device and dtype (first floating parameter/buffer)."""
        modules = [self.decoder] + ([self.predictor] if self.predictor is not None else [])
        for m in modules:
            for t in chain(m.parameters(), m.buffers()):
                if t.is_floating_point():
                    return t
        return torch.empty(0)

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one latent for one ``y`` of ``signal_shape`` (batch excluded).

        Parameters
        ----------
        {signal_shape_y}

        {returns_shape}
        """
        if self._code_shape is not None:
            return self._code_shape
        if callable(getattr(self.decoder, "code_shape", None)):
            return tuple(self.decoder.code_shape(tuple(signal_shape)))
        raise TypeError("the decoder has no code_shape(signal_shape) method; pass code_shape=")

    # ----------------------------------------------------------------- the energy
    def energy(self, x: Any, y: Any, z: Any) -> Any:
        """Per-sample ``E(x, y, z)`` (differentiable for tensor input).

        Parameters
        ----------
        {x_any}
        {y_any}
        z : array-like or torch.Tensor of shape (batch, *code_dims)
            Latents.

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch,)
            NumPy when ``y`` is not a tensor.
        """
        x_t, y_t, numpy_out = self._inputs(x, y)
        z_t = self._code(z, "z", y_t)
        h = self.hidden(x_t)
        self._checked_offset(h, y_t.shape)
        E = self.energy_tensors(h, y_t, z_t)
        return to_output(E, numpy_out)

    def energy_tensors(self, h, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``E`` from already validated tensors and the predictor's output ``h``.

        Parameters
        ----------
        {h_hidden}
        {y_observations}
        {z_latents}

        {returns_per_sample}
        """
        penalty = self.regularizer_value(z)
        # λ = 0 keeps a constraint's +inf (0·inf is NaN): a negative z is still infeasible
        weighted = (self.lam * penalty if self.lam != 0
                    else torch.where(torch.isinf(penalty), penalty, torch.zeros_like(penalty)))
        return self._cost(y, self._decode(h, z, y.shape)) + weighted

    def forward(self, x: torch.Tensor | None, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-sample ``E(x, y, z)`` for validated tensors (differentiable in the predictor's and
        decoder's parameters); no checks, no host synchronisation.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, ...) or None
            Inputs of the predictor (``None`` without one).
        {y_observations}
        {z_latents}

        {returns_per_sample}
        """
        h = None if self.predictor is None else self.predictor(x)
        return self.energy_tensors(h, y, z)

    def _cost(self, y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """``C(y, ŷ)``; its first result must hold one value per sample."""
        out = self.cost(y, y_hat)
        if not self._cost_checked:
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (y.shape[0],):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"cost must return one value per sample, shape ({y.shape[0]},) for this "
                    f"batch, got {got}; a cost that sums over the batch mixes the samples"
                )
            self._cost_checked = True
        return out

    def regularizer_value(self, z: torch.Tensor) -> torch.Tensor:
        """``R(z)`` per sample; +∞ where a non-negative code has a negative entry.

        Parameters
        ----------
        {z_latents}

        {returns_per_sample}
        """
        value = self.regularizer.value(z)
        if self.regularizer.nonneg:
            negative = (z < 0).flatten(1).any(1)
            value = torch.where(negative, torch.full_like(value, math.inf), value)
        return value

    def hidden(self, x_t: torch.Tensor | None) -> torch.Tensor | None:
        """``h = Pred(x)`` for a validated ``x`` (``None`` without a predictor).

        Parameters
        ----------
        x_t : torch.Tensor of shape (batch, ...) or None
            Inputs of the predictor.

        Returns
        -------
        torch.Tensor of shape (batch, ...) or None
        """
        if self.predictor is None:
            return None
        try:
            return self.predictor(x_t)
        except RuntimeError as exc:
            raise ValueError(f"x of shape {tuple(x_t.shape)} does not fit the predictor: {exc}"
                             ) from exc

    # ----------------------------------------------------------------- inference
    def solve(
        self, x: Any, y: Any, *, z0: Any = None, tol: float | None = None, max_iter: int = 1000
    ) -> SolverResult:
        """``argmin_z E(x, y, z)`` with its energy (and certified gap in the linear case; NaN
        otherwise).

        Parameters
        ----------
        {x_any}
        {y_any}
        z0 : array-like, torch.Tensor of shape (batch, *code_dims) or None, default=None
            Warm start; zeros by default.
        tol : float or None, default=None
            Relative duality gap (linear case; default 1e-5 in float32, 1e-8 in float64) or
            relative change of ``z`` (general case).
        max_iter : int, default=1000
            Iteration cap.

        Returns
        -------
        SolverResult
            ``z`` ``(batch, *code_dims)``, ``energy`` and ``gap`` ``(batch,)`` and the other
            fields of a :class:`SolverResult`; NumPy arrays when ``y`` is not a tensor.
        """
        x_t, y_t, numpy_out = self._inputs(x, y)
        max_iter = check_int(max_iter, "max_iter", low=1)
        tol = check_tol(tol, y_t.dtype)
        z0_t = None if z0 is None else self._code(z0, "z0", y_t)
        with torch.no_grad():
            out = self.solve_tensors(self.hidden(x_t), y_t, z0_t, tol=tol, max_iter=max_iter)
        bad = int((~torch.isfinite(out.energy)).sum())
        if bad:
            raise FloatingPointError(
                f"the energy of {bad} sample(s) is not finite: the decoder or the cost returns "
                "NaN or inf at these latents (e.g. a log of a non-positive value), or the "
                "values overflow the precision")
        return out.to_output(numpy_out)

    def infer(self, x: Any, y: Any, **kwargs: Any) -> Any:
        """``z* = argmin_z E(x, y, z)``; see :meth:`solve` (a ``NotConvergedWarning`` where some
        sample stopped at the iteration cap).

        Parameters
        ----------
        {solve_args}

        {returns_any_codes}
        """
        return self.solve(x, y, **kwargs).warn_unless_converged("latents").z

    def free_energy(self, x: Any, y: Any, **kwargs: Any) -> Any:
        """``F(x, y) = min_z E(x, y, z)`` per sample; see :meth:`solve`.

        Parameters
        ----------
        {solve_args}

        {returns_any_per_sample}
        """
        return self.solve(x, y, **kwargs).warn_unless_converged("free energies").energy

    def predict(self, x: Any, z: Any) -> Any:
        """``Dec(Pred(x), z)``: the prediction for a chosen latent ``z``.

        Parameters
        ----------
        {x_any}
        z : array-like or torch.Tensor of shape (batch, *code_dims)
            Latents.

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch, *signal_dims)
            NumPy when ``z`` is not a tensor.
        """
        numpy_out = not isinstance(z, torch.Tensor)
        z_t = self._tensor(z, "z")
        if self.linear_in_z:  # its operator knows its codes (extra maps would be dropped)
            self.decoder.operator().check_code(z_t, "z")
        x_t = self._x(x, z_t.shape[0])
        with torch.no_grad():
            h = self.hidden(x_t)
            try:
                y_hat = self.decoder(h, z_t)
            except RuntimeError as exc:
                h_shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
                culprit = ("the predictor's output" if self.linear_in_z  # z was checked above
                           else f"z of shape {tuple(z_t.shape)} or the predictor's output")
                raise ValueError(f"{culprit} (shape {h_shape}) does not fit the decoder: {exc}"
                                 ) from exc
            self._checked_offset(h, y_hat.shape)  # an offset that broadcast into A z
        return to_output(y_hat, numpy_out)

    def solve_tensors(self, h, y: torch.Tensor, z0: torch.Tensor | None, *, tol: float,
                      max_iter: int) -> SolverResult:
        """The tensor-level inference behind :meth:`solve` (inputs already validated).

        Parameters
        ----------
        {h_hidden}
        {y_observations}
        z0 : torch.Tensor of shape (batch, *code_dims) or None
            Warm start; zeros by default.
        tol : float
            Stopping tolerance (see :meth:`solve`).
        {max_iter_cap}

        Returns
        -------
        SolverResult
            Tensors: ``z`` ``(batch, *code_dims)``, ``energy`` and ``gap`` ``(batch,)``.
        """
        if self.linear_in_z:
            b = self._checked_offset(h, y.shape)
            target = y if b is None else y - b
            op = self.decoder.operator()
            return proximal_gradient(op, target, self.lam, self.regularizer, z0=z0, tol=tol,
                                     max_iter=max_iter)
        if z0 is None:
            z0 = y.new_zeros((y.shape[0], *self.code_shape(tuple(y.shape[1:]))))
        if self.regularizer.nonneg:
            z0 = z0.clamp_min(0)

        def smooth(rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            hh = None if h is None else h[rows]
            return self._cost(y[rows], self._decode(hh, z, y.shape))

        return autograd_proximal_gradient(smooth, z0, self.lam, self.regularizer,
                                          max_iter=max_iter, tol=tol)

    # ----------------------------------------------------------------- learning
    def fit(self, x: Any, y: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Lower the free energy of the observed pairs; see :func:`latentebm.energy.fit.fit`.

        Parameters
        ----------
        x : array-like, torch.Tensor of shape (n, ...) or None
            Inputs of the predictor (``None`` without one).
        y : array-like or torch.Tensor of shape (n, *signal_dims)
            Observations.
        **kwargs
            Options of :func:`latentebm.energy.fit.fit`.

        Returns
        -------
        list of dict
            The training history, one entry per epoch.
        """
        from .fit import fit

        offset = getattr(self.decoder, "offset_net", None)
        if getattr(offset, "FIXED_DECODER_BLOCK", False):
            raise ValueError(
                "this energy's decoder stacks a fixed block under its atoms (from_model of a "
                "PSD: [W; √β I]); fit would train and renormalise that block and change β, so "
                "train the model itself (PSD.fit) and build the energy again")
        return fit(self, x, y, **kwargs)

    @torch.no_grad()
    def normalize_(self) -> LatentVariableEBM:
        """Unit-norm atoms for a linear-in-z decoder (no effect otherwise)."""
        if isinstance(self.decoder, LinearInZDecoder):
            self.decoder.normalize_()
        return self

    # ----------------------------------------------------------------- checkpoints
    def describe(self) -> dict[str, Any]:
        """The configuration a checkpoint must match."""
        return {
            "lam": self.lam,
            "regularizer": self.regularizer.name,
            "cost": type(self.cost).__name__,
            "predictor": None if self.predictor is None else type(self.predictor).__name__,
            "decoder": type(self.decoder).__name__,
            # a convolutional decoder's kernels have one shape for both boundaries
            "boundary": getattr(self.decoder, "boundary", None),
            # load_state_dict would convert a float64 checkpoint to float32 without a word
            "dtype": str(self.reference().dtype).replace("torch.", ""),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Parameters, counters and history (safetensors, written atomically) with
        :meth:`describe` as the config; reload with :meth:`load_state_` into a model built the
        same way (modules are never pickled).

        Parameters
        ----------
        path : str or os.PathLike
            The file (its folder must exist).
        """
        write_checkpoint(path, kind=KIND, config=self.describe(), state_dict=self.state_dict())

    def load_state_(self, path: str | os.PathLike) -> LatentVariableEBM:
        """Load what :meth:`save` (or a training checkpoint) wrote, in place.

        Parameters
        ----------
        path : str or os.PathLike
            The checkpoint file.

        Returns
        -------
        LatentVariableEBM
            ``self``.
        """
        self.load_checkpoint_(read_checkpoint(path, kind=KIND))
        return self

    def load_checkpoint_(self, ckpt: Checkpoint) -> None:
        """Copy a checkpoint's state into this model; a model built another way, or a missing
        or reshaped tensor, is a clear ``ValueError``.

        Parameters
        ----------
        ckpt : Checkpoint
            A checkpoint read by :func:`~latentebm.training.checkpoint.read_checkpoint`.
        """
        mine = self.describe()
        diffs = [f"{k}: checkpoint has {ckpt.config.get(k)!r}, model has {v!r}"
                 for k, v in mine.items() if ckpt.config.get(k) != v]
        own = self.state_dict()
        theirs = ckpt.state_dict
        bad = [k for k, t in own.items() if isinstance(t, torch.Tensor) and (
            not isinstance(theirs.get(k), torch.Tensor) or theirs[k].shape != t.shape)]
        if diffs or bad or set(own) != set(theirs):
            bad += sorted(set(theirs) - set(own))
            raise ValueError(f"checkpoint {ckpt.path} is from another model ("
                             + "; ".join(diffs + [f"tensor {k!r} missing or reshaped"
                                                  for k in bad]) + ")")
        self.load_state_dict(theirs)

    # ----------------------------------------------------------------- validation
    def _tensor(self, v: Any, name: str) -> torch.Tensor:
        ref = self.reference()
        if isinstance(v, torch.Tensor):
            t = as_tensor(v, name)
            check_same_device_dtype(ref, "the model", **{name: t})
        else:
            t = as_tensor(v, name).to(ref.device, ref.dtype)
        if t.dim() < 2:
            raise ValueError(f"{name} must be batch-first (batch, ...), got shape {tuple(t.shape)}")
        return t

    def _x(self, x: Any, batch: int) -> torch.Tensor | None:
        if self.predictor is None:
            if x is not None:
                raise ValueError("x must be None: this model has no predictor (unconditional)")
            return None
        if x is None:
            raise ValueError("x is required: this model has a predictor")
        x_t = self._tensor(x, "x")
        if x_t.shape[0] != batch:
            raise ValueError(f"x has {x_t.shape[0]} samples but y (or z) has {batch}")
        return x_t

    def _inputs(self, x: Any, y: Any) -> tuple[torch.Tensor | None, torch.Tensor, bool]:
        numpy_out = not isinstance(y, torch.Tensor)
        y_t = self._tensor(y, "y")
        if self.linear_in_z:
            self.decoder.operator().check_signal(y_t, "y")
        return self._x(x, y_t.shape[0]), y_t, numpy_out

    def _code(self, z: Any, name: str, y: torch.Tensor) -> torch.Tensor:
        z_t = self._tensor(z, name)
        want = (y.shape[0], *self.code_shape(tuple(y.shape[1:])))
        if tuple(z_t.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(z_t.shape)}")
        return z_t

    def _checked_offset(self, h, y_shape: torch.Size) -> torch.Tensor | None:
        """A linear-in-z decoder's offset ``b(h)``, which must have the shape of ``y`` (where it
        does not, adding it to ``A z`` would broadcast)."""
        if not self.linear_in_z:
            return None
        b = self.decoder.offset(h)
        if b is not None and b.shape != y_shape:
            raise ValueError(f"the decoder's offset b(h) has shape {tuple(b.shape)} but y has "
                             f"shape {tuple(y_shape)}; the predictor's output must match y")
        return b

    def _decode(self, h, z: torch.Tensor, y_shape: torch.Size) -> torch.Tensor:
        y_hat = self.decoder(h, z)
        if y_hat.shape[1:] != y_shape[1:]:
            raise ValueError(f"the decoder returned shape {tuple(y_hat.shape)} but y has shape "
                             f"{tuple(y_shape)}")
        return y_hat


__all__ = ["LatentVariableEBM", "as_regularizer", "REGULARIZERS"]
