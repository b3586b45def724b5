"""Predictive sparse decomposition (Kavukcuoglu, Ranzato & LeCun 2008).

``E(y, z) = ½‖y − Wz‖² + λ‖z‖₁ + (β/2)‖z − Enc(y)‖²`` with a decoder ``W`` ``(n_features,
n_atoms)`` of unit-norm atoms and an encoder ``Enc(y) = g ⊙ tanh(W_e y + b)`` (``W_e``
``(n_atoms, n_features)``, ``g`` a learned per-unit gain) or a :class:`~latentebm.LISTA` network.

Inference stays in the library's solver: with ``p = Enc(y)``,
``½‖y − Wz‖² + (β/2)‖z − p‖² = ½‖[y; √β p] − [W; √β I] z‖²``, so minimising ``E`` over ``z`` is a
Lasso on the stacked dictionary ``[W; √β I]`` ``(n_features + n_atoms, n_atoms)``, solved by
FISTA with its duality-gap certificate, warm-started from ``p``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from .._docs import doc_filler, fill_doc
from .._validation import (
    as_tensor,
    check_choice,
    check_int,
    check_lam,
    check_scalar,
    resolve_device,
)
from ..dictionary_update import atoms_from_data, initial_atoms, sgd_gradient_sum, sgd_step_
from ..operators import DenseDictionary, batch_dot
from ..problem import to_output
from ..regularizers import L1
from ..solvers import SolverResult, fista, proximal_gradient
from ..training import distributed as dist
from ..training.fit_options import FitOptions, with_fit_options
from ..training.history import MeanRecord
from ..training.schedules import cosine_factor, cosine_schedule
from ._base import (
    MODEL_DOCS,
    DenseLassoConfig,
    LatentModel,
    codes_only,
    dtype_name,
    finite_result,
)
from .lista import FINAL_LR_FRACTION, LISTA, VARIANTS

ENCODERS = ("tanh", "lista")


@dataclasses.dataclass(frozen=True)
class PSDConfig(DenseLassoConfig):
    """The one source of a :class:`PSD`'s arguments."""

    beta: float = 1.0
    encoder: str = "tanh"
    n_steps: int = 3
    variant: str = "lista"


@fill_doc
class TanhEncoder(nn.Module):
    """``g ⊙ tanh(W_e y + b)``: ``(batch, n_features)`` → ``(batch, n_atoms)``.

    Initialised from a decoder ``W`` with ``W_e = Wᵀ/L``, ``b = 0``, ``g = 1``: for small λ the
    first predictions are close to one ISTA step from zero (``tanh`` of the step's input,
    which is dense where the step's threshold zeroes small entries: on MNIST with 64 atoms
    17 % apart at λ = 0.05, 108 % at λ = 0.2).

    Parameters
    ----------
    W : torch.Tensor of shape (n_features, n_atoms)
        The decoder's dictionary.
    L : torch.Tensor of shape ()
        ``λ_max(WᵀW)`` or an upper estimate of it.
    """

    def __init__(self, W: torch.Tensor, L: torch.Tensor) -> None:
        super().__init__()
        self.W_e = nn.Parameter(W.T / L)
        self.b = nn.Parameter(torch.zeros(W.shape[1], dtype=W.dtype, device=W.device))
        self.g = nn.Parameter(torch.ones(W.shape[1], dtype=W.dtype, device=W.device))

    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        """Predicted codes of the signals ``Y``.

        Parameters
        ----------
        {Y_dense}

        {returns_dense_codes}
        """
        return self.g * torch.tanh(Y @ self.W_e.T + self.b)


