"""scikit-learn facade: :class:`DictionaryLearning`, usable in a ``Pipeline``.

``alpha`` means what it means in ``sklearn.decomposition.DictionaryLearning``: the λ of the
per-sample energy ``½‖x − z·components_‖² + alpha·‖z‖₁``. (``sklearn.linear_model.Lasso``
divides the squared error by ``n``; there the same problem has ``alpha = λ / n_features``.)
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .models import SparseCoding
from .operators import DenseDictionary
from .regularizers import get_regularizer
from .solvers import proximal_gradient


class DictionaryLearning(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Sparse dictionary learning with FISTA codes and Mairal et al.'s online updates.

    Parameters
    ----------
    n_components : number of atoms (default: ``n_features``).
    alpha : sparsity λ of ``½‖x − z·components_‖² + λ‖z‖₁`` (scikit-learn's meaning).
    max_iter : epochs over the data in :meth:`fit` (:meth:`partial_fit` does one pass).
    batch_size : mini-batch size.
    tol : relative duality gap of the codes during training.
    fit_algorithm : ``"online"`` (block coordinate on sufficient statistics) or ``"sgd"``.
    transform_alpha : λ used by :meth:`transform` (default: ``alpha``).
    transform_tol, transform_max_iter : FISTA stopping rule in :meth:`transform`.
    positive_code : constrain codes to be non-negative.
    random_state : seed (int), ``RandomState`` or ``None``.
    device : torch device for the computations (``None``: CPU).

    Attributes
    ----------
    components_ : ``(n_components, n_features)``, unit-norm rows.
    n_features_in_, n_iter_ (epochs run), n_steps_ (mini-batch updates run).
    """

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
        random_state=None,
        device: str | None = None,
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.fit_algorithm = fit_algorithm
        self.transform_alpha = transform_alpha
        self.transform_tol = transform_tol
        self.transform_max_iter = transform_max_iter
        self.positive_code = positive_code
        self.random_state = random_state
        self.device = device

    def fit(self, X, y=None):
        """Learn ``components_`` from ``X`` ``(n_samples, n_features)``."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self._model = self._new_model(X)
        self._train(X, epochs=self.max_iter)
        self.n_iter_ = self.max_iter
        return self

    def partial_fit(self, X, y=None):
        """One pass of mini-batch updates over ``X``, continuing from the current atoms."""
        first = not hasattr(self, "_model")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=first)
        if first:
            self._model = self._new_model(X)
            self.n_iter_ = 0
        self._train(X, epochs=1)
        self.n_iter_ += 1
        return self

    def transform(self, X):
        """Sparse codes ``(n_samples, n_components)`` of ``X`` by FISTA."""
        check_is_fitted(self, "components_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        lam = self.alpha if self.transform_alpha is None else self.transform_alpha
        device = torch.device(self.device or "cpu")
        Y = torch.from_numpy(np.array(X, copy=True)).to(device)
        W = torch.from_numpy(np.ascontiguousarray(self.components_.T)).to(device, Y.dtype)
        with torch.no_grad():
            out = proximal_gradient(
                DenseDictionary(W), Y, float(lam), get_regularizer(self.positive_code),
                tol=self.transform_tol, max_iter=self.transform_max_iter,
            )
        return out["z"].cpu().numpy()

    def _new_model(self, X: np.ndarray) -> SparseCoding:
        n_components = X.shape[1] if self.n_components is None else self.n_components
        seed = self.random_state
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        dtype = torch.float64 if X.dtype == np.float64 else torch.float32
        return SparseCoding(X.shape[1], n_components, self.alpha, nonneg=self.positive_code,
                            seed=int(seed), device=self.device, dtype=dtype)

    def _train(self, X: np.ndarray, epochs: int) -> None:
        self._model.fit(np.array(X, copy=True), epochs=epochs, batch_size=self.batch_size,
                        method=self.fit_algorithm, tol=self.tol, progress=False)
        self.components_ = self._model.dictionary().T.cpu().numpy().astype(X.dtype, copy=True)
        self.n_steps_ = self._model.n_steps_

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
