"""The scikit-learn facade: estimator checks, Pipeline use, and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import sparse_encode
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import estimator_checks_generator, parametrize_with_checks

from latentebm.sklearn import DictionaryLearning, SparseCoder


@parametrize_with_checks([DictionaryLearning(n_components=5, max_iter=3, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _run_with_matching_dictionary(check, rng) -> int:
    """Run ``check`` on a SparseCoder whose dictionary matches the width of the data the check
    draws (scikit-learn does the same for its own SparseCoder); returns that width."""
    for width in (3, 2, 5, 10, 4, 8, 1, 6, 20):
        try:
            check(SparseCoder(rng.normal(size=(5, width)), transform_alpha=0.1))
        except (ValueError, AssertionError) as exc:
            cause = exc if isinstance(exc, ValueError) else exc.__cause__
            if "dictionary has" in str(cause):  # the check wraps some errors
                continue
            raise
        return width
    raise AssertionError(f"{check} feeds data of no width tried")


def test_sparse_coder_passes_the_estimator_checks():
    rng = np.random.default_rng(0)
    probe = SparseCoder(rng.normal(size=(5, 3)))
    checks = list(estimator_checks_generator(probe, legacy=True, mark=None))
    assert len(checks) > 30
    for _, check in checks:
        _run_with_matching_dictionary(check, rng)


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


def test_positive_dict_and_error_per_epoch():
    """scikit-learn's positive_dict and error_, which a user porting code reaches for."""
    X = np.random.default_rng(3).standard_normal((300, 12))
    free = DictionaryLearning(n_components=8, alpha=0.1, max_iter=3, random_state=0).fit(X)
    positive = DictionaryLearning(n_components=8, alpha=0.1, max_iter=3, random_state=0,
                                  positive_dict=True).fit(X)
    assert free.components_.min() < 0 and positive.components_.min() >= 0
    np.testing.assert_allclose(np.linalg.norm(positive.components_, axis=1), 1.0, rtol=1e-6)
    assert free.error_.shape == (3,) and free.error_[-1] < free.error_[0]
    # the atoms the last epoch ended with code that epoch's data no worse than it was coded
    codes = free.transform(X)
    final = (0.5 * ((X - codes @ free.components_) ** 2).sum(1) + 0.1 * np.abs(codes).sum(1))
    assert final.mean() <= free.error_[-1] * (1 + 1e-6)
    free.partial_fit(X)
    assert free.error_.shape == (free.n_iter_,) == (4,)


@pytest.mark.parametrize("change, name", [
    ({"alpha": 50.0}, "alpha changed"),
    ({"n_components": 8}, "n_components changed"),
    ({"positive_code": True}, "positive_code changed"),
    ({"positive_dict": True}, "positive_dict changed"),
    ({"positive_dict": "yes"}, "'positive_dict' parameter"),
    ({"alpha": -1.0}, "'alpha' parameter"),
    ({"fit_algorithm": "bad"}, "'fit_algorithm' parameter"),
    ({"batch_size": 0}, "'batch_size' parameter"),
])
def test_partial_fit_refuses_what_it_would_ignore(change, name):
    """After the first call partial_fit continued its own model whatever set_params said (and
    scikit-learn skips parameter validation on a fitted estimator's partial_fit)."""
    X = np.random.default_rng(2).standard_normal((200, 10))
    est = DictionaryLearning(n_components=6, alpha=0.2, random_state=0).partial_fit(X)
    est.set_params(**change)
    with pytest.raises(ValueError, match=name):
        est.partial_fit(X)
    est = DictionaryLearning(n_components=6, alpha=0.2, random_state=0).partial_fit(X)
    est.components_ = est.components_[::-1].copy()
    with pytest.raises(ValueError, match="components_ changed"):
        est.partial_fit(X)


def test_values_scikit_learn_accepts_are_accepted():
    """NumPy booleans, alpha=True and transform_alpha=None pass scikit-learn's validation and
    must work; a read-only dictionary is copied rather than handed to torch."""
    import warnings

    X = np.random.default_rng(2).standard_normal((50, 10))
    DictionaryLearning(n_components=4, positive_code=np.bool_(True), max_iter=1).fit(X)
    DictionaryLearning(n_components=4, alpha=True, max_iter=1).fit(X)
    one = DictionaryLearning(n_components=True, max_iter=True, batch_size=True).fit(X)
    assert one.components_.shape == (1, 10) and one.n_iter_ == 1
    D = np.random.default_rng(3).standard_normal((5, 10))
    np.testing.assert_array_equal(SparseCoder(D, transform_alpha=None).transform(X),
                                  SparseCoder(D, transform_alpha=1.0).transform(X))
    read_only = np.asfortranarray(D)
    read_only.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SparseCoder(read_only, transform_alpha=0.1).transform(X)


def test_in_a_pipeline():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 10))
    y = (X[:, 0] > 0).astype(int)
    pipe = make_pipeline(DictionaryLearning(n_components=10, alpha=0.05, max_iter=2,
                                            random_state=0), LogisticRegression())
    assert pipe.fit(X, y).score(X, y) > 0.8


