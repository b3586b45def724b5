"""The convolutional sparse auto-encoder (PSD and plain sparse auto-encoder) and its commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import latentebm as le
from latentebm.cli import main
from latentebm.models.conv_autoencoder import PredictionAugmented
from latentebm.objective import energy_and_gap
from latentebm.operators import ConvDictionary
from latentebm.regularizers import L1

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def images(n=16, size=16, channels=1, seed=0) -> torch.Tensor:
    """Smooth random images: blurred noise, so that there is structure to learn."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size + 4, size + 4, generator=gen)
    kernel = torch.ones(channels, 1, 3, 3) / 9
    x = torch.nn.functional.conv2d(x, kernel, groups=channels)
    return x[..., :size, :size].contiguous() / x.std()


@pytest.mark.parametrize("nonlinearity", ["tanh", "shrink"])
def test_shapes(nonlinearity):
    model = le.ConvSparseAutoencoder(4, 5, 3, nonlinearity=nonlinearity)
    Y = images(2, 12, 3)
    Z = model.encode(Y).z
    assert Z.shape == (2, 4, 16, 16)
    assert model.decode(Z).shape == Y.shape
    fista = model.encode(Y, method="fista").z
    assert fista.shape == Z.shape and bool((fista == 0).any())
    if nonlinearity == "shrink":
        model.threshold.data.fill_(10.0)
        assert torch.count_nonzero(model.encode(Y).z) == 0
    # NumPy in, NumPy out, the same numbers
    for method in ("encoder", "fista"):
        out = model.encode(Y.numpy(), method=method)
        assert isinstance(out.z, np.ndarray), method
        assert method == "encoder" or isinstance(out.energy, np.ndarray)
        np.testing.assert_array_equal(out.z, model.encode(Y, method=method).z.numpy())
    energy = model.energy(Y.numpy())
    assert isinstance(energy, np.ndarray)
    np.testing.assert_array_equal(energy, model.energy(Y).numpy())


def test_prediction_augmented_operator_is_the_psd_energy():
    gen = torch.Generator().manual_seed(0)
    K = torch.randn(3, 1, 3, 3, generator=gen, dtype=torch.float64)
    op = ConvDictionary(K)
    Y = torch.randn(2, 1, 7, 7, generator=gen, dtype=torch.float64)
    E = torch.randn(2, *op.code_shape((1, 7, 7)), generator=gen, dtype=torch.float64)
    beta, lam = 0.7, 0.3
    aug = PredictionAugmented(op, (1, 7, 7), beta)
    z = torch.randn_like(E)
    energy, gap = energy_and_gap(aug, aug.signal(Y, E), z, lam, L1())
    r = Y - op.decode(z)
    expected = (0.5 * (r * r).flatten(1).sum(1) + 0.5 * beta * ((z - E) ** 2).flatten(1).sum(1)
                + lam * z.abs().flatten(1).sum(1))
    torch.testing.assert_close(energy, expected)
    assert torch.all(gap >= 0)
    # exact adjoint and a valid Lipschitz constant
    s = torch.randn(2, aug.n_image + E[0].numel(), generator=gen, dtype=torch.float64)
    assert abs(float((aug.decode(z) * s).sum() - (z * aug.adjoint(s)).sum())) < 1e-10
    solved = le.fista(aug.signal(Y, E), aug, lam, tol=1e-10, max_iter=20_000)
    assert solved.all_converged


@pytest.mark.parametrize("mode", ["psd", "sparse-ae"])
def test_training_lowers_the_energy(mode):
    Y = images(24, 16)
    model = le.ConvSparseAutoencoder(4, 5, 1, lam=0.1, mode=mode, seed=1)
    model.fit(Y, epochs=1, batch_size=8, lr=1e-6, progress=False)  # data-initialised decoder
    before = float(model.energy(Y).mean())
    history = model.fit(Y, epochs=8, batch_size=8, lr=0.01, progress=False)
    after = float(model.energy(Y).mean())
    assert after < 0.9 * before
    assert history[-1]["mean_energy"] < history[0]["mean_energy"]
    norms = model.decoder.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4))


