"""The stroke measure: ink bounding boxes of synthetic strokes, synthetic digits and MNIST."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.draw import circle_perimeter_aa, line_aa

from latentebm.data import load_mnist, mnist_vectors
from latentebm.metrics import STROKE_LEVEL, stroke_spans, stroke_summary


def pen(draw, size: int = 28) -> np.ndarray:
    """An image from anti-aliased pixel lists, blurred to MNIST's pen width."""
    img = np.zeros((size, size))
    for rr, cc, val in draw:
        img[rr, cc] = np.maximum(img[rr, cc], val)
    return gaussian_filter(img, 0.8).ravel()


def line(r0: int, c0: int, r1: int, c1: int):
    return line_aa(r0, c0, r1, c1)


def stroke_atoms() -> np.ndarray:
    """A short bar, a diagonal, an arc and a dot: what the lecture calls strokes."""
    rr, cc, val = circle_perimeter_aa(14, 14, 5)
    arc = rr <= 14  # the upper half of an 11-px circle
    return np.stack(
        [
            pen([line(14, 8, 14, 19)]),
            pen([line(6, 9, 17, 18)]),
            pen([(rr[arc], cc[arc], val[arc])]),
            pen([line(10, 10, 11, 11)]),
        ]
    )


def digit_atoms() -> np.ndarray:
    """A ring (a "0"), a "7" and a "1" with MNIST's 20-px extent."""
    return np.stack(
        [
            pen([circle_perimeter_aa(14, 14, 9)]),
            pen([line(4, 6, 4, 21), line(4, 21, 23, 11)]),
            pen([line(4, 15, 23, 13)]),
        ]
    )


def test_synthetic_strokes_are_strokes_and_digits_are_not():
    spans = stroke_spans(stroke_atoms(), (28, 28))
    assert (spans <= 14).all() and spans.min() >= 2
    assert (stroke_spans(digit_atoms(), (28, 28)) >= 19).all()
    summary = stroke_summary(np.vstack([stroke_atoms(), digit_atoms()]), (28, 28))
    assert summary["n_strokes"] == 4 and summary["share"] == pytest.approx(4 / 7)
    assert summary["max_span"] == 14 and summary["level"] == STROKE_LEVEL


def test_sign_colour_and_faint_context():
    atoms = stroke_atoms()
    np.testing.assert_array_equal(stroke_spans(-atoms, (28, 28)), stroke_spans(atoms, (28, 28)))
    colour = np.repeat(atoms.reshape(4, 28, 28, 1), 3, axis=3).reshape(4, -1)
    np.testing.assert_array_equal(stroke_spans(colour, (28, 28, 3)), stroke_spans(atoms, (28, 28)))
    # A bright stroke in front of a whole digit at 15 % of its contrast: a stroke at the
    # default level, a digit for a stricter level below the ghost's contrast.
    ghost = atoms[0] + 0.15 * digit_atoms()[0] / digit_atoms()[0].max() * atoms[0].max()
    assert stroke_spans(ghost[None], (28, 28))[0] <= 14
    assert stroke_spans(ghost[None], (28, 28), level=0.1)[0] >= 19


def test_bundled_mnist_digits_are_not_strokes():
    digits = mnist_vectors(load_mnist("train", sample=True)[0])
    summary = stroke_summary(digits, (28, 28))
    assert summary["share"] <= 0.002 and summary["median_span"] >= 19
    assert summary["n_atoms"] == len(digits) and summary["n_zero"] == 0


def test_zero_atoms_and_bad_arguments():
    atoms = np.vstack([stroke_atoms(), np.zeros((1, 784))])
    assert np.isnan(stroke_spans(atoms, (28, 28))[-1])
    summary = stroke_summary(atoms, (28, 28))
    assert summary["n_zero"] == 1 and summary["share"] == 1.0
    assert np.isnan(stroke_summary(np.zeros((2, 784)), (28, 28))["share"])
    with pytest.raises(ValueError, match="level"):
        stroke_spans(atoms, (28, 28), level=0.0)
    with pytest.raises(ValueError, match="max_span"):
        stroke_summary(atoms, (28, 28), max_span=0.5)
    with pytest.raises(ValueError, match="atoms"):
        stroke_spans(np.full((2, 784), np.nan), (28, 28))
    with pytest.raises(ValueError, match="image_shape"):
        stroke_spans(atoms, (28, 27))


def test_sparse_coding_result_text_names_numbers_claim_and_figures(tmp_path):
    from latentebm.experiments.sparse_coding_cmd import result_text

    common = {"n_atoms": 256, "n_train": 20000, "lam": 0.1, "codes": "nonneg",
              "train_seconds": 30.2, "test_relative_reconstruction_error": 0.05,
              "test_mean_nonzeros": 58.6, "test_mean_energy": 4.34}
    strokes = {**stroke_summary(stroke_atoms(), (28, 28)), "share_strict": 0.5,
               "strict_level": 0.2}
    text = result_text({**common, "dataset": "mnist", "strokes": strokes}, tmp_path)
    assert "strokes: 100% of 256 atoms" in text and "50% at 20%" in text
    assert "256 strokes" in text and str(tmp_path / "atoms.png") in text and "0.050" in text
    gabor = {"median_r2": 0.95, "share_r2_ge_0_8": 0.86, "orientation_spread": 0.9,
             "n_oriented": 200}
    text = result_text({**common, "dataset": "natural", "gabor": gabor}, tmp_path)
    assert "median R² 0.95" in text and "Gabor-like" in text and "orientation_frequency" in text
    assert "over the 200 oriented ones" in text
