"""The VAE: closed-form densities, the importance-sampled likelihood, the KL spring, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from latentebm import VAE
from latentebm.data import load_mnist, mnist_vectors
from latentebm.models.vae_parts import (
    bernoulli_log_likelihood,
    binarize,
    gaussian_log_likelihood,
    kl_standard_normal,
    log_normal_diag,
    log_standard_normal,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread avoids contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """512 bundled MNIST training digits, ``(512, 784)`` in [0, 1]."""
    images, _ = load_mnist("train", sample=True)
    return torch.from_numpy(mnist_vectors(images[:512]))


@pytest.fixture(scope="module")
def trained(digits) -> VAE:
    model = VAE(784, 4, hidden=(64,), seed=1)
    model.fit(digits, epochs=3, batch_size=64, lr=3e-3, progress=False)
    return model


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- densities


def test_closed_form_kl_matches_torch_distributions():
    g = _gen(0)
    mu = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    logvar = torch.randn(50, 7, generator=g, dtype=torch.float64) * 2
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(
        kl_standard_normal(mu, logvar), kl_divergence(q, p), atol=1e-6, rtol=0
    )
    z = torch.randn(50, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(log_normal_diag(z, mu, logvar), q.log_prob(z).sum(-1))
    torch.testing.assert_close(log_standard_normal(z), p.log_prob(z).sum(-1))


def test_likelihoods_match_torch_distributions():
    g = _gen(1)
    logits = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64) * 4
    x = torch.rand(5, 4, 4, generator=g, dtype=torch.float64).round()
    want = Independent(Bernoulli(logits=logits), 2).log_prob(x.expand_as(logits))
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), want)
    mean = torch.randn(5, 16, generator=g, dtype=torch.float64)
    log_sigma = torch.tensor(-0.7, dtype=torch.float64)
    y = torch.randn(5, 16, generator=g, dtype=torch.float64)
    want = Normal(mean, log_sigma.exp()).log_prob(y).sum(-1)
    torch.testing.assert_close(gaussian_log_likelihood(mean, log_sigma, y), want)


def test_binarize_is_seeded_and_unbiased():
    p = torch.full((20000,), 0.3)
    a, b = binarize(p, _gen(5)), binarize(p, _gen(5))
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a.mean()) - 0.3) < 0.02
    assert not torch.equal(a, binarize(p, _gen(6)))


def test_loss_reduction_sums_over_pixels_and_dims_and_averages_over_batch(trained, digits):
    x = digits[:32]
    out = trained(x, generator=_gen(2))
    mu, logvar = trained.posterior(x)
    torch.testing.assert_close(out.kl, kl_standard_normal(mu, logvar).sum(1).mean())
    torch.testing.assert_close(out.kl_per_dim.sum(), out.kl)
    torch.testing.assert_close(out.loss, out.reconstruction + trained.beta * out.kl)
    # a per-image sum over 784 pixels: hundreds of nats, not a per-pixel fraction
    assert out.reconstruction > 50
    no_spring = trained(x, beta=0.0, generator=_gen(2)).loss.detach()
    assert float(no_spring) == pytest.approx(float(out.reconstruction.detach()), rel=1e-5)


# --------------------------------------------------------------------------- likelihood


def test_importance_sampled_likelihood_bounds_elbo_and_tightens_with_k(trained, digits):
    x = binarize(digits[:200], _gen(3))
    elbo = trained.elbo(x, n_samples=200, generator=_gen(4)).mean()
    lls = {k: trained.log_likelihood(x, k=k, chunk=100, generator=_gen(k)) for k in (1, 10, 200)}
    means = {k: float(r.log_px.mean()) for k, r in lls.items()}
    # k = 1 is an unbiased estimate of the ELBO itself
    assert means[1] == pytest.approx(float(elbo), abs=3 * lls[1].summary()["se_data"] + 1.0)
    assert means[10] > float(elbo)
    assert means[200] > means[10] > means[1]
    summary = lls[200].summary()
    assert summary["nll"] == pytest.approx(-means[200]) and summary["k"] == 200
    # one draw per image tells nothing of the spread: its standard error is unknown, not 0
    assert bool(lls[1].stderr.isnan().all()) and math.isnan(lls[1].summary()["se_mc"])
    assert bool((lls[10].stderr > 0).all())


def test_likelihood_standard_error_matches_the_spread_of_repeated_estimates(trained, digits):
    x = binarize(digits[:20], _gen(7))
    runs = [trained.log_likelihood(x, k=300, chunk=300, generator=_gen(s)) for s in range(12)]
    spread = torch.stack([r.log_px for r in runs]).std(0)
    reported = torch.stack([r.stderr for r in runs]).mean(0)
    ratio = float(reported.median() / spread.median())
    assert 0.4 < ratio < 2.5, ratio


def test_iwae_bound_at_one_sample_is_the_elbo_and_rises_with_k(trained, digits):
    x = binarize(digits[:100], _gen(11))
    reps = 40  # each image repeated: averages over many independent bounds
    xr = x.repeat(reps, 1)
    bounds = {k: trained.iwae_bound(xr, k, generator=_gen(20 + k)).reshape(reps, -1)
              for k in (1, 5, 50)}
    elbo = trained.elbo(x, n_samples=400, generator=_gen(5))
    per_image = {k: b.mean(0) for k, b in bounds.items()}
    # k = 1: the ELBO (sampled KL instead of the closed form): equal up to Monte-Carlo noise
    se = float(bounds[1].std(0).mean() / math.sqrt(reps))
    assert float((per_image[1] - elbo).mean()) == pytest.approx(0.0, abs=4 * se + 0.05)
    gain_5 = per_image[5] - per_image[1]
    gain_50 = per_image[50] - per_image[5]
    assert float(gain_5.mean()) > 0 and float(gain_50.mean()) > 0
    # the training loss with objective="iwae" is minus the same bound
    out = trained.loss(x, objective="iwae", k=5, generator=_gen(3))
    direct = trained.iwae_bound(x, 5, generator=_gen(3))
    assert float(out.loss.detach()) == pytest.approx(float(-direct.mean()), rel=1e-5)


def test_iwae_training_with_cosine_schedule_resumes_exactly_and_monitors_nll(tmp_path, digits):
    X, val = digits[:192], binarize(digits[192:232], _gen(8))
    kwargs = dict(epochs=2, batch_size=64, objective="iwae", k=3, lr_schedule="cosine",
                  schedule_epochs=3, validation=val, nll_k=20, progress=False)
    full = VAE(784, 3, hidden=(32,), seed=4)
    full.fit(X, **kwargs)
    assert all("val_nll" in h and h["val_nll"] >= h["val_neg_elbo"] - 5 for h in full.history_)
    ckpt = tmp_path / "iwae.safetensors"
    part = VAE(784, 3, hidden=(32,), seed=4)
    part.fit(X, checkpoint=ckpt, **{**kwargs, "epochs": 1})
    part = VAE(784, 3, hidden=(32,), seed=4)
    part.fit(X, checkpoint=ckpt, resume=True, **kwargs)
    for (name, a), b in zip(full.state_dict().items(), part.state_dict().values(), strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="lr_schedule"):
        VAE(784, 3, hidden=(32,), seed=4).fit(
            X, checkpoint=ckpt, resume=True, **{**kwargs, "lr_schedule": "constant"})


# --------------------------------------------------------------------------- the KL spring


def test_linear_gaussian_vae_collapses_directions_below_the_noise_level():
    """Probabilistic PCA with noise σ² = 1: directions with variance λ > 1 keep
    KL = ½ log(λ/σ²); those with λ < 1 collapse to the prior (KL → 0)."""
    g = _gen(0)
    lam = torch.tensor([6.0, 3.0, 0.5, 0.3, 0.2, 0.1])
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    X = (torch.randn(2000, 6, generator=g) * lam.sqrt()) @ Q.T
    model = VAE(6, 4, encoder="linear", likelihood="gaussian", obs_sigma=1.0, seed=0)
    model.fit(X, epochs=100, batch_size=1000, lr=3e-2, progress=False)
    kl = model.kl_per_dim(X).sort(descending=True).values
    assert kl[2:].max() < 0.01, kl
    assert kl[1] > 0.3, kl
    expected = 0.5 * torch.log(lam[:2]).sum()
    assert float(kl[:2].sum()) == pytest.approx(float(expected), rel=0.1)
    assert model.active_units(X) == 2


def _code_norms(digits: torch.Tensor, beta: float) -> list[float]:
    model = VAE(784, 2, hidden=(64,), beta=beta, seed=0)
    norms: list[float] = []

    def record(step: int, m: VAE) -> None:
        if step % 8 == 0:  # once per epoch
            with torch.no_grad():
                mu, _ = m.encoder(digits)
            norms.append(float(mu.square().sum(1).mean()))

    model.fit(digits, epochs=15, batch_size=64, lr=3e-3, callback=record, progress=False)
    return norms


def test_without_the_spring_codes_fly_away_and_with_it_they_stay_bounded(digits):
    free = _code_norms(digits, beta=0.0)
    spring = _code_norms(digits, beta=1.0)
    assert free[-1] > 1.2 * free[5], free  # still growing late in training
    assert free[-1] > 4 * spring[-1]
    assert spring[-1] < spring[1], spring  # pulled back after the first epochs
    assert max(spring[5:]) < 2 * spring[5]


# --------------------------------------------------------------------------- training


def test_same_seed_same_result_and_other_seed_differs(digits):
    def train(seed: int) -> VAE:
        m = VAE(784, 3, hidden=(32,), seed=seed)
        m.fit(digits[:256], epochs=2, batch_size=64, dynamic_binarization=True, progress=False)
        return m

    a, b, c = train(0), train(0), train(1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if isinstance(pa, torch.Tensor):  # the extra state holds the timed history
            assert torch.equal(pa, pb), name
    assert a.history_ == [
        {**h, "seconds": a.history_[i]["seconds"]} for i, h in enumerate(b.history_)
    ]
    assert not torch.equal(a.encoder.mu.weight, c.encoder.mu.weight)


def test_save_load_round_trip(tmp_path, trained, digits):
    path = tmp_path / "vae.safetensors"
    trained.save(path)
    loaded = VAE.load(path)
    assert loaded.config == trained.config
    for (name, pa), pb in zip(
        trained.state_dict().items(), loaded.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb) if isinstance(pa, torch.Tensor) else pa == pb, name
    x = digits[:16]
    torch.testing.assert_close(
        loaded.elbo(x, generator=_gen(1)), trained.elbo(x, generator=_gen(1))
    )
    torch.testing.assert_close(
        loaded.sample(4, generator=_gen(2)), trained.sample(4, generator=_gen(2))
    )
    assert loaded.history_ == trained.history_


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path, digits):
    X = digits[:256]
    kwargs = dict(
        epochs=3, batch_size=64, dynamic_binarization=True, warmup_epochs=1.5, progress=False
    )
    full = VAE(784, 3, hidden=(32,), seed=2)
    full.fit(X, **kwargs)

    def stop(step: int, model: VAE) -> None:
        if step == 6:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.safetensors"
    part = VAE(784, 3, hidden=(32,), seed=2)
    with pytest.raises(KeyboardInterrupt):
        part.fit(X, checkpoint=ckpt, callback=stop, **kwargs)
    resumed = VAE(784, 3, hidden=(32,), seed=2)
    resumed.fit(X, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.n_steps_ == full.n_steps_ == 12
    for (name, pa), pb in zip(
        full.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        if isinstance(pa, torch.Tensor):  # the extra state holds the timed history
            torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    for h_full, h_res in zip(full.history_, resumed.history_, strict=True):
        assert h_full["loss"] == pytest.approx(h_res["loss"], rel=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        VAE(784, 3, hidden=(32,), seed=2).fit(
            X, checkpoint=ckpt, resume=True, **{**kwargs, "batch_size": 32}
        )


def test_beta_warmup_rises_linearly_to_beta(digits):
    model = VAE(784, 2, hidden=(16,), beta=2.0)
    hist = model.fit(digits[:128], epochs=4, batch_size=32, warmup_epochs=2, progress=False)
    betas = [h["beta"] for h in hist]
    assert betas == pytest.approx([1.0, 2.0, 2.0, 2.0])


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    ckpt = tmp_path / "ckpt.safetensors"

    def poison(step: int, model: VAE) -> None:
        if step == 7:
            with torch.no_grad():
                model.encoder.mu.weight[0, 0] = float("nan")

    model = VAE(784, 2, hidden=(16,))
    with pytest.raises(FloatingPointError, match="NaN") as info:
        model.fit(
            digits[:256],
            epochs=2,
            batch_size=32,
            checkpoint=ckpt,
            checkpoint_every=3,
            check_every=100,
            callback=poison,
            progress=False,
        )
    assert "last good checkpoint" in str(info.value) and str(ckpt) in str(info.value)
    good = VAE.load(ckpt)
    assert good.n_steps_ == 6
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_validation_history_and_dynamic_binarization_run(digits):
    model = VAE(784, 2, hidden=(16,))
    hist = model.fit(
        digits[:128],
        epochs=2,
        batch_size=64,
        dynamic_binarization=True,
        validation=digits[128:192],
        progress=False,
    )
    assert [h["epoch"] for h in hist] == [0, 1]
    assert all(math.isfinite(h["val_neg_elbo"]) and h["val_neg_elbo"] > 0 for h in hist)


# --------------------------------------------------------------------------- other parts


def test_conv_encoder_gaussian_likelihood_and_float64(digits):
    x = digits[:8].reshape(8, 1, 28, 28).double()
    model = VAE((1, 28, 28), 5, encoder="conv", likelihood="gaussian", dtype=torch.float64)
    out = model(x, generator=_gen(0))
    out.loss.backward()
    assert model.decoder.log_sigma.grad is not None
    assert out.mu.shape == (8, 5) and out.mu.dtype == torch.float64
    assert model.decode(torch.zeros(3, 5, dtype=torch.float64)).shape == (3, 1, 28, 28)
    as_array = model.decode(np.zeros((3, 5)))  # NumPy in, NumPy out, as encode
    assert isinstance(as_array, np.ndarray) and as_array.shape == (3, 1, 28, 28)
    assert model.sample(2).shape == (2, 1, 28, 28)
    # flat input is accepted for an image-shaped model
    torch.testing.assert_close(model.encode(x.reshape(8, -1)).z, model.encode(x).z)


def test_fixed_posterior_sigma():
    model = VAE(10, 3, hidden=(8,), learn_variance=False, fixed_sigma=0.5)
    mu, logvar = model.posterior(np.random.default_rng(0).random((4, 10)))
    torch.testing.assert_close(logvar, torch.full((4, 3), 2 * math.log(0.5)))
    assert model.encoder.logvar is None


def test_active_units_and_kl_per_dim(trained, digits):
    kl = trained.kl_per_dim(digits)
    assert kl.shape == (4,) and (kl >= 0).all()
    mu, _ = trained.posterior(digits)
    assert trained.active_units(digits) == int((mu.var(0) > 0.01).sum())
    assert trained.active_units(digits, threshold=1e9) == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.loss(torch.full((2, 784), 1.5)), ValueError, r"x must lie in \[0, 1\]"),
        (lambda m: m.loss(torch.full((2, 784), -0.1)), ValueError, r"x must lie in \[0, 1\]"),
        (lambda m: m.loss(torch.zeros(2, 783)), ValueError, "x must have shape"),
        (lambda m: m.loss(torch.zeros(784)), ValueError, "x must have shape"),
        (lambda m: m.loss(torch.full((2, 784), float("nan"))), ValueError, "x contains NaN"),
        (lambda m: m.loss(torch.full((2, 784), float("inf"))), ValueError, "x contains NaN"),
        (lambda m: m.loss(torch.zeros(2, 784, dtype=torch.float64)), TypeError, "x has dtype"),
        (lambda m: m.loss(torch.zeros(2, 784), beta=-1.0), ValueError, "beta"),
        (lambda m: m.log_likelihood(torch.zeros(2, 784), k=0), ValueError, "k must be >= 1"),
        (lambda m: m.elbo(torch.zeros(2, 784), n_samples=0), ValueError, "n_samples"),
        (lambda m: m.decode(torch.zeros(2, 3)), ValueError, "z must have shape"),
        (lambda m: m.sample(0), ValueError, "n must be >= 1"),
        (lambda m: m.active_units(torch.zeros(1, 784)), ValueError, "at least 2"),
        (lambda m: m.fit(torch.zeros(4, 784), epochs=0), ValueError, "epochs"),
        (lambda m: m.fit(torch.full((4, 784), 2.0)), ValueError, r"X must lie in \[0, 1\]"),
        (lambda m: m.fit(torch.zeros(4, 784), lr=0), ValueError, "lr"),
        (lambda m: m.fit(torch.zeros(4, 784), objective="vi"), ValueError, "objective"),
        (lambda m: m.fit(torch.zeros(4, 784), objective="iwae", k=0), ValueError, "k must"),
        (lambda m: m.fit(torch.zeros(4, 784), k=5), ValueError, "objective='iwae'"),
        (lambda m: m.fit(torch.zeros(4, 784), lr_schedule="step"), ValueError, "lr_schedule"),
        (lambda m: m.fit(torch.zeros(4, 784), nll_k=10), ValueError, "validation"),
        (lambda m: m.loss(torch.zeros(2, 784), objective="iwae", k=0), ValueError, "k must"),
        (lambda m: m.iwae_bound(torch.zeros(2, 784), 0), ValueError, "k must"),
    ],
)
def test_bad_input_is_named(call, error, match):
    model = VAE(784, 2, hidden=(8,))
    with pytest.raises(error, match=match):
        call(model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(beta=-0.5), ValueError, "beta must be >= 0"),
        (dict(beta=float("nan")), ValueError, "beta must be finite"),
        (dict(encoder="rnn"), ValueError, "encoder must be one of"),
        (dict(likelihood="poisson"), ValueError, "likelihood must be one of"),
        (dict(latent_dim=0), ValueError, "latent_dim"),
        (dict(input_shape=(1, 30, 30), encoder="conv"), ValueError, "divisible by 4"),
        (dict(input_shape=(0,)), ValueError, "input_shape"),
        (dict(fixed_sigma=0.0), ValueError, "fixed_sigma"),
        (dict(likelihood="gaussian", obs_sigma=-1.0), ValueError, "obs_sigma must be > 0"),
        (dict(obs_sigma=0.5), ValueError, "obs_sigma fixes the pixel noise of likelihood="),
        (dict(dtype=torch.float16), TypeError, "dtype"),
        (dict(learn_variance=1), TypeError, "learn_variance"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, match):
    args = {"input_shape": 784, "latent_dim": 2, **kwargs}
    with pytest.raises(error, match=match):
        VAE(args.pop("input_shape"), args.pop("latent_dim"), **args)


def test_gaussian_likelihood_accepts_any_real_input():
    model = VAE(5, 2, hidden=(4,), likelihood="gaussian")
    out = model(torch.randn(3, 5, generator=_gen(0)) * 10)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="dynamic_binarization"):
        model.fit(torch.zeros(4, 5), dynamic_binarization=True)


# --------------------------------------------------------------------------- commands


def _command(module, argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_vae_command_on_the_bundled_sample_writes_metrics_and_figures(tmp_path):
    import json

    from latentebm.experiments import vae_cmd

    argv = [
        "--sample",
        "--out",
        str(tmp_path),
        "--latent",
        "2",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--k",
        "8",
        "--nll-images",
        "20",
        "--quiet",
        "--threads",
        "1",
    ]
    _command(vae_cmd, argv)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["nll"]["k"] == 8 and metrics["nll"]["n"] == 20
    assert metrics["nll"]["nll"] <= metrics["neg_elbo_same_images"] + 1.0
    for name in ("samples", "reconstructions", "interpolation", "manifold", "training_curves"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    argv[argv.index("--epochs") + 1] = "2"
    _command(vae_cmd, [*argv, "--resume"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["epochs_this_call"] == 1
    assert metrics["stopped_by_time_limit"] is False
    # a time limit that ends training before --epochs says so
    argv[argv.index("--epochs") + 1] = "4"
    _command(vae_cmd, [*argv, "--resume", "--max-minutes", "0.0001"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["stopped_by_time_limit"] is True


def test_fuzzy_balls_command_on_the_bundled_sample(tmp_path):
    import json

    from latentebm.experiments import fuzzy_balls_cmd

    argv = [
        "--sample",
        "--out",
        str(tmp_path),
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--sigma-beta",  # not among --betas: its learned-σ model is reported too
        "2",
        "--betas",
        "0",
        "1",
        "--n-plot",
        "50",
        "--quiet",
        "--threads",
        "1",
    ]
    run = _command(fuzzy_balls_cmd, argv)
    # the summary's "wrote:" lists every model's checkpoint
    assert {tmp_path / tag / "checkpoint.safetensors"
            for tag in ("beta_0", "beta_1", "beta_2", "fixed_sigma_beta_2")} <= set(run.written)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert set(summary) == {"beta_0", "beta_1", "beta_2", "fixed_sigma_beta_2"}
    assert summary["fixed_sigma_beta_2"]["mean_sigma_per_dim"] == pytest.approx([1.0, 1.0])
    for tag in ("beta_0", "beta_1"):
        per_beta = json.loads((tmp_path / tag / "metrics.json").read_text())
        assert len(per_beta["kl_per_dim"]) == 2 and "plot_e_mu_sq" in per_beta["history"][0]
        assert (tmp_path / tag / "posterior.png").is_file()
    for name in ("posterior_all_betas", "fixed_vs_learned_sigma", "separation_per_epoch"):
        assert (tmp_path / f"{name}.png").is_file(), name
    with pytest.raises(SystemExit):  # refused by the flag's type, before any data is read
        _command(fuzzy_balls_cmd, [*argv[:-6], "--betas", "-1"])


def test_the_importance_sampling_standard_error_survives_float32():
    """1000 log-weights within 1e-3 of each other around −90: the float32 standard error of
    log(mean w) read exactly 0 (the ratio mean w² / (mean w)² − 1 cancelled)."""
    from latentebm.models.vae_parts import LogMeanExp

    gen = torch.Generator().manual_seed(0)
    for spread in (1e-2, 1e-3):
        log_w = -90 + spread * torch.randn(1000, 3, generator=gen, dtype=torch.float64)
        w = torch.exp(log_w + 90)  # the reference, in float64 around e^0
        want = (w.std(0) / w.mean(0)) / math.sqrt(1000)
        acc = LogMeanExp()
        for chunk in log_w.float().split(250):
            acc.add(chunk)
        log_mean, se = acc.result()
        assert log_mean.dtype == se.dtype == torch.float32
        torch.testing.assert_close(log_mean.double(), torch.logsumexp(log_w, 0) - math.log(1000),
                                   rtol=0, atol=1e-5)
        assert bool((se > 0).all())
        torch.testing.assert_close(se.double(), want, rtol=0.05, atol=0)