def test_encoder_learns_to_predict_the_codes():
    Y = images(24, 16, seed=3)
    model = le.ConvSparseAutoencoder(4, 5, 1, lam=0.1, seed=0)
    model.fit(Y, epochs=1, batch_size=8, lr=1e-6, progress=False)

    def prediction_error():
        z = model.encode(Y, method="fista", tol=1e-4, max_iter=500).z
        return float(((model.encode(Y).z - z) ** 2).sum() / (z**2).sum())
    before = prediction_error()
    model.fit(Y, epochs=10, batch_size=8, lr=0.01, progress=False)
    assert prediction_error() < 0.85 * before


def test_checkpoint_resume_and_load(tmp_path):
    Y = images(12, 12)
    kw = dict(lam=0.1, seed=4)
    d = le.ConvSparseAutoencoder(3, 3, 1, **kw)
    d.fit(Y, epochs=2, batch_size=4, lr=0.01, checkpoint=tmp_path / "e.safetensors",
          progress=False)
    e = le.ConvSparseAutoencoder(3, 3, 1, **kw)
    e.fit(Y, epochs=1, batch_size=4, lr=0.01, checkpoint=tmp_path / "f.safetensors",
          progress=False)
    e.fit(Y, epochs=2, batch_size=4, lr=0.01, checkpoint=tmp_path / "f.safetensors",
          resume=True, progress=False)
    for name in ("decoder", "encoder", "gain", "bias"):
        torch.testing.assert_close(getattr(d, name), getattr(e, name))
    d.save(tmp_path / "final.safetensors")
    loaded = le.ConvSparseAutoencoder.load(tmp_path / "final.safetensors")
    torch.testing.assert_close(loaded.encode(Y).z, d.encode(Y).z)
    with pytest.raises(ValueError, match="another configuration"):
        le.ConvSparseAutoencoder(3, 3, 1, lam=0.5, seed=4).fit(
            Y, epochs=2, batch_size=4, lr=0.01, checkpoint=tmp_path / "f.safetensors",
            resume=True, progress=False)


