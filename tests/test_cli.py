"""The command line end to end on small data: files written, metrics sane, resume checked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import one_line_error

import latentebm
from latentebm.cli import build_parser, main
from latentebm.experiments._lock import LOCK_NAME
from latentebm.experiments._run import Run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    first_seconds = metrics["train_seconds"]
    assert run_cli(args + ["--epochs", "3", "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    # the training time counts the epochs of both invocations
    assert metrics["train_seconds"] == pytest.approx(
        first_seconds + metrics["history"][2]["seconds"])
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


# ----------------------------------------------------------------------------- --out and its lock

SMALL = ["sparse-coding", "--dataset", "mnist", "--sample", "--n-train", "200", "--n-test", "20",
         "--atoms", "4", "--epochs", "1", "--batch-size", "100", "--quiet"]


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert run_cli(SMALL + ["--out", str(target)]) == 2
    assert "is a file" in one_line_error(capsys)
    assert target.read_text() == "keep me"


def test_out_not_writable(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anywhere: make the check see a read-only folder
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder
                            else real_access(p, mode))
    try:
        assert run_cli(SMALL + ["--out", str(folder)]) == 2
        assert "not writable" in one_line_error(capsys)
        assert run_cli(SMALL + ["--out", str(tmp_path / "file" / "sub")]) == 0
        (tmp_path / "plain").write_text("x")
        assert run_cli(SMALL + ["--out", str(tmp_path / "plain" / "sub")]) == 2
        assert "cannot create" in one_line_error(capsys)
    finally:
        folder.chmod(0o755)


def test_a_run_that_fails_before_writing_anything_leaves_no_config(tmp_path, capsys):
    """Its config.json alone made the folder refuse the corrected command as "a run with
    another configuration" (a hostile review: a typo in --data-dir, a diverging --lr)."""
    out = tmp_path / "o"
    mnist = ["sparse-coding", "--n-train", "100", "--n-test", "20", "--atoms", "4",
             "--epochs", "1", "--quiet", "--out", str(out)]
    assert run_cli(mnist + ["--data-dir", str(tmp_path / "missing")]) == 2
    assert not (out / "config.json").exists()
    capsys.readouterr()
    if (DATA / "mnist").is_dir():
        assert run_cli(mnist + ["--data-dir", str(DATA / "mnist")]) == 0
    # a run that wrote more than its config keeps it: the folder describes its files
    assert run_cli(SMALL + ["--out", str(tmp_path / "done")]) == 0
    assert run_cli(SMALL + ["--out", str(tmp_path / "done"), "--lam", "-1"]) == 2
    assert (tmp_path / "done" / "config.json").exists()


def test_running_out_of_memory_is_one_line_and_other_runtime_errors_propagate(
        tmp_path, capsys, monkeypatch):
    from latentebm.experiments import sparse_coding_cmd

    def allocate(args):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 627200000000 bytes")

    monkeypatch.setattr(sparse_coding_cmd, "run", allocate)
    assert run_cli(SMALL + ["--out", str(tmp_path / "o")]) == 2
    assert "not enough memory" in one_line_error(capsys)

    def bug(args):
        raise RuntimeError("a bug, not a size")

    monkeypatch.setattr(sparse_coding_cmd, "run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(SMALL + ["--out", str(tmp_path / "o")])

    # a lost process of a torchrun job (a RuntimeError too) is one line, not a traceback
    from latentebm.training.distributed import DistributedError

    def lost(args):
        raise DistributedError("rank 0 of 2: the collective all_reduce failed")

    monkeypatch.setattr(sparse_coding_cmd, "run", lost)
    assert run_cli(SMALL + ["--out", str(tmp_path / "o")]) == 1
    assert "the collective all_reduce failed" in one_line_error(capsys)


def test_an_empty_out_is_refused_not_the_working_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(SMALL + ["--out", ""]) == 2
    assert "--out is empty" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_commands_without_training_take_no_device_or_resume_and_say_what_ctrl_c_left():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["prepare-patches", "--n-patches", "5", "--out", "o", "--resume"])
    patches = parser.parse_args(["prepare-patches", "--n-patches", "5", "--out", "o"])
    assert not hasattr(patches, "device") and "incomplete" in patches._interrupted
    reproduce = parser.parse_args(["reproduce", "--out", "o"])
    assert "--resume" not in reproduce._interrupted and "again" in reproduce._interrupted
    assert "--resume" in parser.parse_args(SMALL + ["--out", "o"])._interrupted