@doc_filler(MODEL_DOCS)
class PSD(LatentModel):
    """Sparse coding with a trained feed-forward code predictor.

    Parameters
    ----------
    n_features : int
        Signal dimension.
    n_atoms : int
        Number of atoms (code dimension).
    {lam_nonneg}
    beta : float, default=1.0
        β ≥ 0, the weight of the prediction term.
    encoder : {"tanh", "lista"}, default="tanh"
        The predictor: a :class:`TanhEncoder` or a :class:`LISTA`.
    n_steps : int, default=3
        Depth of the :class:`LISTA` encoder.
    variant : {"lista", "cp", "step", "hybrid"}, default="lista"
        Step rule of the :class:`LISTA` encoder. Those that read the dictionary (all but
        ``"lista"``) follow the decoder's atoms after every step.
    init : {"data", "random"} or array of shape (n_features, n_atoms), default="data"
        ``"data"``: atoms drawn from the training samples at the first :meth:`fit`;
        ``"random"``: Gaussian atoms from ``seed``; an array such as a
        :class:`~latentebm.SparseCoding` dictionary.
    {model_seed_device_dtype}
    """

    KIND = "psd"
    Config = PSDConfig
    TRAINING_STATE = ("n_updates_", "history_", "_init_from_data")

    @property
    def encoder(self) -> nn.Module:
        """The encoder module (``config.encoder`` names its kind)."""
        return self._modules["encoder"]

    def __init__(
        self,
        n_features: int,
        n_atoms: int,
        lam: float,
        beta: float = 1.0,
        *,
        encoder: str = "tanh",
        n_steps: int = 3,
        variant: str = "lista",
        init: Any = "data",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_choice(encoder, "encoder", ENCODERS)
        check_choice(variant, "variant", VARIANTS)
        precision = dtype_name(dtype)
        self.config = PSDConfig(
            n_features=check_int(n_features, "n_features", low=1),
            n_atoms=check_int(n_atoms, "n_atoms", low=1), lam=check_lam(lam),
            # √β stands in the stacked operator: beyond the dtype's range it read as a bad W
            beta=check_scalar(beta, "beta", low=0.0, high=torch.finfo(dtype).max),
            encoder=encoder,
            n_steps=check_int(n_steps, "n_steps", low=1), variant=variant,
            seed=seed, dtype=precision)
        device = resolve_device(device)
        W, self._init_from_data = initial_atoms(init, self.n_features, self.n_atoms, self.seed)
        self.register_buffer("W", W.to(device=device, dtype=dtype))
        self.encoder = self._new_encoder()
        self.n_updates_ = 0
        self.history_: list[dict[str, float]] = []

    def _new_encoder(self) -> nn.Module:
        W = self.W
        if self.config.encoder == "lista":
            return LISTA(W, self.lam, self.n_steps, variant=self.variant, seed=self.seed)
        return TanhEncoder(W, DenseDictionary(W).lipschitz((self.n_features,)))

    # ----------------------------------------------------------------- energy and inference
    def dictionary(self) -> torch.Tensor:
        """The decoder's atoms ``(n_features, n_atoms)``."""
        return self.W

    def predict(self, Y: Any) -> Any:
        """The encoder's codes ``Enc(Y)`` in one pass, without gradient.

        Parameters
        ----------
        {Y_dense_any}

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch, n_atoms)
            NumPy when ``Y`` is not a tensor.
        """
        Y_t, numpy_out = self._check_signals(Y)
        with torch.no_grad():
            P = self(Y_t)
        return to_output(finite_result(P, "predicted codes"), numpy_out)

    def energy(self, Y: Any, Z: Any) -> Any:
        """Per-sample ``½‖y − Wz‖² + λ‖z‖₁ + (β/2)‖z − Enc(y)‖²``, differentiable in ``Z`` and
        the encoder's parameters.

        Parameters
        ----------
        {Y_dense_any}
        Z : array-like or torch.Tensor of shape (batch, n_atoms)
            Codes.

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch,)
            NumPy when ``Y`` is not a tensor.
        """
        Y_t, numpy_out = self._check_signals(Y)
        Z_t = self._check_codes(Z, Y_t)
        # differentiable in Z and the encoder, as the other models' energy is in Z
        r = Y_t - Z_t @ self.W.T
        d = Z_t - self(Y_t)
        prediction = 0.5 * self.beta * batch_dot(d, d)
        E = 0.5 * batch_dot(r, r) + self.lam * Z_t.abs().sum(1) + prediction
        return to_output(finite_result(E, "energies"), numpy_out)

    def infer(self, Y: Any, *, tol: float | None = None, max_iter: int = 1000) -> SolverResult:
        """``argmin_z E(y, z)`` by FISTA on the stacked problem, warm-started from ``Enc(y)``.

        Parameters
        ----------
        {Y_dense_any}
        tol : float or None, default=None
            Relative duality gap (the solver's default when ``None``).
        max_iter : int, default=1000
            Iteration cap.

        Returns
        -------
        SolverResult
            ``z`` ``(batch, n_atoms)``; ``energy`` is the PSD energy and ``gap`` its certified
            duality gap, ``(batch,)`` (at λ = 0 the dual is degenerate: the gap is the energy
            itself, and convergence is judged by the gradient mapping). NumPy when ``Y`` is not
            a tensor.
        """
        Y_t, numpy_out = self._check_signals(Y)
        with torch.no_grad():
            P = self(Y_t)
            Y_aug, op = self._stacked(Y_t, P)
        if numpy_out:
            Y_aug, P = Y_aug.cpu().numpy(), P.cpu().numpy()
        return fista(Y_aug, op, self.lam, z0=P, tol=tol, max_iter=max_iter)

    def encode(self, Y: Any, *, method: str = "encoder", tol: float | None = None,
               max_iter: int = 1000) -> SolverResult:
        """Codes of ``Y`` as a :class:`SolverResult`, like every model's ``encode``.

        Parameters
        ----------
        {Y_dense_any}
        method : {"encoder", "fista"}, default="encoder"
            ``"encoder"``: the encoder's prediction ``Enc(y)`` in one pass (what PSD trains it
            for; :meth:`predict`); ``"fista"``: ``argmin_z E(y, z)``, certified (:meth:`infer`).
        tol : float or None, default=None
            Relative duality gap (``"fista"``; the solver's default when ``None``).
        max_iter : int, default=1000
            Iteration cap (``"fista"``).

        Returns
        -------
        SolverResult
            ``z`` ``(batch, n_atoms)``; with ``"fista"`` also the PSD energy, its certified gap
            and the iterations. NumPy when ``Y`` is not a tensor.
        """
        check_choice(method, "method", ("encoder", "fista"))
        if method == "fista":
            return self.infer(Y, tol=tol, max_iter=max_iter)
        return codes_only(self.predict(Y))

    def energy_parts(self) -> tuple[nn.Module, DenseDictionary, nn.Module, L1, float]:
        """This model as the parts of the general energy ``E(x, y, z) = ½‖y − Dec(Pred(x), z)‖²
        + λ‖z‖₁`` with ``x = y`` (see :meth:`LatentVariableEBM.from_model
        <latentebm.LatentVariableEBM.from_model>`, which copies them): the encoder is the
        predictor, ``Dec(h, z) = [W; √β I] z + [0; −√β h]``, and the target is ``[y; 0]``
        (:meth:`stacked_target`), so the energy is this model's and inference is the same FISTA
        over the same stacked operator. Returns ``(predictor, operator, offset, regularizer,
        lam)``."""
        _, op = self._stacked(self.W[:1], torch.zeros(1, self.n_atoms, dtype=self.W.dtype,
                                                       device=self.W.device))
        offset = _PredictionOffset(self.n_features, math.sqrt(self.beta))
        return self.encoder, op, offset, L1(), self.lam

    def stacked_target(self, Y: torch.Tensor) -> torch.Tensor:
        """``[y; 0]``: the target of :meth:`energy_parts`.

        Parameters
        ----------
        {Y_dense}

        {returns_stacked_dense}
        """
        return torch.cat([Y, Y.new_zeros(Y.shape[0], self.n_atoms)], 1)

    def free_energy(self, Y: Any, **kwargs: Any) -> Any:
        """``min_z E(y, z)`` per sample (see :meth:`infer`).

        Parameters
        ----------
        {Y_dense_any}
        **kwargs
            Options of :meth:`infer`.

        {returns_any_per_sample}
        """
        return self.infer(Y, **kwargs).warn_unless_converged("free energies").energy

    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        """The encoder's prediction ``Enc(Y)`` of validated signals (with gradient).

        Parameters
        ----------
        {Y_dense}

        {returns_dense_codes}
        """
        return self.encoder(Y)

    def _stacked(self, Y: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, DenseDictionary]:
        """``[y; √β p]`` ``(batch, n_features + n_atoms)`` and the dictionary ``[W; √β I]``."""
        root = math.sqrt(self.beta)
        eye = torch.eye(self.n_atoms, dtype=self.W.dtype, device=self.W.device)
        op = DenseDictionary(torch.cat([self.W, root * eye], 0))
        return torch.cat([Y, root * P], 1), op

    # ----------------------------------------------------------------- learning
    @with_fit_options(epochs=10, batch_size=256, checkpoint_every=100,
                      epochs_note=" (also the length of the cosine decay)", unit="update",
                      callback_args="n_updates, model")
    def fit(
        self,
        Y: Any,
        *,
        lr_decoder: float = 1.0,
        lr_encoder: float = 1e-3,
        tol: float = 1e-4,
        max_iter: int = 300,
        options: FitOptions,
    ) -> list[dict[str, float]]:
        """Alternate inference and learning on mini-batches of ``Y``.

        Each step: ``z`` = FISTA on ``E`` (relative gap ``tol``, at most ``max_iter`` iterations)
        warm-started from ``Enc(y)``; a projected gradient step ``lr_decoder`` on ``W`` for
        ``½‖y − Wz‖²`` (then unit-norm columns); an Adam step ``lr_encoder`` on the encoder for
        ``(β/2)‖z − Enc(y)‖²``. Both rates follow a cosine decay to 1/100 over ``epochs``.

        Parameters
        ----------
        {fit_signals}
        {fit_batches}
        lr_decoder : float, default=1.0
            Initial step of the projected gradient on ``W``.
        lr_encoder : float, default=1e-3
            Initial Adam step on the encoder.
        tol : float, default=1e-4
            Relative duality gap of the inference.
        max_iter : int, default=300
            Iteration cap of the inference.
        {fit_options}

        Returns
        -------
        list of dict
            The per-epoch history: mean energy at ``z``, mean Lasso energy of the encoder's
            codes, mean prediction error ``‖z − Enc(y)‖²``, mean FISTA iterations, seconds.

        Notes
        -----
        Under ``torchrun`` ``batch_size`` is the global batch: each process infers the codes of
        its share of it, the decoder's gradient is summed over the processes and the encoder
        trains as ``DistributedDataParallel``, so the weights and the history are those one
        process gets on the same batches. Rank 0 alone writes the checkpoint; every rank
        resumes from it.
        """
        Y_t, _ = self._check_signals(Y)
        n = Y_t.shape[0]
        options = options.checked(n)
        epochs, batch_size = options.epochs, options.batch_size
        lr_decoder = check_scalar(lr_decoder, "lr_decoder", low=0.0)
        lr_encoder = check_scalar(lr_encoder, "lr_encoder", low=0.0, low_inclusive=False)
        tol = check_scalar(tol, "tol", low=0.0)
        max_iter = check_int(max_iter, "max_iter", low=1)
        fit_args = {"epochs": epochs, "batch_size": batch_size, "lr_decoder": lr_decoder,
                    "lr_encoder": lr_encoder, "tol": tol, "max_iter": max_iter, "n_samples": n}
        start = (0, 0)
        from_checkpoint = options.resuming
        if not from_checkpoint and self._init_from_data and self.n_updates_ == 0:
            self._init_atoms_from(Y_t)
        optimizer = torch.optim.Adam(self.encoder.parameters(), lr=lr_encoder)
        total = epochs * -(-n // batch_size)
        scheduler = cosine_schedule(optimizer, total, FINAL_LR_FRACTION)
        if from_checkpoint:
            start = self.resume_from(options.checkpoint, fit_args, optimizer=optimizer,
                                     scheduler=scheduler).position

        loop = self.training_loop(
            n, options, start=start, fit_args=fit_args, desc=f"PSD ({self.config.encoder})",
            optimizer=optimizer, scheduler=scheduler,
        )
        encoder = dist.data_parallel(self.encoder)
        with loop:
            for epoch in loop.epochs():
                stats = _EpochStats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    factor = cosine_factor(b.step, loop.total, FINAL_LR_FRACTION)
                    record = self._update(optimizer, Y_t[dist.shard(b.idx)], b.idx.numel(),
                                          lr_decoder * factor, tol, max_iter, encoder)
                    stats.add(record)
                    self.n_updates_ += 1
                    loop.step_done(b, self.n_updates_, loss=record["energy"],
                                   postfix={"energy": f"{stats.mean('energy'):.4g}"})
                stats.close()
        return self.history_

    def _update(self, optimizer, Yb: torch.Tensor, n_global: int, lr_decoder: float,
                tol: float, max_iter: int, encoder: nn.Module) -> dict[str, torch.Tensor]:
        """One step on this process's rows ``Yb`` of a global batch of ``n_global``: codes of
        ``Yb``, the decoder step from the gradient summed over the processes, and the encoder
        step through ``encoder`` (``self.encoder`` or its DDP wrapper) on its share of the
        global mean. Returns this process's per-sample records."""
        with torch.no_grad():
            P = self(Yb)
            Y_aug, op = self._stacked(Yb, P)
            out = proximal_gradient(op, Y_aug, self.lam, L1(), z0=P, tol=tol, max_iter=max_iter)
            Z = out.z
            r = Yb - P @ self.W.T
            lasso_pred = 0.5 * batch_dot(r, r) + self.lam * P.abs().sum(1)
            grad = dist.all_reduce_(sgd_gradient_sum(self.W, Yb, Z),
                                    what="of the decoder gradient")
            sgd_step_(self.W, grad, n_global, lr_decoder)
            self._encoder_follows_decoder()
        optimizer.zero_grad(set_to_none=True)
        loss = 0.5 * self.beta * (Z - encoder(Yb)).pow(2).sum(1)
        dist.global_mean(loss.sum(), n_global).backward()
        optimizer.step()
        return {
            "energy": out.energy, "lasso_energy_encoder": lasso_pred,
            "prediction_error": (Z - P).pow(2).sum(1), "fista_iterations": out.n_iter_per_sample,
        }

    # ----------------------------------------------------------------- helpers
    def _encoder_follows_decoder(self) -> None:
        """A LISTA encoder whose steps read the dictionary (``cp``, ``step``, ``hybrid``: its
        ``W`` and ``G = WᵀW``) codes for the decoder's current atoms, not the initial ones (its
        learned weights and its step normaliser ``L`` stay)."""
        encoder = self.encoder
        if not isinstance(encoder, LISTA) or encoder.variant == "lista":
            return
        encoder.W.copy_(self.W)
        gram = getattr(encoder, "G", None)
        if gram is not None:
            torch.matmul(self.W.T, self.W, out=gram)

    def _check_signals(self, Y: Any) -> tuple[torch.Tensor, bool]:
        Y_t, numpy_out = self.check_input(Y, "Y", ndim=2, signals=True)
        DenseDictionary(self.W, check_input=False).check_signal(Y_t)
        return Y_t, numpy_out

    def _check_codes(self, Z: Any, Y: torch.Tensor) -> torch.Tensor:
        Z_t = as_tensor(Z, "Z", ndim=2)
        if isinstance(Z, torch.Tensor) and (Z_t.device != Y.device or Z_t.dtype != Y.dtype):
            raise ValueError(f"Z must be a {Y.dtype} tensor on {Y.device}")
        Z_t = Z_t.to(Y.device, Y.dtype)
        if tuple(Z_t.shape) != (Y.shape[0], self.n_atoms):
            raise ValueError(
                f"Z must have shape ({Y.shape[0]}, {self.n_atoms}), got {tuple(Z_t.shape)}"
            )
        return Z_t

    def _init_atoms_from(self, Y: torch.Tensor) -> None:
        self.W.copy_(atoms_from_data(Y, self.n_atoms, self.seed))
        # in place: the module the caller holds (its hooks, frozen parameters) stays the encoder
        self.encoder.load_state_dict(self._new_encoder().state_dict())
        self._init_from_data = False


class _PredictionOffset(nn.Module):
    """``h ↦ [0; −√β h]``: puts the prediction term ``(β/2)‖z − h‖²`` into a stacked cost."""

    FIXED_DECODER_BLOCK = True
    """The decoder it goes with stacks ``√β I`` under ``W``: not to be trained."""

    def __init__(self, n_features: int, root_beta: float) -> None:
        super().__init__()
        self.n_features, self.root_beta = n_features, root_beta

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h.new_zeros(h.shape[0], self.n_features), -self.root_beta * h], 1)


class _EpochStats(MeanRecord):
    """Per-epoch sums of the per-sample training quantities, published as running means."""

    KEYS = ("energy", "lasso_energy_encoder", "prediction_error", "fista_iterations")


__all__ = ["PSD", "PSDConfig", "TanhEncoder", "ENCODERS"]