def test_bad_inputs():
    with pytest.raises(ValueError, match="mode must be one of"):
        le.ConvSparseAutoencoder(2, 3, mode="vae")
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        le.ConvSparseAutoencoder(2, 3, nonlinearity="relu")
    with pytest.raises(ValueError, match="boundary must be one of"):
        le.ConvSparseAutoencoder(2, 3, boundary="valid")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        le.ConvSparseAutoencoder(2, 3, beta=-1.0)
    model = le.ConvSparseAutoencoder(2, 5, 1)
    with pytest.raises(ValueError, match="Y has 3 channels"):
        model.fit(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller than the 5x5 kernels"):
        model.fit(torch.zeros(4, 1, 4, 8))
    with pytest.raises(ValueError, match="Y contains NaN"):
        model.encode(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="lr_schedule must be"):
        model.fit(torch.zeros(4, 1, 8, 8), lr_schedule="step")
    with pytest.raises(ValueError, match="method must be"):
        model.encode(torch.zeros(1, 1, 8, 8), method="lista")


# --------------------------------------------------------------------------- commands


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    """Two small crops of photographs as PNG files (Kodak24 when present, else scikit-image's
    bundled photographs), so that the commands run on real images but quickly."""
    from skimage import io

    folder = tmp_path / "photos"
    folder.mkdir()
    kodak = sorted((DATA / "kodak24").glob("*.png"))[:2]
    if len(kodak) == 2:
        photos = [io.imread(p)[:96, :96] for p in kodak]
    else:
        import skimage.data

        photos = [skimage.data.astronaut()[:96, :96], skimage.data.coffee()[:96, :96]]
    for i, photo in enumerate(photos):
        io.imsave(folder / f"photo{i}.png", photo, check_contrast=False)
    return folder


def test_conv_filters_command(tmp_path, capsys, photo_folder):
    out = tmp_path / "filters"
    args = ["conv-filters", "--images", str(photo_folder), "--counts", "1", "2",
            "--n-tiles", "24", "--n-test", "8",
            "--tile", "16", "--kernel", "5", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for name in ("filters_01.png", "filters_02.png", "filters_overview.png", "metrics.json",
                 "checkpoint_01.safetensors", "model_01.safetensors"):
        assert (out / name).stat().st_size > 0 and name in printed
    metrics = json.loads((out / "metrics.json").read_text())
    one = metrics["per_count"]["1"]
    assert 0 <= metrics["single_filter_centre_surround_score"] <= 1
    assert 0 < one["relative_reconstruction_error"] < 1
    assert 0 < one["code_nonzero_share"] < 1
    assert len(metrics["per_count"]["2"]["encoder_decoder_similarity"]) == 2
    for m in metrics["per_count"].values():  # the untrained windows' share, beside the trained
        assert 0 <= m["initial_oriented_share"] <= 1
    assert 0 <= one["orientation_coverage"] <= 1 and 0 <= one["codes_converged_share"] <= 1
    from latentebm.experiments.conv_filters_cmd import result_text
    text = result_text(metrics, out)
    assert "orientation coverage" in text and "fig. 6" in text and "relative duality gap" in text
    # resuming reuses the finished models; a changed λ is refused
    assert main(args + ["--resume"]) == 0
    assert main(args + ["--resume", "--lam", "0.9"]) == 2
    more = [a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)]
    assert main(more + ["--resume"]) == 2  # the finished models ran one epoch, not two
    assert "finished" in capsys.readouterr().err
    assert main(["conv-filters", "--kernel", "40", "--tile", "16", "--out",
                 str(tmp_path / "bad")]) == 2
    assert main(["conv-filters", "--taper", "9", "--tile", "16", "--kernel", "5", "--out",
                 str(tmp_path / "bad")]) == 2
    capsys.readouterr()
    small = [a if a != "5" else "1" for a in args[:-3]] + ["--out", str(tmp_path / "small")]
    assert main(small) == 2
    assert "--kernel must be at least 3" in capsys.readouterr().err  # it named patch_shape
    assert not (tmp_path / "small" / "model_01.safetensors").exists()


@pytest.mark.parametrize("command", ["conv-filters", "conv-colour"])
def test_a_flat_photograph_is_named_in_the_error(tmp_path, capsys, photo_folder, command):
    from skimage import io

    io.imsave(photo_folder / "photo1_blank.png", np.full((96, 96, 3), 200, np.uint8),
              check_contrast=False)
    assert main([command, "--images", str(photo_folder), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert "photo1_blank.png: image is constant" in capsys.readouterr().err


def test_tiles_are_tapered_at_their_borders():
    from latentebm.experiments.conv_autoencoder_runs import image_tiles, tile_window

    w = tile_window(16, 4)
    assert w.shape == (16, 16) and w.dtype == np.float32
    np.testing.assert_allclose(w[4:12, 4:12], 1.0)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert 0 < w[0, 0] < w[1, 1] < w[3, 3] < 1
    np.testing.assert_array_equal(tile_window(16, 0), np.ones((16, 16), np.float32))
    photo = np.ones((32, 32))
    train, test = image_tiles([photo], 16, 3, 1, seed=0, taper=4)
    np.testing.assert_allclose(train[0, 0], w)
    plain, _ = image_tiles([photo], 16, 3, 1, seed=0)
    np.testing.assert_allclose(plain, 1.0)


def test_conv_colour_command(tmp_path, photo_folder):
    out = tmp_path / "colour"
    args = ["conv-colour", "--images", str(photo_folder), "--filters", "3", "--n-tiles", "16",
            "--n-test", "4", "--tile", "16", "--kernel", "5", "--epochs", "1", "--show-size",
            "32", "--out", str(out), "--quiet"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["crop_code_nonzero_share"] < 1
    assert len(metrics["crop_code_nonzero_share_per_map"]) == 3
    for name in ("kernels.png", "code_maps.png", "image_pair.png"):
        assert (out / name).stat().st_size > 0
    # the whole held-out photograph (96 px), block-averaged to at most --show-size
    assert metrics["shown_photograph_shape"] == [3, 32, 32]
    assert isinstance(metrics["crop_codes_converged"], bool)
    assert main(args[:-3] + ["--eval-iter", "0", "--out", str(tmp_path / "bad")]) == 2


def test_conv_colour_photographs_and_downscale(tmp_path, monkeypatch):
    from latentebm.experiments import _args
    from latentebm.experiments import conv_colour_cmd as cc

    photo = np.arange(7 * 5 * 3, dtype=float).reshape(7, 5, 3)
    assert cc.downscale(photo, 7) is photo
    small = cc.downscale(photo, 3)  # factor ceil(7 / 3) = 3: 2 x 1 blocks of 3 x 3
    assert small.shape == (2, 1, 3)
    np.testing.assert_allclose(small[0, 0], photo[:3, :3].mean(axis=(0, 1)))
    # Kodak24 beside the working folder is the default; without it, scikit-image's photographs
    work = tmp_path / "work"
    kodak = tmp_path / "shared" / "data" / "kodak24"
    kodak.mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(_args, "__file__", str(tmp_path / "a" / "b" / "c" / "d" / "e.py"))
    assert _args.default_photographs() is None  # an empty folder is not Kodak24
    (kodak / "kodim01.png").write_bytes(b"")
    assert _args.default_photographs() == kodak
    # reproduce's report says which photographs conv-colour found
    import argparse

    from latentebm.experiments.reproduce_cmd import image_source
    assert str(kodak) in image_source(argparse.Namespace(images=None))[1]


def test_conv_colour_records_the_photographs_it_found(tmp_path, photo_folder, monkeypatch):
    """Without --images the folder depends on where the command runs: config.json records
    the one used, so a resumption that would find other photographs is refused."""
    from latentebm.experiments import conv_colour_cmd as cc

    monkeypatch.setattr(cc, "default_photographs", lambda: photo_folder)
    out = tmp_path / "colour"
    args = ["conv-colour", "--filters", "3", "--n-tiles", "16", "--n-test", "4", "--tile", "16",
            "--kernel", "5", "--epochs", "1", "--show-size", "32", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["images"] == str(photo_folder)
    monkeypatch.setattr(cc, "default_photographs", lambda: None)  # elsewhere: scikit-image's
    assert main(args + ["--resume"]) == 2


def test_filter_similarity_is_one_exactly_when_the_encoder_is_the_decoders_adjoint():
    from latentebm.experiments.conv_autoencoder_runs import filter_similarity
    from latentebm.operators.conv import correlate

    model = le.ConvSparseAutoencoder(4, 5, 2, seed=3, dtype=torch.float64)
    with torch.no_grad():
        model.encoder.copy_(model.decoder)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(2, 2, 12, 12, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)
    # the encoder's linear part is Dᵀ: <D z, y> = <z, correlate(encoder, y)>
    with torch.no_grad():
        lhs = (model.decode(z) * y).sum()
        rhs = (z * correlate(model.encoder, y, model.boundary)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)
    enc, dec = model.encoder.detach().numpy(), model.decoder.detach().numpy()
    np.testing.assert_allclose(filter_similarity(enc, dec), 1.0, rtol=1e-12)
    # a flipped kernel (a convolution, not the adjoint) is not similar in general
    flipped = filter_similarity(enc[:, :, ::-1, ::-1].copy(), dec)
    assert float(flipped.max()) < 0.9



def test_prediction_augmented_operator_moves_with_to():
    from latentebm.models.conv_autoencoder import PredictionAugmented
    from latentebm.operators import ConvDictionary

    gen = torch.Generator().manual_seed(0)
    op = PredictionAugmented(ConvDictionary(torch.randn(4, 1, 3, 3, generator=gen)), (1, 8, 8), 0.5)
    wide = op.to(dtype=torch.float64)
    assert isinstance(wide, PredictionAugmented) and wide.dtype == torch.float64
    assert (wide.image_shape, wide.beta) == (op.image_shape, op.beta)
    z = torch.randn(2, *op.codes, generator=gen)
    assert torch.allclose(wide.decode(z.double()).float(), op.decode(z), atol=1e-5)


def test_first_fit_starts_the_encoder_at_the_decoders_adjoint():
    from latentebm.experiments.conv_autoencoder_runs import filter_similarity

    Y = images(8, 16, seed=2)
    for nonlinearity in ("shrink", "tanh"):
        model = le.ConvSparseAutoencoder(4, 5, 1, lam=0.1, nonlinearity=nonlinearity, seed=1)
        model.fit(Y, epochs=1, batch_size=8, lr=1e-9, progress=False)  # init, ~no step
        enc, dec = model.encoder.detach().numpy(), model.decoder.detach().numpy()
        np.testing.assert_allclose(filter_similarity(enc, dec), 1.0, atol=1e-4)
        assert torch.isfinite(model.gain).all() and (model.gain > 0).all()
        # the public view of that starting point: what the first fit copied into the decoder
        start = model.initial_decoder(Y.numpy())
        assert isinstance(start, np.ndarray) and start.shape == (4, 1, 5, 5)
        np.testing.assert_allclose(start, dec, atol=1e-6)
    # shrink: the fitted threshold is at least λ and the encoder predicts better than zero
    shrink = le.ConvSparseAutoencoder(4, 5, 1, lam=0.1, nonlinearity="shrink", seed=1)
    shrink.fit(Y, epochs=1, batch_size=8, lr=1e-9, progress=False)
    z = shrink.encode(Y, method="fista", tol=1e-4, max_iter=500).z
    assert (shrink.threshold >= 0.1 - 1e-6).all()
    assert float(((shrink.encode(Y).z - z) ** 2).sum() / (z**2).sum()) < 1.0


def test_fitted_shrink_map_is_at_least_as_dense_as_its_codes():
    from latentebm.models.conv_autoencoder import _fit_shrink

    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(2, 1, 60, 60, generator=gen).expand(2, 2, 60, 60).clone()
    # map 0's codes follow its pre-activations; map 1's follow only its largest ones and are
    # non-zero, unpredictably, at 20 % of the other places
    codes = torch.zeros_like(pre)
    codes[:, 0] = torch.where(pre[:, 0].abs() > 1.0, pre[:, 0], 0.0)
    noise = torch.where(torch.rand(2, 60, 60, generator=gen) < 0.2,
                        torch.randn(2, 60, 60, generator=gen), 0.0)
    codes[:, 1] = torch.where(pre[:, 1].abs() > 3.0, pre[:, 1], noise)
    gain, threshold = _fit_shrink(pre, codes, lam=0.1)
    dense = (pre.abs() > threshold[None, :, None, None]).float().mean((0, 2, 3))
    share = (codes != 0).float().mean((0, 2, 3))
    # least squares alone puts map 1's threshold near 3, where 0.3 % of it is non-zero
    assert dense[1] >= share[1] - 0.02
    assert share[0] - 0.05 <= dense[0] and gain[0] > 0.5


def test_shrink_encoder_kernels_are_kept_unit_norm_without_changing_the_encoder():
    Y = images(8, 16, seed=5).double()
    model = le.ConvSparseAutoencoder(3, 5, 1, lam=0.1, nonlinearity="shrink", seed=2,
                                     dtype=torch.float64)
    with torch.no_grad():
        model.encoder.mul_(torch.tensor([0.1, 2.0, 7.0], dtype=torch.float64)[:, None, None, None])
        model.threshold.fill_(0.05)
        before = model.predict(Y)
        model._normalize_encoder()
        after = model.predict(Y)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(model.encoder.flatten(1).norm(dim=1),
                               torch.ones(3, dtype=torch.float64))
    model.fit(Y, epochs=1, batch_size=4, lr=0.01, progress=False)
    torch.testing.assert_close(model.encoder.detach().flatten(1).norm(dim=1),
                               torch.ones(3, dtype=torch.float64))


def test_kernel_adam_steps_along_the_gradient_of_each_kernel():
    from latentebm.training.kernel_adam import KernelAdam

    gen = torch.Generator().manual_seed(0)
    kernels = torch.nn.Parameter(torch.zeros(2, 1, 4, 4))
    vector = torch.nn.Parameter(torch.zeros(3))
    opt = KernelAdam([kernels, vector], lr=0.1)
    grad = torch.randn(2, 1, 4, 4, generator=gen)
    grad[1] *= 100.0
    kernels.grad, vector.grad = grad.clone(), torch.tensor([1.0, -1e-3, 5.0])
    opt.step()
    # one scale per kernel: each kernel's step is −lr·g/rms(g), parallel to its gradient
    for i in range(2):
        expected = -0.1 * grad[i] / grad[i].pow(2).mean().sqrt()
        torch.testing.assert_close(kernels.detach()[i], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(vector.detach(), torch.tensor([-0.1, 0.1, -0.1]), rtol=1e-3,
                               atol=1e-6)
    # a checkpointed torch.optim.Adam state (per-entry second moment) loads and steps
    adam = torch.optim.Adam([kernels, vector], lr=0.1)
    kernels.grad, vector.grad = grad.clone(), torch.ones(3)
    adam.step()
    opt2 = KernelAdam([kernels, vector], lr=0.1)
    opt2.load_state_dict(adam.state_dict())
    opt2.step()
    assert opt2.state[kernels]["exp_avg_sq"].shape == (2, 1, 1, 1)
    assert torch.isfinite(kernels).all()

