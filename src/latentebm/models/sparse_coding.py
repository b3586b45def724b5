"""Sparse coding: ``E(y, z) = ½‖y − Wz‖² + λ‖z‖₁`` with a learned dictionary of unit-norm atoms."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from .._problem import to_output
from .._validation import as_tensor, check_int, check_lam, check_scalar, resolve_device
from ..checkpoint import check_config_matches, load_checkpoint, save_checkpoint
from ..dictionary_update import (
    accumulate_statistics_,
    block_coordinate_update_,
    normalize_columns_,
    reinitialize_atoms_,
    sgd_update_,
)
from ..operators import DenseDictionary
from ..regularizers import get_regularizer
from ..solvers import SolverResult, fista, proximal_gradient
from ..training.history import EpochRecord
from ..training.loop import MinibatchLoop, resuming

METHODS = ("online", "sgd")
RESUME_KEYS = ["n_features", "n_atoms", "lam", "nonneg", "method", "batch_size", "n_samples"]


class SparseCoding(nn.Module):
    """A dictionary ``W`` ``(n_features, n_atoms)`` with unit-norm columns and its L1 energy.

    ``lam`` is λ in ``½‖y − Wz‖² + λ‖z‖₁`` (scikit-learn's ``alpha``; the lecture's λ is 2λ).
    ``init``: ``"data"`` (atoms drawn from the training samples at the first :meth:`fit`),
    ``"random"`` (Gaussian), or an array ``(n_features, n_atoms)``.
    ``forward(Y)`` returns the optimal codes ``(batch, n_atoms)`` (found by FISTA, no gradient).
    """

    def __init__(
        self,
        n_features: int,
        n_atoms: int,
        lam: float,
        *,
        nonneg: bool = False,
        init: Any = "data",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.n_features = check_int(n_features, "n_features", low=1)
        self.n_atoms = check_int(n_atoms, "n_atoms", low=1)
        self.lam = check_lam(lam)
        self.nonneg = bool(nonneg)
        self.seed = check_int(seed, "seed", low=0)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        device = resolve_device(device)
        gen = torch.Generator().manual_seed(self.seed)
        W = torch.randn(self.n_features, self.n_atoms, generator=gen, dtype=torch.float64)
        self._init_from_data = isinstance(init, str) and init == "data"
        if isinstance(init, str):
            if init not in ("data", "random"):
                raise ValueError(f"init must be 'data', 'random' or an array, got {init!r}")
        else:
            W = as_tensor(init, "init", ndim=2).to(torch.float64).cpu().clone()
            if tuple(W.shape) != (self.n_features, self.n_atoms):
                want = (self.n_features, self.n_atoms)
                raise ValueError(f"init must have shape {want}, got {tuple(W.shape)}")
            if bool((W.norm(dim=0) == 0).any()):
                raise ValueError("init has an all-zero column; atoms must be non-zero")
        self.W = nn.Parameter(normalize_columns_(W).to(device=device, dtype=dtype))
        self.register_buffer(
            "A", torch.zeros(self.n_atoms, self.n_atoms, device=device, dtype=dtype)
        )
        self.register_buffer("B", torch.zeros_like(self.W.data))
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
        return DenseDictionary(self.dictionary())

    def as_energy(self):
        """This model as the general :class:`~latentebm.LatentVariableEBM`: no predictor, the
        decoder ``Dec(z) = Wz`` (a copy of the atoms), the same regularizer and λ. Its
        ``infer(None, Y)`` is :meth:`encode`'s FISTA over the same operator."""
        from ..decoders import ConditionalLinearDecoder
        from ..energy import LatentVariableEBM

        decoder = ConditionalLinearDecoder(self.dictionary(), offset=None, normalize=False)
        return LatentVariableEBM(None, decoder, get_regularizer(self.nonneg), self.lam)

    def encode(
        self, Y: Any, *, tol: float | None = None, max_iter: int = 1000, z0: Any = None
    ) -> SolverResult:
        """Optimal codes of ``Y`` ``(batch, n_features)`` by FISTA; see :func:`latentebm.fista`."""
        if isinstance(Y, torch.Tensor):
            self._check_device(Y, "Y")
        return fista(
            Y, self.operator(), self.lam, tol=tol, max_iter=max_iter, z0=z0, nonneg=self.nonneg
        )

    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        return self.encode(Y).z

    def decode(self, Z: Any) -> Any:
        """``Wz`` for codes ``(batch, n_atoms)``."""
        numpy_out = not isinstance(Z, torch.Tensor)
        Z_t = as_tensor(Z, "Z", ndim=2).to(self.W.device, self.W.dtype)
        if Z_t.shape[1] != self.n_atoms:
            raise ValueError(f"Z must have {self.n_atoms} columns, got {Z_t.shape[1]}")
        return to_output(Z_t @ self.dictionary().T, numpy_out)

    def energy(self, Y: Any, Z: Any | None = None) -> Any:
        """Per-sample energy; with ``Z=None``, the free energy ``min_z E(y, z)``."""
        if Z is None:
            return self.encode(Y).energy
        from ..objective import lasso_energy

        return lasso_energy(Y, self.operator(), Z, self.lam, nonneg=self.nonneg)

    # ----------------------------------------------------------------- learning
    def fit(
        self,
        Y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 256,
        method: str = "online",
        lr: float = 1.0,
        tol: float = 1e-3,
        max_iter: int = 200,
        dead_after: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        resume: bool = False,
        callback: Callable[[int, SparseCoding], None] | None = None,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Learn the atoms from ``Y`` ``(n_samples, n_features)`` in mini-batches.

        Codes: FISTA to relative gap ``tol``, warm-started from each sample's previous code.
        Dictionary: ``method="online"`` is Mairal et al.'s block-coordinate update from the
        sufficient statistics; ``"sgd"`` is projected SGD with step ``lr``. Columns are
        renormalised after every step. An atom unused for ``dead_after`` steps (default: one
        epoch) is re-initialised from the worst-reconstructed samples of the batch.
        ``checkpoint``: a ``.safetensors`` path written every ``checkpoint_every`` steps, at the
        end, and on Ctrl-C (after the step in flight); ``resume=True`` continues from it.
        Returns the per-epoch history (mean energy, mean non-zeros, seconds, re-initialised atoms).
        """
        Y_t = self._training_data(Y)
        epochs = check_int(epochs, "epochs", low=1)
        batch_size = check_int(batch_size, "batch_size", low=1)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        tol = check_scalar(tol, "tol", low=0.0)
        max_iter = check_int(max_iter, "max_iter", low=1)
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every", low=1)
        n = Y_t.shape[0]
        batch_size = min(batch_size, n)
        steps_per_epoch = math.ceil(n / batch_size)
        dead_after = (
            steps_per_epoch if dead_after is None else check_int(dead_after, "dead_after", low=1)
        )
        config = self._config(method=method, batch_size=batch_size, n_samples=n)

        codes = torch.zeros(n, self.n_atoms, device=Y_t.device, dtype=Y_t.dtype)
        start = (0, 0)
        if resuming(resume, checkpoint):
            codes, start = self._restore(checkpoint, config)
        elif self._init_from_data and self.n_steps_ == 0:
            self._init_atoms_from(Y_t)

        reg = get_regularizer(self.nonneg)
        W = self.W.data
        loop = MinibatchLoop(
            n, batch_size, epochs, seed=self.seed, device=Y_t.device, start=start,
            checkpoint=checkpoint, save=partial(self._save, checkpoint, config, codes),
            checkpoint_every=checkpoint_every, desc="sparse coding", progress=progress,
        )
        with loop, torch.no_grad():
            for epoch in loop.epochs():
                stats = _EpochStats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    Yb = Y_t[b.idx]
                    out = proximal_gradient(
                        DenseDictionary(W), Yb, self.lam, reg, z0=codes[b.idx], tol=tol,
                        max_iter=max_iter,
                    )
                    Z = out["z"]
                    codes[b.idx] = Z
                    self.n_steps_ += 1
                    used = (Z != 0).any(0)
                    self.last_used[used] = self.n_steps_
                    if method == "online":
                        accumulate_statistics_(self.A, self.B, Yb, Z, self.n_steps_)
                        block_coordinate_update_(W, self.A, self.B)
                    else:
                        sgd_update_(W, Yb, Z, lr)
                    dead = self.n_steps_ - self.last_used >= dead_after
                    n_new = reinitialize_atoms_(W, self.A, self.B, dead, Yb, Z)
                    self.last_used[dead] = self.n_steps_
                    stats.add(out["energy"], Z, n_new)
                    loop.step_done(
                        b, self.n_steps_,
                        postfix={"energy": f"{stats.mean_energy:.4g}",
                                 "nnz": f"{stats.mean_nnz:.1f}"},
                        callback=callback, callback_args=(self.n_steps_, self),
                    )
                stats.close()
        return self.history_

    # ----------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """Save the model (atoms, statistics, configuration) to a safetensors file."""
        self._save(path, self._config(), None, None, None)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: str | torch.device | None = None
    ) -> SparseCoding:
        tensors, config = load_checkpoint(path, kind="sparse_coding")
        dtype = torch.float64 if tensors["W"].dtype == torch.float64 else torch.float32
        model = cls(
            config["n_features"],
            config["n_atoms"],
            config["lam"],
            nonneg=config["nonneg"],
            init=tensors["W"].numpy(),
            seed=config["seed"],
            device=device,
            dtype=dtype,
        )
        model._load_state(tensors, config)
        return model

    def _config(self, **extra: Any) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_atoms": self.n_atoms,
            "lam": self.lam,
            "nonneg": self.nonneg,
            "seed": self.seed,
            **extra,
        }

    def _save(self, path, config, codes, epoch, batch) -> None:
        tensors = {"W": self.W.data, "A": self.A, "B": self.B, "last_used": self.last_used}
        if codes is not None:
            tensors["codes"] = codes
        state = {
            **config,
            "n_steps": self.n_steps_,
            "epoch": epoch,
            "batch": batch,
            "history": self.history_,
        }
        save_checkpoint(path, tensors, state, kind="sparse_coding")

    def _restore(self, path, config) -> tuple[torch.Tensor, tuple[int, int]]:
        tensors, saved = load_checkpoint(path, kind="sparse_coding")
        check_config_matches(saved, config, RESUME_KEYS + ["seed"])
        if "codes" not in tensors:
            raise ValueError(f"checkpoint {path} holds a finished model, not a training state")
        self._load_state(tensors, saved)
        return tensors["codes"].to(self.W.device, self.W.dtype), (saved["epoch"], saved["batch"])

    def _load_state(self, tensors, config) -> None:
        for name in ("W", "A", "B", "last_used"):
            target = getattr(self, name)
            target.data.copy_(tensors[name].to(target.device, target.dtype))
        self.n_steps_ = int(config.get("n_steps", 0))
        self.history_ = list(config.get("history", []))
        self._init_from_data = False

    # ----------------------------------------------------------------- helpers
    def _check_device(self, Y: torch.Tensor, name: str) -> None:
        if Y.device != self.W.device:
            raise ValueError(f"{name} is on {Y.device} but the model is on {self.W.device}")

    def _training_data(self, Y: Any) -> torch.Tensor:
        if isinstance(Y, torch.Tensor):
            self._check_device(Y, "Y")
        Y_t = as_tensor(Y, "Y", ndim=2).to(self.W.device, self.W.dtype)
        if Y_t.shape[1] != self.n_features:
            raise ValueError(
                f"Y must have {self.n_features} features (columns), got {Y_t.shape[1]}"
            )
        return Y_t

    def _init_atoms_from(self, Y: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        n = Y.shape[0]
        pick = torch.randperm(n, generator=gen)[: self.n_atoms]
        if n < self.n_atoms:
            extra = torch.randint(n, (self.n_atoms - n,), generator=gen)
            pick = torch.cat([pick, extra])
        atoms = Y[pick.to(Y.device)].T.clone()
        noise = torch.randn(atoms.shape, generator=gen, dtype=torch.float64).to(atoms)
        atoms += 1e-3 * atoms.norm(dim=0, keepdim=True).clamp_min(1e-3) * noise
        self.W.data.copy_(normalize_columns_(atoms))
        self._init_from_data = False


class _EpochStats(EpochRecord):
    """Running means over one epoch: energy, non-zeros per code, re-initialised atoms."""

    def __init__(self, history: list, epoch: int) -> None:
        super().__init__(history, epoch)
        self.energy_sum = self.nnz_sum = 0.0
        self.count = self.reinit = 0

    @property
    def mean_energy(self) -> float:
        return self.energy_sum / max(self.count, 1)

    @property
    def mean_nnz(self) -> float:
        return self.nnz_sum / max(self.count, 1)

    def add(self, energy: torch.Tensor, Z: torch.Tensor, n_new: int) -> None:
        self.energy_sum += float(energy.sum())
        self.nnz_sum += float((Z != 0).sum())
        self.count += Z.shape[0]
        self.reinit += n_new
        self.publish(partial=True)

    def values(self) -> dict[str, Any]:
        return {"mean_energy": self.mean_energy, "mean_nnz": self.mean_nnz,
                "samples": self.count, "reinitialized": self.reinit}

    def restore(self, entry: dict[str, Any]) -> None:
        self.count = int(entry["samples"])
        self.energy_sum = entry["mean_energy"] * self.count
        self.nnz_sum = entry["mean_nnz"] * self.count
        self.reinit = int(entry["reinitialized"])


__all__ = ["SparseCoding"]