@pytest.mark.parametrize(
    ("params", "name"),
    [({"alpha": -1.0}, "alpha"), ({"alpha": np.inf}, "alpha"), ({"n_components": 0},
      "n_components"), ({"max_iter": 0}, "max_iter"), ({"fit_algorithm": "lars"},
      "fit_algorithm"), ({"transform_alpha": -0.1}, "transform_alpha"),
     ({"transform_max_iter": 0}, "transform_max_iter"), ({"transform_tol": -1.0},
      "transform_tol"), ({"transform_tol": float("nan")}, "transform_tol"),
     ({"random_state": 2**63}, "random_state"), ({"positive_code": "yes"}, "positive_code")],
)
def test_errors_name_the_sklearn_parameter(params, name):
    X = np.random.default_rng(4).standard_normal((20, 6))
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        DictionaryLearning(**{"n_components": 3, "max_iter": 1, **params}).fit(X)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"transform_alpha": -0.1}, "transform_alpha"), ({"transform_max_iter": 0},
      "transform_max_iter"), ({"transform_tol": -1.0}, "transform_tol"),
     ({"dictionary": "atoms"}, "dictionary")],
)
def test_sparse_coder_errors_name_the_parameter(params, name):
    X = np.random.default_rng(4).standard_normal((20, 6))
    kwargs = {"dictionary": np.eye(6), **params}
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        SparseCoder(**kwargs).transform(X)
    with pytest.raises(ValueError, match="dictionary has 6 features"):
        SparseCoder(np.eye(6)).fit(X[:, :4])


@pytest.mark.parametrize(("params", "name"), [
    ({"transform_alpha": -1.0}, "transform_alpha"), ({"transform_max_iter": 0},
     "transform_max_iter"), ({"positive_code": "yes"}, "positive_code"),
    ({"device": "foo"}, "device")])
def test_transform_checks_parameters_set_after_fit(params, name):
    X = np.random.default_rng(4).standard_normal((20, 6))
    est = DictionaryLearning(n_components=3, max_iter=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match=name):
        est.set_params(**params).transform(X)


def test_transform_warns_about_codes_that_did_not_converge():
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    D, X = rng.standard_normal((32, 64)), rng.standard_normal((50, 64))
    coder = SparseCoder(D, transform_alpha=0.01, transform_max_iter=1, transform_tol=1e-12)
    with pytest.warns(ConvergenceWarning, match="did not reach") as caught:
        coder.transform(X)
    # at the caller's line, not inside scikit-learn's set_output wrapper of transform
    assert caught[0].filename == __file__


def test_a_failed_fit_or_pass_leaves_the_estimator_as_it_was():
    X = np.random.default_rng(0).standard_normal((30, 6))
    fresh = DictionaryLearning(n_components=3, max_iter=1, random_state=0)
    with pytest.raises(FloatingPointError, match="DictionaryLearning: training diverged.*rescale"):
        fresh.fit(X * 1e160)
    assert fresh.partial_fit(X).n_iter_ == 1  # starts afresh, as if fit had not been called
    fitted = DictionaryLearning(n_components=3, max_iter=1, random_state=0).fit(X)
    atoms = fitted.components_.copy()
    with pytest.raises(FloatingPointError, match="rescale X"):
        fitted.partial_fit(X * 1e160)
    np.testing.assert_array_equal(fitted.components_, atoms)
    assert fitted.partial_fit(X).n_iter_ == 2  # continues from the atoms it had


def test_sparse_coder_matches_dictionary_learning_and_sklearn():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 8))
    est = DictionaryLearning(n_components=6, alpha=0.2, max_iter=2, random_state=0,
                             transform_tol=1e-10, transform_max_iter=20_000).fit(X)
    coder = SparseCoder(est.components_, transform_alpha=0.2, transform_tol=1e-10,
                        transform_max_iter=20_000)
    codes = coder.transform(X)  # no fit needed
    np.testing.assert_allclose(codes, est.transform(X), atol=1e-8)
    reference = sparse_encode(X, est.components_, algorithm="lasso_cd", alpha=0.2,
                              max_iter=100_000)

    def energy(z):
        return 0.5 * ((X - z @ est.components_) ** 2).sum(1) + 0.2 * np.abs(z).sum(1)

    assert np.all(energy(codes) <= energy(reference) + 1e-9)
    positive = SparseCoder(est.components_, transform_alpha=0.2, positive_code=True)
    assert (positive.fit(X).transform(X) >= 0).all() and positive.n_components_ == 6


def test_inverse_transform():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((40, 7)).astype(np.float32)
    est = DictionaryLearning(n_components=12, alpha=0.01, max_iter=2, random_state=0).fit(X)
    back = est.inverse_transform(est.transform(X))
    assert back.shape == X.shape and back.dtype == np.float32
    assert np.linalg.norm(back - X) < 0.2 * np.linalg.norm(X)
    coder = SparseCoder(est.components_, transform_alpha=0.01)
    np.testing.assert_allclose(coder.inverse_transform(np.eye(12)), est.components_, rtol=1e-6)
    with pytest.raises(ValueError, match="12 components"):
        est.inverse_transform(X)


def test_a_dataset_on_disk_is_refused_before_it_is_read(tmp_path):
    """fit(ShardedArray) read every row into an (n, 1, d) array (5.6 s, 673 MB for 200 000
    rows) and then failed on "dim 3"."""
    from latentebm.data.streaming import ShardedArray, write_shards

    write_shards(np.random.default_rng(0).standard_normal((50, 6)), tmp_path / "d")
    data = ShardedArray(tmp_path / "d")
    with pytest.raises(TypeError, match="ShardedArray on disk"):
        DictionaryLearning(n_components=4).fit(data)
    with pytest.raises(TypeError, match="ShardedArray on disk"):
        SparseCoder(np.eye(6)[:4]).transform(data)


def test_image_shards_refuse_complex_and_text(tmp_path):
    from latentebm.data.image_shards import write_image_shards

    with pytest.raises(TypeError, match="image 0 must hold real numbers, got dtype complex"):
        write_image_shards(np.ones((2, 1, 8, 8), complex), tmp_path / "c")
