"""``latentebm conditional`` end to end on the bundled MNIST sample with tiny settings."""

from __future__ import annotations

import json

from latentebm.cli import main


def test_conditional_mnist_completion_sample(tmp_path, capsys):
    out = tmp_path / "cond"
    args = ["conditional", "--task", "mnist-completion", "--sample", "--n-train", "300",
            "--n-test", "30", "--atoms", "700", "--hidden", "32", "--epochs", "1",
            "--batch-size", "100", "--best-of", "3", "--candidates", "5", "--out", str(out),
            "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for name in ("completions.png", "energy_curve.png", "ranking.png", "metrics.json",
                 "config.json", "checkpoint.safetensors", "checkpoint_lam0.safetensors"):
        assert (out / name).stat().st_size > 0
        assert name in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"λ = 1", "λ = 0"}
    for m in metrics["models"].values():
        assert 0 <= m["ranking"]["pairwise_ranking"] <= 1
        assert 0 <= m["ranking"]["top1_accuracy"] <= 1
        assert m["ranking"]["n_candidates"] == 5
        assert m["completion"]["best_of_n_mse"] <= m["completion"]["mean_of_n_mse"]
        assert len(m["history"]) == 1
    flat = metrics["models"]["λ = 0"]["ranking"]
    assert flat["mean_free_energy_true"] < 1e-3  # over-complete z, no regularizer: flat

    # resuming with more epochs continues; another λ is refused; bad flags are clear errors
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["models"]["λ = 1"]["history"]] == [0, 1]
    assert main(args + ["--resume", "--lam", "0.9"]) == 2
    assert "lam" in capsys.readouterr().err
    assert main(args[:-3] + ["--out", str(tmp_path / "bad"), "--lam", "0"]) == 2
    assert "--lam must be > 0" in capsys.readouterr().err


def test_one_test_digit_is_refused_before_training(tmp_path, capsys):
    """The ranking needs two test digits; with one the command trained both models first and
    then blamed --candidates."""
    out = tmp_path / "one"
    args = ["conditional", "--sample", "--n-train", "50", "--n-test", "1", "--atoms", "8",
            "--hidden", "8", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 2
    assert "--n-test must give at least 2 test digits" in capsys.readouterr().err
    assert not (out / "checkpoint.safetensors").exists()


def test_flags_that_cannot_be_evaluated_are_refused_before_training(tmp_path, capsys):
    """--candidates 1 failed only after both models had trained, and --best-of above the 5000
    training digits the latents come from ended in a traceback after training."""
    base = ["conditional", "--task", "mnist-completion", "--sample", "--n-test", "20",
            "--atoms", "16", "--hidden", "8", "--epochs", "1", "--quiet"]
    for flags, message in ((["--n-train", "300", "--candidates", "1"], "--candidates must"),
                           (["--n-train", "5100", "--best-of", "5050"], "latents are drawn")):
        out = tmp_path / flags[-1]
        assert main([*base, *flags, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not (out / "checkpoint.safetensors").exists()
