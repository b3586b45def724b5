"""Sparse coding: ``E(y, z) = ½‖y − Wz‖² + λ‖z‖₁`` with a learned dictionary of unit-norm atoms."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .._validation import check_choice, check_int, check_lam, check_scalar, resolve_device
from ..data.streaming import ShardedArray
from ..dictionary_update import (
    accumulate_sums_,
    atoms_from_data,
    block_coordinate_update_,
    initial_atoms,
    normalize_columns_,
    reinitialize_atoms_,
    sgd_gradient_sum,
    sgd_step_,
)
from ..operators import DenseDictionary
from ..training import distributed as dist
from ..training.fit_options import FitOptions, with_fit_options
from ..training.history import MeanRecord
from ._base import DenseLassoConfig, dtype_name
from ._dictionary_model import DictionaryModel

METHODS = ("online", "sgd")


@dataclass(frozen=True)
class SparseCodingConfig(DenseLassoConfig):
    """The constructor arguments of :class:`SparseCoding` (``dtype`` by name)."""

    nonneg: bool = False
    nonneg_atoms: bool = False


class SparseCoding(DictionaryModel):
    """A dictionary ``W`` ``(n_features, n_atoms)`` with unit-norm columns and its L1 energy.

    Parameters
    ----------
    n_features, n_atoms : int
        Signal size and number of atoms.
    lam : float
        λ ≥ 0 in ``½‖y − Wz‖² + λ‖z‖₁`` (scikit-learn's ``alpha``; the lecture's λ is 2λ).
    nonneg : bool
        Constrain the codes to ``z ≥ 0``.
    nonneg_atoms : bool
        Keep the atoms non-negative too (each dictionary update projects onto the non-negative
        part of the unit ball). With non-negative codes this is sparse non-negative matrix
        factorisation, whose atoms are parts: pen strokes on MNIST (Lee & Seung 1999).
    init : ``"data"``, ``"random"`` or array ``(n_features, n_atoms)``
        ``"data"``: atoms drawn from the training samples at the first :meth:`fit`;
        ``"random"``: Gaussian; an array: those atoms (normalised).
    seed : int
        Seeds the initial atoms and the epoch order.
    device, dtype
        Where the atoms live; float32 or float64.

    ``W`` is a buffer (it is learned by closed-form and projected updates, never by gradient);
    the online statistics ``A``, ``B`` and ``last_used`` are buffers too, and the step counter,
    history and ``init="data"`` flag travel in ``state_dict()``. ``forward(Y, z0)`` runs the
    solver on already validated tensors; :meth:`encode` is the validated entry point.
    """

    SIGNAL_NDIM = 2
    KIND = "sparse_coding"
    Config = SparseCodingConfig
    TRAINING_STATE = ("n_steps_", "history_", "_init_from_data")

    def __init__(
        self,
        n_features: int,
        n_atoms: int,
        lam: float,
        *,
        nonneg: bool = False,
        nonneg_atoms: bool = False,
        init: Any = "data",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.config = SparseCodingConfig(
            n_features=check_int(n_features, "n_features", low=1),
            n_atoms=check_int(n_atoms, "n_atoms", low=1), lam=check_lam(lam),
            nonneg=nonneg, nonneg_atoms=nonneg_atoms,
            seed=seed, dtype=dtype_name(dtype),
        )
        device = resolve_device(device)
        W, self._init_from_data = initial_atoms(init, self.n_features, self.n_atoms, self.seed)
        if self.nonneg_atoms:
            if not isinstance(init, str) and bool((W < 0).any()):
                raise ValueError("init has negative entries, but nonneg_atoms=True keeps the "
                                 "atoms non-negative")
            W = normalize_columns_(W.abs())
        self.register_buffer("W", W.to(device=device, dtype=dtype))
        self.register_buffer(
            "A", torch.zeros(self.n_atoms, self.n_atoms, device=device, dtype=dtype)
        )
        self.register_buffer("B", torch.zeros_like(self.W))
        self.register_buffer(
            "last_used", torch.zeros(self.n_atoms, dtype=torch.long, device=device)
        )
        self.n_steps_ = 0
        self.history_: list[dict[str, float]] = []

    # ----------------------------------------------------------------- inference
    def dictionary(self) -> torch.Tensor:
        """The atoms, ``(n_features, n_atoms)``, detached."""
        return self.W.detach()

    def operator(self) -> DenseDictionary:
        """The dictionary as the solvers' operator (a view of the atoms)."""
        return DenseDictionary(self.dictionary())

    # ----------------------------------------------------------------- learning
    @with_fit_options(epochs=1, batch_size=256, batch="Global mini-batch", checkpoint_every=100)
    def fit(
        self,
        Y: Any,
        *,
        method: str = "online",
        solver: str = "auto",
        lr: float = 1.0,
        tol: float = 0.1,
        max_iter: int = 200,
        dead_after: int | None = None,
        options: FitOptions,
    ) -> list[dict[str, float]]:
        """Learn the atoms from ``Y`` in mini-batches.

        Under ``torchrun`` (a process group initialised, e.g. by
        :func:`latentebm.training.distributed.init_distributed`), ``batch_size`` is the global
        batch: each process codes its share of every batch, the sufficient statistics (or SGD
        gradients), atom usage and epoch sums are summed over the processes, and every process
        takes the same step, the one a single process takes on the same data (to rounding).
        Only rank 0 writes the checkpoint; every rank resumes from it, with any number of
        processes.

        Codes: the solver ``solver`` to relative gap ``tol``, warm-started from each sample's
        previous code.
        Columns are renormalised after every step. A NaN/inf energy or atom stops training with
        ``FloatingPointError`` (the last good checkpoint is kept).

        Parameters
        ----------
        Y : array-like, torch.Tensor or ShardedArray of shape (n_samples, n_features)
            Training signals; a :class:`~latentebm.data.streaming.ShardedArray` for data larger
            than memory (rows read per batch; codes then start from zero instead of each sample's
            previous code, and are not kept).
        {fit_batches}
        method : {"online", "sgd"}, default="online"
            ``"online"``: Mairal et al.'s block-coordinate update from the sufficient statistics;
            ``"sgd"``: projected SGD with step ``lr``.
        solver : str, default="auto"
            The coding step's method, a name :func:`latentebm.solve` takes. ``"auto"`` picks
            the compiled Gram coordinate descent (``"gram_cd"``) on the CPU and FISTA on a GPU;
            on B2 (whitened patches, 256 atoms, 2 threads, 2026-12-07) a minibatch took
            5.7 ms with ``"gram_cd"`` against 25.6 ms with ``"fista"``, for the same held-out
            energy after the same number of steps.
        lr : float, default=1.0
            Step of ``"sgd"``.
        tol : float, default=0.1
            Relative duality gap of the coding step. The gap of the residual's dual point
            overstates the energy error by orders of magnitude (whitened patches: codes at gap
            0.1 are within 0.7 % of the optimal energy), and the atoms do not need more:
            measured against ``tol=1e-3``, the same held-out energy after the same number of
            steps (0.17 % apart on the B2 patches, the MNIST demo's slightly lower), at 0.9× the
            time per step with ``"gram_cd"`` (B2, 2026-12-07 13:00: 5.7 against 6.4 ms) and
            about half with ``"fista"``.
        max_iter : int, default=200
            Iteration cap of the coding step.
        dead_after : int or None, default=None
            An atom unused for that many steps (default: one epoch) is re-initialised from the
            worst-reconstructed samples of the batch.
        {fit_options}

        Returns
        -------
        list of dict
            The per-epoch history (mean energy, mean non-zeros, seconds, re-initialised atoms).
        """
        streaming = isinstance(Y, ShardedArray)
        Y_t = Y if streaming else self.check_input(Y, "Y", ndim=2, signals=True)[0]
        if Y_t.shape[1] != self.n_features:
            raise ValueError(
                f"Y must have {self.n_features} features (columns), got {Y_t.shape[1]}"
            )
        n = Y_t.shape[0]
        options = options.checked(n)
        check_choice(method, "method", METHODS)
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        tol = check_scalar(tol, "tol", low=0.0)
        max_iter = check_int(max_iter, "max_iter", low=1)
        solver = self.coding_method(solver, (self.n_features,))
        steps_per_epoch = math.ceil(n / options.batch_size)
        dead_after = (
            steps_per_epoch if dead_after is None else check_int(dead_after, "dead_after", low=1)
        )
        fit_args = {"method": method, "solver": solver, "batch_size": options.batch_size,
                    "n_samples": n, "tol": tol, "max_iter": max_iter, "dead_after": dead_after}
        if method == "sgd":  # the online updates have no step size
            fit_args["lr"] = lr

        device, dtype = self.device, self.dtype
        codes, start = self.start_fit(Y_t, fit_args, options,
                                      codes_shape=None if streaming else (n, self.n_atoms))

        loop = self.training_loop(n, options, start=start, fit_args=fit_args,
                                  desc="sparse coding",
                                  extra={} if codes is None else {"codes": codes})
        with loop, torch.no_grad():
            for epoch in loop.epochs():
                stats = _EpochStats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    mine = dist.shard(b.idx)
                    Yb = Y_t[mine].to(device, dtype)
                    z0 = None if codes is None else codes[mine]
                    out = self(Yb, z0, tol=tol, max_iter=max_iter, method=solver)
                    Z = out.z
                    if codes is not None:
                        codes[b.idx] = dist.all_gather_cat(Z, what="of the codes")
                    self._dictionary_step(Yb, Z, out.energy, b.idx.numel(), method, lr,
                                          dead_after, stats)
                    loop.step_done(
                        b, self.n_steps_, loss=out.energy,
                        postfix={"energy": f"{stats.mean('energy'):.4g}",
                                 "nnz": f"{stats.mean('nnz'):.1f}"},
                    )
                stats.close()
        return self.history_

    def _dictionary_step(self, Yb: torch.Tensor, Z: torch.Tensor, energy: torch.Tensor,
                         n: int, method: str, lr: float, dead_after: int,
                         stats: _EpochStats) -> None:
        """Update the atoms (and statistics) from this process's part ``Yb``, ``Z`` (energies
        ``energy``) of a batch of ``n`` samples; re-initialise atoms unused for ``dead_after``
        steps. The batch sums are added over the processes in one collective."""
        W = self.W
        self.n_steps_ += 1
        sums = {"used": (Z != 0).sum(0).to(W.dtype), "energy": energy.sum().reshape(1),
                "nnz": (Z != 0).sum().to(W.dtype).reshape(1)}
        if method == "online":
            sums["ZZ"], sums["YZ"] = Z.T @ Z, Yb.T @ Z
        else:
            sums["grad"] = sgd_gradient_sum(W, Yb, Z)
        dist.all_reduce_dict_(sums, what="of the dictionary statistics")
        self.last_used[sums["used"] > 0] = self.n_steps_
        if method == "online":
            accumulate_sums_(self.A, self.B, sums["ZZ"], sums["YZ"], n, self.n_steps_)
            block_coordinate_update_(W, self.A, self.B, nonneg=self.nonneg_atoms)
        else:
            sgd_step_(W, sums["grad"], n, lr, nonneg=self.nonneg_atoms)
        dead = self.n_steps_ - self.last_used >= dead_after
        if dist.world_size() > 1 and bool(dead.any()):
            # every rank picks the same replacements from the whole batch, in batch order
            Yb = dist.all_gather_cat(Yb, what="of the batch (dead atoms)")
            Z = dist.all_gather_cat(Z, what="of the codes (dead atoms)")
        stats.reinit += reinitialize_atoms_(W, self.A, self.B, dead, Yb, Z,
                                            nonneg=self.nonneg_atoms)
        self.last_used[dead] = self.n_steps_
        stats.add_sums({"energy": sums["energy"], "nnz": sums["nnz"]}, n, reduced=True)

    # ----------------------------------------------------------------- helpers
    def _init_atoms_from(self, Y: torch.Tensor) -> None:
        atoms = atoms_from_data(Y, self.n_atoms, self.seed, dtype=self.dtype)
        self.W.copy_(normalize_columns_(atoms.clamp_min(0)) if self.nonneg_atoms else atoms)
        self._init_from_data = False


class _EpochStats(MeanRecord):
    """Running means over one epoch of the energy and the non-zeros per code, and the count of
    re-initialised atoms."""

    KEYS = ("energy", "nnz")
    PREFIX = "mean_"

    def __init__(self, history: list, epoch: int) -> None:
        super().__init__(history, epoch)
        self.reinit = 0

    def values(self) -> dict[str, Any]:
        return {**super().values(), "reinitialized": self.reinit}

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.reinit = int(entry["reinitialized"])


__all__ = ["SparseCoding"]
