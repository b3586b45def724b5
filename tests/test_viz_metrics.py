"""Atom metrics (localisation, Gabor and DoG fits, orientation spread) and figure writers."""

from __future__ import annotations

import gzip
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.draw import line_aa

from latentebm import SparseCoding, viz
from latentebm._io import file_mode, write_atomic, write_bytes, write_json
from latentebm.metrics import (
    LOCALIZED_THRESHOLD,
    GaborFit,
    centre_surround_score,
    fit_dog,
    fit_gabor,
    fit_gabors,
    gabor_summary,
    is_oriented,
    localization_score,
    localization_summary,
    orientation_coverage,
    orientation_spread,
    rotation_self_similarity,
)

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def gabor(shape, x0, y0, theta, freq, phase, sx, sy, amp=1.0, offset=0.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    u = (xx - x0) * np.cos(theta) + (yy - y0) * np.sin(theta)
    v = -(xx - x0) * np.sin(theta) + (yy - y0) * np.cos(theta)
    env = np.exp(-(u**2) / (2 * sx**2) - v**2 / (2 * sy**2))
    return amp * env * np.cos(2 * np.pi * freq * u + phase) + offset


def dog(n, sc, ss, balance=1.0, centre=None):
    c = (n - 1) / 2 if centre is None else centre
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    r2 = (xx - c) ** 2 + (yy - c) ** 2
    return np.exp(-r2 / (2 * sc**2)) - balance * (sc / ss) ** 2 * np.exp(-r2 / (2 * ss**2))


def axial_error(a, b):
    return abs((a - b + np.pi / 2) % np.pi - np.pi / 2)


def strokes(n, seed=0, size=28):
    """Short anti-aliased lines and arcs (6-14 px), blurred to MNIST's pen width."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size))
    for i in range(n):
        cx, cy = rng.uniform(6, size - 6, 2)
        if i % 2 == 0:
            half, a = rng.uniform(3, 7), rng.uniform(0, np.pi)
            pts = [
                (cx - half * np.cos(a), cy - half * np.sin(a)),
                (cx + half * np.cos(a), cy + half * np.sin(a)),
            ]
        else:
            r, a0, ext = rng.uniform(3, 6), rng.uniform(0, 2 * np.pi), rng.uniform(1, 3)
            t = np.linspace(a0, a0 + ext, 10)
            pts = list(zip(cx + r * np.cos(t), cy + r * np.sin(t), strict=True))
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
            rr, cc, val = line_aa(round(y0), round(x0), round(y1), round(x1))
            ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
            out[i, rr[ok], cc[ok]] = np.maximum(out[i, rr[ok], cc[ok]], val[ok])
        out[i] = gaussian_filter(out[i], 0.7)
    return out.reshape(n, -1)


def mnist_digits(n):
    path = MNIST / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"MNIST not found at {path}")
    with gzip.open(path) as fh:
        raw = fh.read(16 + n * 784)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 784).astype(float) / 255.0


# ----------------------------------------------------------------------------- Gabor


@pytest.mark.parametrize(
    "params",
    [
        (5.3, 6.1, 0.7, 0.18, 0.4, 1.8, 2.6),
        (6.0, 5.0, 2.4, 0.3, -1.5, 2.0, 3.5),
        (4.0, 7.0, 1.6, 0.1, 3.0, 2.5, 2.0),
    ],
)
def test_gabor_fit_recovers_parameters(params):
    rng = np.random.default_rng(1)
    img = gabor((12, 12), *params) + rng.normal(0, 0.02, (12, 12))
    fit = fit_gabor(img)
    assert isinstance(fit, GaborFit)
    assert fit.r2 > 0.95
    assert axial_error(fit.theta, params[2]) < 0.05
    assert abs(fit.frequency - params[3]) < 0.01
    assert 0 <= fit.theta < np.pi and -np.pi < fit.phase <= np.pi and fit.amplitude > 0


def test_vertical_stripes_have_theta_zero_not_just_under_pi():
    """A fit landing a rounding below 0 was reported as θ = π − 1e-13, splitting histograms."""
    xx = np.mgrid[0:16, 0:16][1]
    assert fit_gabor(np.cos(2 * math.pi * 0.125 * xx)).theta == 0.0


def test_gabor_fit_takes_numpy_integers_and_refuses_other_counts():
    image = gabor((12, 12), 5.3, 6.1, 0.7, 0.18, 0.4, 1.8, 2.6)
    assert fit_gabor(image, n_starts=np.int64(2)).r2 > 0.99  # was a ValueError
    for bad in (0, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="n_starts"):
            fit_gabor(image, n_starts=bad)


def test_gabor_fit_on_noise_is_poor():
    rng = np.random.default_rng(2)
    r2 = [fit_gabor(rng.normal(size=(12, 12))).r2 for _ in range(5)]
    assert max(r2) < 0.5


def test_fit_gabors_and_summary():
    rng = np.random.default_rng(3)
    thetas = np.arange(16) * np.pi / 16
    atoms = [
        gabor((10, 12), 5.5, 4.5, t, 0.2, rng.uniform(-3, 3), 1.8, 2.4).ravel() for t in thetas
    ]
    atoms.append(np.zeros(120))  # a dead atom: NaN fit, left out of the summary
    fits = fit_gabors(np.array(atoms), (10, 12))
    assert len(fits) == 17 and math.isnan(fits[-1].r2)
    s = gabor_summary(fits)
    assert s["n_atoms"] == 17 and s["n_constant"] == 1 and s["n_good"] == 16
    assert s["median_r2"] > 0.99 and s["share_r2_ge_0_8"] == 1.0
    assert s["orientation_spread"] > 0.95
    assert abs(s["median_frequency"] - 0.2) < 0.01


def test_blobs_fit_a_gabor_well_but_have_no_orientation():
    """A Gaussian blob and a centre-surround filter fit a low-frequency Gabor with R² > 0.98,
    which counted them as oriented edges (conv-filters' oriented share, orientation spread)."""
    y, x = np.mgrid[:11, :11] - 5.0
    noise = 0.02 * np.random.default_rng(4).standard_normal((11, 11))
    blob = np.exp(-(x**2 + y**2) / 4.5)
    centre_surround = blob - 0.5 * np.exp(-(x**2 + y**2) / 18)
    edge = x * np.exp(-(x**2 + y**2) / 4.5) / 1.5
    bar = np.exp(-(x**2) / 4.5 - y**2 / 40)
    fits = [fit_gabor(f + noise) for f in (blob, centre_surround, edge, bar)]
    assert min(f.r2 for f in fits) > 0.85
    similarity = [rotation_self_similarity(f) for f in fits]
    assert similarity[0] > 0.95 and similarity[1] > 0.95
    assert abs(similarity[2]) < 0.1 and similarity[3] < 0.7
    assert [is_oriented(f) for f in fits] == [False, False, True, True]
    point = np.zeros((12, 12))
    point[3, 7] = 1.0  # fits at the width bound with some orientation, R² 0.999
    assert not is_oriented(fit_gabor(point))
    summary = gabor_summary(fits)
    assert summary["n_good"] == 4 and summary["n_oriented"] == 2
    # the spread is that of the edge (θ = 0) and the bar (θ = 0: it varies along x)
    assert summary["orientation_spread"] < 0.05


def test_orientation_spread():
    assert orientation_spread(np.full(10, 0.3)) == pytest.approx(0.0, abs=1e-12)
    assert orientation_spread(np.arange(8) * np.pi / 8) == pytest.approx(1.0)
    assert orientation_spread([0.1, 0.1 + np.pi]) == pytest.approx(0.0, abs=1e-12)  # axial


def test_orientation_coverage_counts_the_orientations_a_bank_tiles():
    assert orientation_coverage([]) == 0.0
    assert orientation_coverage([0.3]) == pytest.approx(1 / 8)
    assert orientation_coverage([0.0, np.pi / 2]) == pytest.approx(2 / 8)  # horizontal, vertical
    assert orientation_coverage([0.0, np.pi - 0.01, np.pi]) == pytest.approx(1 / 8)  # axial
    assert orientation_coverage(np.arange(8) * np.pi / 8 + 0.1) == 1.0
    assert orientation_coverage(np.arange(4) * np.pi / 4, n_bins=4) == 1.0
    # on fitted synthetic oriented filters: 1, 2, 4 and 8 orientations, two phases each
    for n in (1, 2, 4, 8):
        bank = [gabor((9, 9), 4, 4, k * np.pi / n, 0.2, phase, 2.0, 2.5)
                for k in range(n) for phase in (0.0, np.pi / 2)]
        fits = fit_gabors(np.stack(bank).reshape(len(bank), -1), (9, 9))
        assert orientation_coverage([f.theta for f in fits]) == pytest.approx(n / 8)
    with pytest.raises(ValueError, match="n_bins"):
        orientation_coverage([0.1], n_bins=0)


# ----------------------------------------------------------------------------- DoG


def test_centre_surround_separates_dog_from_gabor():
    rng = np.random.default_rng(4)
    on = dog(12, 1.2, 3.0, centre=5.3)
    off = -dog(12, 1.5, 3.5) + rng.normal(0, 0.02, (12, 12))
    assert centre_surround_score(on) > 0.95
    assert centre_surround_score(off) > 0.9
    fit = fit_dog(off)
    assert fit.amplitude < 0 and fit.sigma_s > fit.sigma_c and 0.7 < fit.balance < 1.3
    for phase in (0.0, np.pi / 2):
        g = gabor((12, 12), 5.5, 5.5, 0.5, 0.2, phase, 2.0, 2.5)
        assert centre_surround_score(g) < 0.6
    blob = dog(12, 2.0, 4.0, balance=0.0)
    assert centre_surround_score(blob) < 0.1
    assert centre_surround_score(np.ones((9, 9))) == 0.0


# ----------------------------------------------------------------------------- localisation


def test_localization_strokes_vs_digits():
    s = localization_score(strokes(200), (28, 28))
    d = localization_score(mnist_digits(500), (28, 28))
    assert np.median(s) > 0.9 and np.median(d) < 0.6
    assert (s >= LOCALIZED_THRESHOLD).mean() > 0.9
    assert (d >= LOCALIZED_THRESHOLD).mean() < 0.05
    summary = localization_summary(mnist_digits(500), (28, 28))
    assert summary["median"] == pytest.approx(np.median(d))
    assert summary["share_localized"] < 0.05 and summary["radius"] == pytest.approx(5.6)


def test_localization_synthetic_only():
    s = localization_score(strokes(50, seed=1), (28, 28))
    noise = np.random.default_rng(5).normal(size=(50, 784))
    n = localization_score(noise, (28, 28))
    assert np.median(s) > 0.9 and n.max() < 0.3
    colour = np.repeat(strokes(4, seed=2).reshape(4, 28, 28, 1), 3, axis=3).reshape(4, -1)
    np.testing.assert_allclose(
        localization_score(colour, (28, 28, 3)), localization_score(strokes(4, seed=2), (28, 28))
    )
    summary = localization_summary(np.vstack([strokes(3), np.zeros((1, 784))]), (28, 28))
    assert summary["n_zero"] == 1 and summary["share_localized"] == 1.0


# ----------------------------------------------------------------------------- figures


def _check_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(6)
    cases = {
        "grid": lambda p: viz.atom_grid(rng.normal(size=(256, 784)), (28, 28), p, title="atoms"),
        "colour": lambda p: viz.atom_grid(
            rng.normal(size=(10, 75)), (5, 5, 3), p, n_cols=5, symmetric=False
        ),
        "pair": lambda p: viz.filter_bank_pair(
            rng.normal(size=(16, 1, 7, 7)), rng.normal(size=(8, 3, 5, 5)), p, title="t"
        ),
        "curves": lambda p: viz.convergence_curves(
            {
                "ista": (np.arange(50), 1 / (1 + np.arange(50))),
                "fista": (np.arange(50), np.r_[1 / (1 + np.arange(49)) ** 2, 0.0]),
            },
            p,
            xlabel="iteration",
            ylabel="F - F*",
        ),
        "of": lambda p: viz.orientation_frequency(
            rng.uniform(0, 3, 40), rng.uniform(0, 0.5, 40), p, r2=rng.uniform(0.8, 1, 40)
        ),
        "images": lambda p: viz.image_grid(rng.uniform(size=(12, 28, 28)), p, n_cols=6),
        "flat": lambda p: viz.image_grid(
            rng.uniform(size=(6, 784)), p, image_shape=(28, 28), value_range=(0, 1)
        ),
    }
    for name, draw in cases.items():
        folder = tmp_path / name
        out = draw(folder / f"{name}.png")
        assert Path(out) == folder / f"{name}.png"
        _check_png(Path(out))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "argname"),
    [
        (lambda p: viz.atom_grid(np.zeros((4, 10)), (3, 3), p), "atoms"),
        (lambda p: viz.atom_grid(np.full((4, 9), np.nan), (3, 3), p), "atoms"),
        (lambda p: viz.atom_grid(np.zeros(9), (3, 3), p), "atoms"),
        (lambda p: viz.atom_grid(np.zeros((4, 9)), (3, 3), p, n_cols=0), "n_cols"),
        (
            lambda p: viz.filter_bank_pair(np.zeros((4, 2, 3, 3)), np.zeros((4, 1, 3, 3)), p),
            "encoder",
        ),
        (lambda p: viz.filter_bank_pair(np.zeros((4, 1, 3, 3)), np.zeros((4, 3, 3)), p), "decoder"),
        (
            lambda p: viz.convergence_curves({"a": ([1, 2], [1.0])}, p, xlabel="x", ylabel="y"),
            "curves",
        ),
        (
            lambda p: viz.convergence_curves(
                {"a": ([1, 2], [1.0, np.inf])}, p, xlabel="x", ylabel="y"
            ),
            "curves",
        ),
        (lambda p: viz.orientation_frequency([0.1, 0.2], [0.1], p), "frequencies"),
        (lambda p: viz.orientation_frequency([0.1, np.nan], [0.1, 0.2], p), "orientations_rad"),
        (lambda p: viz.image_grid(np.zeros((2, 3)), p), "images"),
        (lambda p: viz.image_grid(np.zeros((2, 3, 3)), p, value_range=(1, 0)), "value_range"),
        (lambda p: localization_score(np.zeros((2, 5)), (2, 2)), "atoms"),
        (lambda p: localization_score(np.zeros((2, 4)), (2, 2, 2, 2)), "image_shape"),
        (lambda p: fit_gabor(np.full((8, 8), np.nan)), "atom_2d"),
        (lambda p: fit_gabor(np.zeros(64)), "atom_2d"),
        (lambda p: fit_gabors(np.zeros((2, 64)), (8, 8, 1)), "patch_shape"),
        (lambda p: centre_surround_score(np.zeros((2, 8, 8))), "filter_2d"),
        (lambda p: orientation_spread([]), "thetas"),
        (lambda p: gabor_summary([]), "fits"),
    ],
)
def test_bad_input_names_the_argument(tmp_path, call, argname):
    with pytest.raises(ValueError, match=argname):
        call(tmp_path / "out.png")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- atomic writes


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert file_mode() == 0o666 & ~mask
    written = [
        write_json(tmp_path / "m.json", {"a": 1}),
        write_bytes(tmp_path / "b.bin", b"xyz"),
        viz.image_grid(np.zeros((2, 3, 3)), tmp_path / "f.png"),
        viz.vae.training_curves({"loss": ([0, 1], [1.0, np.nan])}, tmp_path / "c.png"),
    ]
    SparseCoding(4, 3, 0.1).save(tmp_path / "model.safetensors")  # safetensors writes 0o600
    written.append(tmp_path / "model.safetensors")
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})

    def broken(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(target, broken)
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_figure_path_must_be_a_file(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        viz.image_grid(np.zeros((2, 3, 3)), tmp_path)
    with pytest.raises(TypeError, match="path"):
        viz.image_grid(np.zeros((2, 3, 3)), 3)


def test_gabor_and_dog_fits_do_not_depend_on_the_filters_scale():
    """A real Gabor times 1e-12 was called constant (r2 NaN), a DoG times 1e-30 too: the
    flatness tests were absolute."""
    from latentebm.metrics import fit_dog

    atom = gabor((12, 12), 5.3, 6.1, 0.7, 0.18, 0.4, 1.8, 2.6)
    yy, xx = np.mgrid[0:15, 0:15] - 7.0
    rr = xx**2 + yy**2
    dog = np.exp(-rr / (2 * 1.5**2)) - 0.5 * np.exp(-rr / (2 * 3.0**2))
    for scale in (1e-12, 1e-30, 1e160):
        assert fit_gabor(atom * scale).r2 == pytest.approx(fit_gabor(atom).r2, abs=1e-9)
        assert fit_dog(dog * scale).r2 == pytest.approx(fit_dog(dog).r2, abs=1e-9)
    assert math.isnan(fit_gabor(np.full((8, 8), 0.3)).r2)
    assert math.isnan(fit_dog(np.zeros((8, 8))).r2)
