"""``latentebm pretrain``: its paired statistics, stored per-seed results, resume and flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from latentebm.cli import main
from latentebm.experiments import pretrain_cmd
from latentebm.experiments.pretrain_study import Setting, paired_statistics, settings_grid

SMALL = ["pretrain", "--sample", "--labels-per-class", "1", "2", "--seeds", "3",
         "--classes", "3", "10", "--first-layer", "both", "--n-unlabelled", "64", "--steps",
         "5", "--n-test", "200", "--epochs", "1", "--filters", "4", "--kernel", "5",
         "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    assert main([*SMALL, "--out", str(out)]) == 0
    return out


def test_paired_statistics_by_hand():
    p, r = [0.50, 0.55, 0.61, 0.58, 0.52], [0.48, 0.50, 0.60, 0.55, 0.53]
    s = paired_statistics(p, r)
    d = np.subtract(p, r)
    assert s["pretrained"]["std"] == pytest.approx(np.std(p, ddof=1))
    assert s["random"]["mean"] == pytest.approx(np.mean(r))
    assert s["difference"]["mean"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert s["difference"]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert s["difference"]["p_t"] == pytest.approx(stats.ttest_rel(p, r).pvalue)
    assert s["difference"]["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert s["difference"]["wins"] == 4
    assert "cannot go below" in s["difference"]["wilcoxon_note"]  # n = 5: p >= 0.0625


def test_paired_statistics_edge_cases():
    one = paired_statistics([0.5], [0.4])
    assert one["pretrained"]["std"] is None and one["difference"]["p_t"] is None
    assert not one["difference"]["significant"]
    same = paired_statistics([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["difference"]["p_t"] == 1.0 and same["difference"]["p_wilcoxon"] == 1.0
    assert not same["difference"]["significant"]
    with pytest.raises(ValueError, match="equally long"):
        paired_statistics([0.5, 0.6], [0.5])


def test_settings_grid():
    grid = settings_grid([10, 2], [5, 1], "both")
    assert len(grid) == 8 and grid[0] == Setting(2, 1, "finetune")
    assert {s.first_layer for s in settings_grid([2], [1], "frozen")} == {"frozen"}


def test_table_statistics_come_from_stored_runs(small_run):
    metrics = json.loads((small_run / "metrics.json").read_text())
    stored = json.loads((small_run / "runs.json").read_text())["runs"]
    assert len(metrics["settings"]) == 8
    for key, row in metrics["settings"].items():
        per_seed = [stored[f"{key}/seed {i}"] for i in range(3)]
        p = np.array([run["pretrained"] for run in per_seed])
        r = np.array([run["random"] for run in per_seed])
        assert row["pretrained"]["runs"] == pytest.approx(p.tolist())
        assert row["pretrained"]["mean"] == pytest.approx(p.mean())
        assert row["pretrained"]["std"] == pytest.approx(p.std(ddof=1))
        assert row["random"]["std"] == pytest.approx(r.std(ddof=1))
        assert row["difference"]["mean"] == pytest.approx((p - r).mean())
        assert row["difference"]["std"] == pytest.approx((p - r).std(ddof=1))
        assert row["difference"]["wins"] == int((p > r).sum())
        assert all(0 <= a <= 1 for a in [*p, *r])
    # the claims read the first (classes, first layer) group by labels per class
    assert set(metrics["accuracy"]) == {"1", "2"}
    assert metrics["accuracy_setting"] == {"classes": 3, "first_layer": "finetune"}
    table = (small_run / "table.md").read_text()
    first = metrics["settings"]["3 classes/1 per class/finetune"]
    assert f"{100 * first['pretrained']['mean']:.1f} ± {100 * first['pretrained']['std']:.1f}" \
        in table
    for name in ("accuracy.png", "filters_finetune.png", "filters_frozen.png"):
        assert (small_run / name).stat().st_size > 0


def test_frozen_first_layer_is_not_trained(small_run):
    stored = json.loads((small_run / "runs.json").read_text())["runs"]
    frozen = stored["10 classes/2 per class/frozen/seed 0"]["filters"]
    tuned = stored["10 classes/2 per class/finetune/seed 0"]["filters"]
    # same seed and init: the frozen random arm keeps its initial kernels, the tuned one moves
    assert not np.allclose(frozen["random"], tuned["random"])
    assert not np.allclose(frozen["pretrained"], frozen["random"])


def test_resume_skips_finished_runs(small_run, monkeypatch):
    before = json.loads((small_run / "metrics.json").read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("a finished classifier run was redone")

    monkeypatch.setattr(pretrain_cmd, "paired_run", refuse)
    assert main([*SMALL, "--out", str(small_run), "--resume"]) == 0
    after = json.loads((small_run / "metrics.json").read_text())
    assert after["settings"] == before["settings"]


def test_resume_with_other_epochs_is_refused(small_run, capsys):
    """The finished auto-encoder is not reused for another --epochs, and config.json keeps
    describing the run whose files the folder holds."""
    config = (small_run / "config.json").read_bytes()
    epochs = json.loads(config)["epochs"]
    argv = [*SMALL, "--out", str(small_run), "--resume", "--epochs", str(epochs + 1)]
    assert main(argv) == 2
    assert "--resume: autoencoder.safetensors finished" in capsys.readouterr().err
    assert (small_run / "config.json").read_bytes() == config


@pytest.mark.parametrize(("flags", "named"), [
    (["--classes", "1"], "--classes"),
    (["--classes", "11"], "--classes"),
    (["--seeds", "0"], "--seeds"),
    (["--labels-per-class", "0"], "--labels-per-class"),
    (["--steps", "0"], "--steps"),
    (["--classifier-lr", "0"], "--classifier-lr"),
    (["--threads", "0"], "--threads"),
    (["--kernel", "29"], "--kernel 29"),  # it named an internal "Y" after loading the data
])
def test_bad_flags_are_named(tmp_path, capsys, flags, named):
    argv = ["pretrain", "--sample", "--out", str(tmp_path / "bad"), "--quiet", *flags]
    assert main(argv) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_unknown_first_layer_mode(tmp_path, capsys):
    assert main(["pretrain", "--sample", "--out", str(tmp_path / "bad"),
                 "--first-layer", "half"]) == 2
    assert "--first-layer" in capsys.readouterr().err


def test_one_seed_says_no_test_is_run(tmp_path):
    """With one seed the table said the paired t-test decides, but no test runs."""
    argv = [a if a != "3" or i == 0 or SMALL[i - 1] != "--seeds" else "1"
            for i, a in enumerate(SMALL)]
    assert main([*argv, "--labels-per-class", "1", "--classes", "3", "--first-layer",
                 "finetune", "--out", str(tmp_path / "one")]) == 0
    table = (tmp_path / "one" / "table.md").read_text()
    assert "no test is run" in table and "t-test decides" not in table
