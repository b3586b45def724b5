"""The scikit-learn facade: estimator checks, Pipeline use, and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import sparse_encode
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from latentebm.sklearn import DictionaryLearning


@parametrize_with_checks([DictionaryLearning(n_components=5, max_iter=3, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_transform_matches_sklearn_sparse_encode():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 12))
    est = DictionaryLearning(n_components=8, alpha=0.3, max_iter=3, random_state=0,
                             transform_tol=1e-12, transform_max_iter=20_000).fit(X)
    codes = est.transform(X)
    reference = sparse_encode(X, est.components_, algorithm="lasso_cd", alpha=0.3,
                              max_iter=100_000)

    def energy(z):
        return 0.5 * ((X - z @ est.components_) ** 2).sum(1) + 0.3 * np.abs(z).sum(1)

    np.testing.assert_allclose(energy(codes), energy(reference), rtol=1e-6)
    assert np.all(energy(codes) <= energy(reference) + 1e-10)


def test_components_shape_and_norms():
    X = np.random.default_rng(1).standard_normal((100, 9)).astype(np.float32)
    est = DictionaryLearning(n_components=16, alpha=0.1, max_iter=2, random_state=0).fit(X)
    assert est.components_.shape == (16, 9)
    assert est.components_.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(est.components_, axis=1), 1.0, rtol=1e-5)
    assert est.transform(X).shape == (100, 16)


def test_partial_fit_continues():
    X = np.random.default_rng(2).standard_normal((200, 10))
    est = DictionaryLearning(n_components=6, alpha=0.2, random_state=0)
    est.partial_fit(X[:100])
    first = est.components_.copy()
    est.partial_fit(X[100:])
    assert est.n_iter_ == 2 and est.n_steps_ >= 2
    assert not np.allclose(first, est.components_)
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:, :5])


def test_in_a_pipeline():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 10))
    y = (X[:, 0] > 0).astype(int)
    pipe = make_pipeline(DictionaryLearning(n_components=10, alpha=0.05, max_iter=2,
                                            random_state=0), LogisticRegression())
    assert pipe.fit(X, y).score(X, y) > 0.8
