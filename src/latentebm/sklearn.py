"""scikit-learn facade: :class:`DictionaryLearning` and :class:`SparseCoder`, usable in a
``Pipeline``.

``alpha`` means what it means in ``sklearn.decomposition.DictionaryLearning``: the λ of the
per-sample energy ``½‖x − z·components_‖² + alpha·‖z‖₁``. (``sklearn.linear_model.Lasso``
divides the squared error by ``n``; there the same problem has ``alpha = λ / n_features``.)
Parameters are checked by scikit-learn's own validation, so errors name the parameter the
caller passed (``alpha``, ``n_components``, ``max_iter``, ...). Codes come from
:func:`latentebm.solve` with ``method="auto"`` (compiled coordinate descent on the CPU, FISTA on
a GPU or with ``alpha=0``), stopped on a certified duality gap.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._docs import fill_doc
from ._validation import MAX_SEED, resolve_device
from .data.image_shards import ShardedImages
from .data.streaming import ShardedArray
from .models import SparseCoding
from .solvers import solve

__all__ = ["DictionaryLearning", "SparseCoder"]

_FLOATS = [np.float64, np.float32]
_NON_NEGATIVE = Interval(Real, 0, math.inf, closed="left")  # finite, >= 0
_DEVICE = [str, torch.device, None]
_TRANSFORM_CONSTRAINTS: dict = {
    "transform_alpha": [_NON_NEGATIVE],
    "transform_tol": [_NON_NEGATIVE],
    "transform_max_iter": [Interval(Integral, 1, None, closed="left")],
    "positive_code": ["boolean"],
    "device": _DEVICE,
}


def _in_memory(X: Any) -> Any:
    """``X``, unless it is a dataset on disk, which array conversion would read whole, row by
    row, into an array of the wrong shape."""
    if isinstance(X, ShardedArray | ShardedImages):
        raise TypeError(f"X is a {type(X).__name__} on disk; the scikit-learn estimators take "
                        "arrays in memory (X[:] reads it), and latentebm.SparseCoding.fit "
                        "streams a ShardedArray")
    return X


def _encode(X: np.ndarray, components: np.ndarray, alpha: float, positive: bool, tol: float,
            max_iter: int, device) -> np.ndarray:
    """Certified codes ``(n_samples, n_components)`` of ``X`` on ``components`` (rows are
    atoms), by the solver ``solve(method="auto")`` picks; a :class:`ConvergenceWarning` names
    the codes that did not reach ``tol`` within ``max_iter``."""
    dev = resolve_device(device)
    Y = torch.from_numpy(np.array(X, copy=True)).to(dev)
    W = torch.from_numpy(np.array(components.T, order="C", copy=True)).to(dev, Y.dtype)
    with torch.no_grad():
        result = solve(Y, W, float(alpha), tol=float(tol), max_iter=int(max_iter),
                       nonneg=bool(positive))
    unconverged = int((~result.converged).sum())
    if unconverged:
        warnings.warn(
            f"{unconverged} of {Y.shape[0]} codes did not reach the relative duality gap "
            f"transform_tol={tol:g} within transform_max_iter={max_iter} (method "
            f"{result.method!r}); raise transform_max_iter or transform_tol",
            ConvergenceWarning, stacklevel=_caller_stacklevel())
    return result.z.cpu().numpy()


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of a warning raised here that points at the caller's own line: the
    first frame outside latentebm and scikit-learn (which wraps ``transform`` for
    ``set_output``, so a fixed level would point into it)."""
    import sklearn

    inside = (str(Path(__file__).parent), str(Path(sklearn.__file__).parent))
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        level, frame = level + 1, frame.f_back
    return level


def _decode(estimator, codes, components: np.ndarray) -> np.ndarray:
    """``codes @ components`` after checking ``codes`` ``(n_samples, n_components)``."""
    Z = check_array(codes, dtype=_FLOATS)
    if Z.shape[1] != components.shape[0]:
        raise ValueError(
            f"X has {Z.shape[1]} columns, but {type(estimator).__name__} has "
            f"{components.shape[0]} components (inverse_transform takes codes)"
        )
    return Z @ components.astype(Z.dtype, copy=False)


