"""The command line end to end on small data: files written, metrics sane, resume checked."""

from __future__ import annotations

import json

import pytest

from latentebm.cli import build_parser, main


def run_cli(args: list[str]) -> int:
    return main(args)


def test_every_command_has_help(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "sparse-coding" in capsys.readouterr().out


def test_sparse_coding_mnist_sample(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["sparse-coding", "--dataset", "mnist", "--sample", "--n-train", "400", "--n-test",
            "50", "--atoms", "16", "--epochs", "2", "--batch-size", "100", "--out", str(out),
            "--quiet"]
    assert run_cli(args) == 0
    printed = capsys.readouterr().out
    for name in ("atoms.png", "metrics.json", "config.json", "checkpoint.safetensors",
                 "reconstructions.png", "training_energy.png"):
        assert (out / name).stat().st_size > 0
        assert name in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["test_relative_reconstruction_error"] < 1
    assert 0 < metrics["test_mean_nonzeros"] <= 16
    assert 0 <= metrics["strokes"]["share_localized"] <= 1
    assert len(metrics["history"]) == 2

    # resuming with more epochs continues; resuming with another λ is refused
    assert run_cli(args + ["--epochs", "3", "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert run_cli(args + ["--resume", "--lam", "0.9"]) == 2
    assert "lam" in capsys.readouterr().err


def test_sparse_coding_natural(tmp_path):
    out = tmp_path / "natural"
    args = ["sparse-coding", "--dataset", "natural", "--patch", "8", "--atoms", "16",
            "--n-train", "2000", "--n-test", "200", "--epochs", "1", "--out", str(out),
            "--quiet"]
    assert run_cli(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["gabor"]["share_r2_ge_0_8"] <= 1
    assert (out / "orientation_frequency.png").stat().st_size > 0


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code = run_cli(["sparse-coding", "--data-dir", str(tmp_path), "--out",
                    str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "train-images" in capsys.readouterr().err