def test_shards_larger_than_the_free_disk_are_refused_before_writing(tmp_path, capsys,
                                                                      monkeypatch):
    from latentebm.data import streaming

    monkeypatch.setattr(streaming, "disk_free", lambda path: 10_000)
    assert run_cli(["prepare-patches", "--n-patches", "100", "--patch", "8", "--out",
                    str(tmp_path / "p"), "--quiet"]) == 2
    assert "GB free" in one_line_error(capsys)
    assert not (tmp_path / "p" / "patches").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_reproduce_refuses_a_missing_device_before_running_anything(tmp_path, capsys):
    assert run_cli(["reproduce", "--budget", "tiny", "--device", "cuda", "--out",
                    str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_write_failure_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    from latentebm.experiments import _run

    def full_disk(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(_run, "write_json", full_disk)
    assert run_cli(SMALL + ["--out", str(tmp_path / "o")]) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert not (tmp_path / "o" / LOCK_NAME).exists()  # released on error too


def test_second_run_on_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{socket.gethostname()} {holder.pid}\n")
        assert run_cli(SMALL + ["--out", str(out)]) == 2
        err = one_line_error(capsys)
        assert f"in use by process {holder.pid}" in err and LOCK_NAME in err
        assert not (out / "config.json").exists()  # nothing written, nothing interleaved
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its lock is stale and taken over; released when the run ends
    assert run_cli(SMALL + ["--out", str(out)]) == 0
    assert (out / "metrics.json").exists() and not (out / LOCK_NAME).exists()


def test_lock_held_while_running(tmp_path):
    first = Run(tmp_path, {"a": 1})
    assert (tmp_path / LOCK_NAME).read_text().split()[1] == str(os.getpid())
    second = Run(tmp_path, {"a": 1}, resume=True)  # the same process: its earlier run ended
    first.close()
    assert (tmp_path / LOCK_NAME).exists()  # the first run no longer owned it
    second.close()
    second.close()
    assert not (tmp_path / LOCK_NAME).exists()
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="damaged"):
        Run(tmp_path, {"a": 1}, resume=True)
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_from_another_host_is_not_taken(tmp_path):
    (tmp_path / LOCK_NAME).write_text("some-other-host 1\n")
    with pytest.raises(ValueError, match="some-other-host.*delete the lock file"):
        Run(tmp_path, {})


# ----------------------------------------------------------------------------- flags, -m, version


def test_seed_is_checked_by_the_parser(capsys):
    for bad in ("-1", str(2**63), "1.5"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["psd", "--out", "x", "--seed", bad])
        assert exc.value.code == 2
        assert "--seed" in capsys.readouterr().err


def test_data_dir_help_per_command(capsys):
    helps = {}
    for command in ("sparse-coding", "conv-filters"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    assert "MNIST IDX" in helps["sparse-coding"]
    assert "MNIST" not in helps["conv-filters"] and "--images" in helps["conv-filters"]


def test_python_dash_m_and_version():
    done = subprocess.run([sys.executable, "-m", "latentebm", "--version"], capture_output=True,
                          text=True, check=True, timeout=120)
    assert done.stdout.strip() == f"latentebm {metadata.version('latentebm')}"
    assert latentebm.__version__ == metadata.version("latentebm")


def test_a_folder_holding_a_run_of_other_settings_is_refused_without_resume(tmp_path):
    """Its files stayed beside the new run's (another command's figures, a model of an earlier
    --counts, shards of a larger dataset); the same settings simply run again."""
    Run(tmp_path / "out", {"command": "x", "lam": 0.1}).close()
    Run(tmp_path / "out", {"command": "x", "lam": 0.1, "epochs": 3}).close()  # may change
    with pytest.raises(ValueError, match=r"another configuration \(lam: saved 0.1, now 0.2\)"):
        Run(tmp_path / "out", {"command": "x", "lam": 0.2})
    with pytest.raises(ValueError, match="--resume: .*another configuration"):
        Run(tmp_path / "out", {"command": "x", "lam": 0.2}, resume=True)


def test_a_command_may_declare_its_own_keys_that_change_on_resume(tmp_path):
    """The VAE's evaluation settings are recorded in config.json and may change on --resume."""
    Run(tmp_path / "out", {"command": "x", "k": 10}, resumable={"k"}).close()
    Run(tmp_path / "out", {"command": "x", "k": 5000}, resume=True, resumable={"k"}).close()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["k"] == 5000
    with pytest.raises(ValueError, match="k: saved 5000, now 7"):
        Run(tmp_path / "out", {"command": "x", "k": 7}, resume=True)


def test_vae_config_records_the_evaluation_flags(tmp_path, monkeypatch):
    from latentebm.experiments import vae_cmd

    seen = {}

    def stop(out, config, **kwargs):
        seen.update(config=config, **kwargs)
        raise ValueError("stop before training")

    monkeypatch.setattr(vae_cmd, "Run", stop)
    args = build_parser().parse_args(["vae", "--sample", "--k", "50", "--nll-images", "7",
                                      "--max-minutes", "2", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="stop before training"):
        vae_cmd.run(args)
    config = seen["config"]
    assert (config["k"], config["nll_images"], config["max_minutes"]) == (50, 7, 2.0)
    assert {"k", "nll_images", "monitor_k", "max_minutes"} <= set(seen["resumable"])
    assert "latent" not in seen["resumable"] and "data_dir" in config


def test_config_records_the_training_size_the_bundled_sample_allows(tmp_path):
    """--sample holds 20 000 training digits; config.json said the default n_train 60 000."""
    from latentebm.experiments.mnist_problems import open_run

    args = build_parser().parse_args(["psd", "--sample", "--n-test", "30",
                                      "--out", str(tmp_path / "r")])
    run, Y, Yt, _ = open_run(args)
    run.close()
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (config["n_train"], config["n_test"]) == (Y.shape[0], 30)
    assert Y.shape[0] < args.n_train


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`latentebm ... | head -1` ended in a BrokenPipeError traceback."""
    args = [sys.executable, "-m", "latentebm", "prepare-patches", "--n-patches", "50",
            "--patch", "4", "--images", str(tmp_path / "photos"), "--quiet", "--out",
            str(tmp_path / "pp")]
    (tmp_path / "photos").mkdir()
    import numpy as np
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(
        tmp_path / "photos" / "a.png")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    # the command prints its result last, after writing it: it says it stopped, exit status 1
    assert proc.wait() == 1, err
    assert "Traceback" not in err and "its output was closed" in err, err
    assert (tmp_path / "pp" / "patches" / "index.json").exists()


def test_a_meta_device_and_a_bad_patch_side_in_a_shard_index_are_named(tmp_path, capsys):
    import numpy as np

    from latentebm.data.streaming import write_shards

    assert run_cli(SMALL + ["--out", str(tmp_path / "m"), "--device", "meta"]) == 2
    assert "meta holds no values" in capsys.readouterr().err
    write_shards(np.ones((10, 16), np.float32), tmp_path / "s", meta={"size": "four"})
    assert run_cli(["sparse-coding", "--dataset", "natural", "--shards", str(tmp_path / "s"),
                    "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "index.json: meta.size must be a positive integer" in one_line_error(capsys)