@fill_doc
class _CertifiedCoder(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator, metaclass=ABCMeta
):
    """What both estimators share: certified codes and the decoding back to signals.

    Subclasses provide :meth:`_atoms` (rows are atoms, checked against ``n_features``),
    :meth:`_transform_lambda` and :meth:`_check_signals`.
    """

    def __init__(self, *, transform_alpha, positive_code: bool, transform_max_iter: int,
                 transform_tol: float, device) -> None:
        self.transform_alpha = transform_alpha
        self.positive_code = positive_code
        self.transform_max_iter = transform_max_iter
        self.transform_tol = transform_tol
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit to ``X``: learn ``components_`` (:class:`DictionaryLearning`) or only check ``X``
        against the dictionary (:class:`SparseCoder`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training signals.
        {sklearn_y_ignored}

        Returns
        -------
        self
        """
        self._fit(validate_data(self, _in_memory(X), dtype=_FLOATS))
        return self

    def transform(self, X, y=None):
        """Sparse codes of ``X``, each certified to a relative duality gap of ``transform_tol``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Signals.
        {sklearn_y_ignored}

        Returns
        -------
        ndarray of shape (n_samples, n_components)

        Warns
        -----
        ConvergenceWarning
            Where some codes did not reach ``transform_tol`` within ``transform_max_iter``.
        """
        self._validate_params()  # set_params may have changed them since fit
        X = self._check_signals(X)
        return _encode(X, self._atoms(X.shape[1]), self._transform_lambda(),
                       self.positive_code, self.transform_tol, self.transform_max_iter,
                       self.device)

    def inverse_transform(self, X):
        """Signals from codes: ``X @ atoms``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Codes, e.g. from :meth:`transform`.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        return _decode(self, X, self._atoms(None))

    @abstractmethod
    def _fit(self, X: np.ndarray) -> None:
        """Fit to the validated signals ``X`` ``(n_samples, n_features)``."""

    @abstractmethod
    def _atoms(self, n_features: int | None) -> np.ndarray:
        """Atoms as rows ``(n_components, n_features)``, checked against ``n_features``."""

    def _transform_lambda(self) -> float:
        return 1.0 if self.transform_alpha is None else self.transform_alpha

    def _check_signals(self, X) -> np.ndarray:
        return validate_data(self, _in_memory(X), dtype=_FLOATS, reset=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


@fill_doc
class DictionaryLearning(_CertifiedCoder):
    """Sparse dictionary learning with certified codes and Mairal et al.'s online updates.

    Parameters
    ----------
    n_components : int or None
        Number of atoms (default: ``n_features``).
    alpha : float
        Sparsity λ >= 0 of ``½‖x − z·components_‖² + λ‖z‖₁`` (scikit-learn's meaning).
    max_iter : int
        Epochs over the data in :meth:`fit` (:meth:`partial_fit` does one pass).
    batch_size : int
        Mini-batch size.
    tol : float
        Relative duality gap of the codes during training.
    fit_algorithm : {"online", "sgd"}
        Block coordinate descent on sufficient statistics, or projected gradient steps.
    transform_alpha : float or None
        λ used by :meth:`transform` (default: ``alpha``).
    transform_tol : float
        Relative duality gap at which :meth:`transform`'s solver stops a sample.
    transform_max_iter : int
        Iteration cap of :meth:`transform`'s solver (FISTA iterations, or outer rounds of
        coordinate descent).
    positive_code : bool
        Constrain codes to be non-negative.
    positive_dict : bool
        Constrain the atoms to be non-negative (non-negative matrix factorisation with
        ``positive_code``).
    random_state : int, RandomState or None
        Seed of the initial atoms and the sample order.
    device : str, torch.device or None
        Torch device for the computations (``None``: CPU).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The atoms, unit-norm rows.
    n_features_in_ : int
        Features seen in :meth:`fit`.
    n_iter_ : int
        Epochs run.
    n_steps_ : int
        Mini-batch updates run.
    error_ : ndarray of shape (n_iter_,)
        The mean energy ``½‖x − z·components_‖² + alpha‖z‖₁`` of each epoch's samples, each
        measured as its mini-batch was coded (with the atoms of that moment).
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [_NON_NEGATIVE],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "tol": [_NON_NEGATIVE],
        "fit_algorithm": [StrOptions({"online", "sgd"})],
        "positive_dict": ["boolean"],
        **_TRANSFORM_CONSTRAINTS,
        "transform_alpha": [_NON_NEGATIVE, None],
        "random_state": [Interval(Integral, 0, MAX_SEED, closed="both"),
                         np.random.RandomState, None],
    }

    def __init__(
        self,
        n_components: int | None = None,
        *,
        alpha: float = 1.0,
        max_iter: int = 10,
        batch_size: int = 256,
        tol: float = 1e-4,
        fit_algorithm: str = "online",
        transform_alpha: float | None = None,
        transform_tol: float = 1e-6,
        transform_max_iter: int = 1000,
        positive_code: bool = False,
        positive_dict: bool = False,
        random_state=None,
        device: str | None = None,
    ) -> None:
        self.n_components = n_components
        self.positive_dict = positive_dict
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.fit_algorithm = fit_algorithm
        self.random_state = random_state
        super().__init__(transform_alpha=transform_alpha, positive_code=positive_code,
                         transform_max_iter=transform_max_iter, transform_tol=transform_tol,
                         device=device)

    def _fit(self, X: np.ndarray) -> None:
        self._train(self._new_model(X), X, epochs=int(self.max_iter))
        self.n_iter_ = int(self.max_iter)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One pass of mini-batch updates over ``X``, continuing from the current atoms.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training signals (the same ``n_features`` on every call).
        {sklearn_y_ignored}

        Returns
        -------
        self
        """
        first = not hasattr(self, "_model")
        if not first:  # scikit-learn validates a fitted estimator's partial_fit no more
            self._validate_params()
            self._refuse_changes_to_the_model()
        X = validate_data(self, _in_memory(X), dtype=_FLOATS, reset=first)
        # a copy, kept only when its pass succeeds: a diverged pass leaves the estimator as it was
        self._train(self._new_model(X) if first else copy.deepcopy(self._model), X, epochs=1)
        self.n_iter_ = 1 if first else self.n_iter_ + 1
        return self

    def _refuse_changes_to_the_model(self) -> None:
        """The model ``partial_fit`` continues holds ``alpha``, ``positive_code``,
        ``positive_dict`` and ``n_components`` and the atoms with their online statistics: a
        change to any of them since the first call would be ignored, so it is an error."""
        model = self._model
        n_components = (model.n_features if self.n_components is None
                        else self.n_components)
        changed = [name for name, now, then in (
            ("alpha", float(self.alpha), model.lam),
            ("positive_code", bool(self.positive_code), model.nonneg),
            ("positive_dict", bool(self.positive_dict), model.nonneg_atoms),
            ("n_components", n_components, model.n_atoms),
        ) if now != then]
        atoms = model.dictionary().T.cpu().numpy().astype(self.components_.dtype)
        if self.components_.shape != atoms.shape or not np.array_equal(self.components_,
                                                                        atoms):
            changed.append("components_")
        if changed:
            raise ValueError(
                f"{', '.join(changed)} changed since the first partial_fit, whose model (atoms "
                "and online statistics) partial_fit continues; set them before the first call, "
                "or call fit to start again"
            )

    def _atoms(self, n_features: int | None) -> np.ndarray:
        check_is_fitted(self, "components_")
        return self.components_

    def _transform_lambda(self) -> float:
        return self.alpha if self.transform_alpha is None else self.transform_alpha

    def _new_model(self, X: np.ndarray) -> SparseCoding:
        # int(): scikit-learn's Integral intervals let True through, as its own estimators do
        n_components = X.shape[1] if self.n_components is None else int(self.n_components)
        seed = self.random_state
        if not isinstance(seed, (int, np.integer)):
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        dtype = torch.float64 if X.dtype == np.float64 else torch.float32
        return SparseCoding(X.shape[1], n_components, float(self.alpha),
                            nonneg=bool(self.positive_code),
                            nonneg_atoms=bool(self.positive_dict), seed=int(seed),
                            device=self.device, dtype=dtype)

    def _train(self, model: SparseCoding, X: np.ndarray, epochs: int) -> None:
        """Train ``model`` on ``X``; it becomes the estimator's model (atoms in
        ``components_``) only if training succeeds."""
        try:
            model.fit(np.array(X, copy=True), epochs=epochs, batch_size=int(self.batch_size),
                      method=self.fit_algorithm, tol=self.tol, progress=False)
        except FloatingPointError as exc:
            raise FloatingPointError(
                f"{type(self).__name__}: training diverged (NaN or inf in the dictionary "
                f"update; X's largest magnitude is {float(np.abs(X).max()):.3g}); rescale X"
            ) from exc
        self._model = model
        self.components_ = model.dictionary().T.cpu().numpy().astype(X.dtype, copy=True)
        self.n_steps_ = model.n_steps_
        self.error_ = np.array([epoch["mean_energy"] for epoch in model.history_])

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]


@fill_doc
class SparseCoder(_CertifiedCoder):
    """Sparse codes on a fixed dictionary, with a certified duality gap.

    The counterpart of ``sklearn.decomposition.SparseCoder`` with one criterion: each sample's
    code minimises ``½‖x − z·dictionary‖² + transform_alpha·‖z‖₁`` to a relative duality gap of
    ``transform_tol``. No fitting is needed (:meth:`fit` only checks its input).

    Parameters
    ----------
    dictionary : array-like of shape (n_components, n_features)
        The atoms, one per row (used as given: not normalised).
    transform_alpha : float or None
        Sparsity λ >= 0 (``None``: 1.0, as in scikit-learn).
    positive_code : bool
        Constrain codes to be non-negative.
    transform_max_iter : int
        Iteration cap of the solver (FISTA iterations, or outer rounds of coordinate descent).
    transform_tol : float
        Relative duality gap at which a sample stops.
    device : str, torch.device or None
        Torch device for the computations (``None``: CPU).

    Attributes
    ----------
    n_components_ : int
        Atoms in ``dictionary`` (set by :meth:`fit`).
    n_features_in_ : int
        Features seen in :meth:`fit`.
    """

    _parameter_constraints: dict = {"dictionary": ["array-like"], **_TRANSFORM_CONSTRAINTS,
                                    "transform_alpha": [_NON_NEGATIVE, None]}

    def __init__(
        self,
        dictionary,
        *,
        transform_alpha: float = 1.0,
        positive_code: bool = False,
        transform_max_iter: int = 1000,
        transform_tol: float = 1e-6,
        device: str | None = None,
    ) -> None:
        self.dictionary = dictionary
        super().__init__(transform_alpha=transform_alpha, positive_code=positive_code,
                         transform_max_iter=transform_max_iter, transform_tol=transform_tol,
                         device=device)

    def _fit(self, X: np.ndarray) -> None:
        self.n_components_ = self._atoms(X.shape[1]).shape[0]

    def _check_signals(self, X) -> np.ndarray:
        if hasattr(self, "n_features_in_"):
            return validate_data(self, _in_memory(X), dtype=_FLOATS, reset=False)
        return check_array(_in_memory(X), dtype=_FLOATS)

    def _atoms(self, n_features: int | None) -> np.ndarray:
        D = check_array(self.dictionary, dtype=_FLOATS, input_name="dictionary")
        if n_features is not None and D.shape[1] != n_features:
            raise ValueError(
                f"dictionary has {D.shape[1]} features (shape {D.shape}) but X has "
                f"{n_features}"
            )
        return D

    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags
