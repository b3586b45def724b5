"""Sharded datasets larger than memory: exact reads, the seeded global order (the same for any
number of processes and as the in-memory training loop's), resume, damaged shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentebm import LISTA, PSD, VAE
from latentebm.data.streaming import (
    ShardedArray,
    ShardError,
    prepare_patches,
    stream_batches,
    write_shards,
)
from latentebm.training import MinibatchLoop


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((103, 7)).astype(np.float32)


@pytest.fixture
def shards(tmp_path: Path, rows: np.ndarray) -> Path:
    return write_shards(rows, tmp_path / "ds", rows_per_shard=20)


def order(data, batch, epochs, world, start=(0, 0), seed=3):
    """Per (epoch, batch): the rank-ordered concatenation of every rank's indices."""
    per_rank = [list(stream_batches(data, batch, epochs, seed=seed, start=start, rank=r,
                                    world=world)) for r in range(world)]
    out = {}
    for items in zip(*per_rank, strict=True):
        key = items[0][:2]
        assert all(it[:2] == key for it in items)
        out[key] = torch.cat([it[2] for it in items]).tolist()
    return out


def test_reads_are_exact_in_any_order(shards: Path, rows: np.ndarray) -> None:
    data = ShardedArray(shards)
    assert data.shape == rows.shape and len(data) == 103 and len(data._shards) == 6
    idx = np.array([102, 0, 19, 20, 55, 55, 21, 99, 3])
    np.testing.assert_array_equal(data.read(idx), rows[idx])
    got = data[torch.as_tensor(idx)]
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(rows[idx]))
    np.testing.assert_array_equal(data.read(np.arange(103)), rows)
    with pytest.raises(IndexError):
        data.read(np.array([103]))
    # slices, as on any array: across shard boundaries, stepped, reversed, empty
    for part in (slice(None, 5), slice(15, 47), slice(None, None, 7), slice(None, None, -3),
                 slice(90, None), slice(50, 50)):
        np.testing.assert_array_equal(data[part].numpy(), rows[part])
    # negative rows count from the end, as on any array
    np.testing.assert_array_equal(data[[-1, 0, -103]].numpy(), rows[[-1, 0, -103]])
    with pytest.raises(IndexError, match=r"\[-103, 103\)"):
        data[[-104]]


def test_order_is_seeded_and_the_training_loops(shards: Path) -> None:
    data = ShardedArray(shards)
    a, b = order(data, 16, 2, 1), order(data, 16, 2, 1)
    assert a == b
    assert a != order(data, 16, 2, 1, seed=4)
    loop = MinibatchLoop(103, 16, 2, seed=3, device="cpu", progress=False)
    with loop:
        for epoch in loop.epochs():
            for batch in epoch:
                assert batch.idx.tolist() == a[(batch.epoch, batch.batch)]
                loop.step_done(batch, batch.step + 1)


@pytest.mark.parametrize("world", [2, 3, 5])
def test_sharding_covers_every_sample_once_per_epoch_in_the_same_order(
    shards: Path, world: int
) -> None:
    data = ShardedArray(shards)
    single = order(data, 16, 2, 1)
    assert order(data, 16, 2, world) == single
    for epoch in range(2):
        for r in range(world):
            mine = [i for e, _, idx, _ in stream_batches(data, 16, 2, seed=3, rank=r, world=world)
                    if e == epoch for i in idx.tolist()]
            others = [i for q in range(world) if q != r
                      for e, _, idx, _ in stream_batches(data, 16, 2, seed=3, rank=q, world=world)
                      if e == epoch for i in idx.tolist()]
            assert not set(mine) & set(others)
        seen = sorted(i for ids in (v for (e, _), v in single.items() if e == epoch) for i in ids)
        assert seen == list(range(103))


def test_rows_match_the_indices(shards: Path, rows: np.ndarray) -> None:
    data = ShardedArray(shards)
    for _, _, idx, got in stream_batches(data, 10, 1, seed=1, rank=1, world=2):
        assert torch.equal(got, torch.from_numpy(rows[idx.numpy()]))


def test_resume_reproduces_the_order(shards: Path) -> None:
    data = ShardedArray(shards)
    full = order(data, 16, 3, 2)
    resumed = order(data, 16, 3, 2, start=(1, 4))
    assert resumed == {k: v for k, v in full.items() if k >= (1, 4)}
    assert min(resumed) == (1, 4)


def test_prepare_patches_is_deterministic_and_unit_rms(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.random((40, 50)), rng.random((33, 31))]
    a = prepare_patches(tmp_path / "a", 2500, size=6, images=images, seed=5, chunk=700,
                        rows_per_shard=1000)
    b = prepare_patches(tmp_path / "b", 2500, size=6, images=images, seed=5, chunk=700,
                        rows_per_shard=1000)
    ia, ib = (json.loads((p / "index.json").read_text()) for p in (a, b))
    assert [s["sha256"] for s in ia["shards"]] == [s["sha256"] for s in ib["shards"]]
    assert [s["rows"] for s in ia["shards"]] == [1000, 1000, 500]
    x = ShardedArray(a)[np.arange(2500)].double()
    assert x.shape == (2500, 36)
    assert abs(float(x.pow(2).mean()) - 1.0) < 1e-5
    assert float(x.mean(1).abs().max()) < 1e-5  # each patch's mean removed


def test_a_damaged_shard_is_named(shards: Path) -> None:
    victim = shards / "shard-00002.npy"
    raw = bytearray(victim.read_bytes())
    raw[-5] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"shard-00002\.npy is damaged: its SHA-256"):
        ShardedArray(shards)
    victim.write_bytes(bytes(raw[:-8]))
    with pytest.raises(ShardError, match=r"shard-00002\.npy is damaged: .*truncated"):
        ShardedArray(shards, verify=False)
    victim.unlink()
    with pytest.raises(ShardError, match=r"shard-00002\.npy is missing"):
        ShardedArray(shards)


def test_an_incomplete_dataset_is_refused(tmp_path: Path, rows: np.ndarray) -> None:
    with pytest.raises(ShardError, match="not a prepared dataset"):
        ShardedArray(tmp_path)
    ds = write_shards(rows, tmp_path / "ds", rows_per_shard=50)
    index = json.loads((ds / "index.json").read_text())
    index["n_rows"] = 200
    index.pop("sha256_index")  # an older version's index: no checksum of its own
    (ds / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="do not add up"):
        ShardedArray(ds)
    (ds / "index.json").write_text("{not json")
    with pytest.raises(ShardError, match="index.json is damaged"):
        ShardedArray(ds)


def test_writer_checks_its_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        write_shards(np.full((3, 2), np.nan), tmp_path / "x")
    with pytest.raises(ValueError, match="got 2 rows but n_rows=3"):
        write_shards(iter([np.zeros((2, 4))]), tmp_path / "y", n_rows=3, n_features=4)
    assert list((tmp_path / "y").iterdir()) == []  # no index, no half-written shard


def test_prepare_patches_command_then_sparse_coding_streams_the_shards(tmp_path: Path,
                                                                     capsys) -> None:
    from latentebm.cli import main

    prep = tmp_path / "prep"
    assert main(["prepare-patches", "--out", str(prep), "--n-patches", "2500", "--patch", "8",
                 "--rows-per-shard", "1000", "--quiet"]) == 0
    shards = prep / "patches"
    assert len(list(shards.glob("*.npy"))) == 3
    metrics = json.loads((prep / "metrics.json").read_text())
    assert metrics["n_rows"] == 2500 and metrics["n_features"] == 64
    out = tmp_path / "sc"
    assert main(["sparse-coding", "--dataset", "natural", "--shards", str(shards), "--atoms",
                 "16", "--epochs", "1", "--batch-size", "250", "--n-test", "100", "--out",
                 str(out), "--quiet"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_train"] == 2500 and result["n_test"] == 100
    assert 0 < result["test_relative_reconstruction_error"] < 1
    # the shards' patch side is recorded, not --patch's default of 12
    assert json.loads((out / "config.json").read_text())["patch"] == 8
    # --shards needs natural patches, all of them
    assert main(["sparse-coding", "--dataset", "mnist", "--shards", str(shards), "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2
    # shards whitened before whiten_1f took Olshausen & Field's cut-off (their index has no
    # cut-off) would be scored on held-out patches whitened otherwise
    index = json.loads((shards / "index.json").read_text())
    assert index["meta"]["whiten_cutoff"] == 0.4
    del index["meta"]["whiten_cutoff"], index["sha256_index"]  # as an older version wrote it
    (shards / "index.json").write_text(json.dumps(index))
    assert main(["sparse-coding", "--dataset", "natural", "--shards", str(shards), "--out",
                 str(tmp_path / "old"), "--quiet"]) == 2
    assert "whitened at another cut-off" in capsys.readouterr().err
    assert not (tmp_path / "old").exists()


MODELS_IN_MEMORY = {
    "LISTA": lambda: LISTA(torch.eye(7, 9), 0.1, 2),
    "PSD": lambda: PSD(7, 9, 0.1),
    "VAE": lambda: VAE(7, 2, hidden=4, likelihood="gaussian"),
}


@pytest.mark.parametrize("make_model", MODELS_IN_MEMORY.values(), ids=MODELS_IN_MEMORY.keys())
def test_models_that_do_not_stream_refuse_a_sharded_dataset_without_reading_it(
        shards: Path, make_model, monkeypatch) -> None:
    data = ShardedArray(shards)

    def no_reads(*args, **kwargs):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(ShardedArray, "read", no_reads)
    monkeypatch.setattr(ShardedArray, "__getitem__", no_reads)
    model = make_model()
    with pytest.raises(TypeError, match=r"ShardedArray of shape \(103, 7\).*does not stream"):
        model.fit(data, epochs=1, progress=False)


def test_an_index_with_a_bad_scale_is_damaged(shards: Path) -> None:
    """In an index without its own checksum (an older version's) the scale is outside the
    shards' checksums: NaN, -3 or 0 gave NaN, negated or zero rows."""
    index = json.loads((shards / "index.json").read_text())
    index.pop("sha256_index")
    for scale in (float("nan"), -3.0, 0.0):
        (shards / "index.json").write_text(json.dumps({**index, "scale": scale}))
        with pytest.raises(ShardError, match="scale"):
            ShardedArray(shards)


def test_an_edited_index_is_damaged(shards: Path) -> None:
    """A scale ×10 read every row 10× too large, and a dropped shard (rows adjusted) or two
    swapped entries opened without a word: the index had no checksum of its own."""
    path = shards / "index.json"
    index = json.loads(path.read_text())
    scaled = {**index, "scale": 10 * index["scale"]}
    dropped = {**index, "shards": index["shards"][:-1],
               "n_rows": index["n_rows"] - index["shards"][-1]["rows"]}
    swapped = {**index, "shards": index["shards"][::-1]}
    for edited in (scaled, dropped, swapped):
        path.write_text(json.dumps(edited))
        with pytest.raises(ShardError, match="does not match the checksum"):
            ShardedArray(shards, verify=False)
    path.write_text(json.dumps(index, indent=2))  # the same content, laid out otherwise
    assert ShardedArray(shards).shape == (index["n_rows"], index["n_features"])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": -1}, ValueError, "batch_size"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": True}, TypeError, "batch_size"),
    ({"start": (-1, 0)}, ValueError, "start"),
    ({"start": (0, 99)}, ValueError, "start"),
    ({"start": (7, 0)}, ValueError, "start"),
])
def test_stream_batches_checks_its_arguments(shards: Path, kwargs, error, match) -> None:
    """These gave no batches, an epoch -1, a skipped epoch or a bare ZeroDivisionError."""
    args = {"batch_size": 10, "epochs": 2, "seed": 0, "rank": 0, "world": 1, **kwargs}
    with pytest.raises(error, match=match):
        list(stream_batches(ShardedArray(shards), **args))


def test_shards_and_prepared_patches_refuse_what_they_would_misread(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="real numbers"):
        write_shards(np.array([[1 + 5j, 2 - 7j]]), tmp_path / "complex")
    with pytest.raises(TypeError, match="real numbers"):
        write_shards(np.array([["1.5", "2"]]), tmp_path / "text")
    with pytest.raises(ValueError, match="images is empty"):
        prepare_patches(tmp_path / "p", 10, size=4, images=[])
    with pytest.raises(TypeError, match="seed"):
        prepare_patches(tmp_path / "q", 10, size=4, images=[np.ones((8, 8))], seed=True)


def test_a_copy_or_pickle_reads_its_own_files(tmp_path):
    """Copies shared the file descriptors: when one was freed, the other read whatever file the
    system opened next under those numbers (another dataset's rows, without an error)."""
    import copy
    import gc
    import pickle

    A = np.arange(5, dtype=np.float32).reshape(5, 1)
    write_shards(A, tmp_path / "a")
    write_shards(-A - 100, tmp_path / "b")
    data = ShardedArray(tmp_path / "a")
    for make in (copy.copy, copy.deepcopy, lambda d: pickle.loads(pickle.dumps(d))):
        other = make(data)
        del other
        gc.collect()
        opened = ShardedArray(tmp_path / "b")
        np.testing.assert_array_equal(data[:].numpy(), A)
        np.testing.assert_array_equal(make(data)[:].numpy(), A)
        opened.close()


def test_held_out_patches_are_whitened_as_the_prepared_ones(tmp_path: Path) -> None:
    """sparse-coding --shards cut its held-out patches with 1/f whitening whatever the shards'
    index said: a model trained on unwhitened patches was scored on whitened ones."""
    from latentebm.cli import build_parser
    from latentebm.data import natural_patches
    from latentebm.experiments.sparse_coding_cmd import load_data

    prepare_patches(tmp_path / "p", 300, size=6, images=None, whiten="none", seed=0)
    args = build_parser().parse_args(["sparse-coding", "--dataset", "natural", "--shards",
                                      str(tmp_path / "p"), "--n-test", "40",
                                      "--out", str(tmp_path / "r")])
    _, test, shape = load_data(args)
    assert shape == (6, 6)
    expected = natural_patches(6, 40, images=None, whiten="none", seed=args.seed + 1)
    np.testing.assert_array_equal(np.asarray(test), np.asarray(expected))


def test_a_float64_model_starts_from_the_same_data_atoms_streamed(tmp_path: Path) -> None:
    """init="data" nudged the streamed float32 rows in float32 (the in-memory fit does it in
    float64): a float64 model's atoms differed by 1e-7 between the two."""
    import torch

    from latentebm import SparseCoding

    X = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    write_shards(X, tmp_path / "x")
    fits = []
    for data in (X, ShardedArray(tmp_path / "x")):
        model = SparseCoding(16, 12, lam=0.3, init="data", dtype=torch.float64)
        model.fit(data, epochs=1, batch_size=64, progress=False)
        fits.append(model.W)
    assert torch.equal(*fits)


def test_prepare_patches_refuses_to_run_in_several_processes(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    """Under torchrun every rank wrote the same shards at once: a missing temporary file on one
    rank, and an index whose shard sizes read 0 on the next try."""
    from latentebm.cli import main
    from latentebm.training import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert main(["prepare-patches", "--n-patches", "50", "--patch", "6",
                 "--out", str(tmp_path / "p")]) == 2
    assert "not under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "p" / "patches").exists()


def test_unclear_shard_errors_name_the_problem(tmp_path: Path) -> None:
    """An index holding a JSON list raised AttributeError, a read after close() an IndexError,
    and resuming an in-memory fit from a streamed fit's checkpoint a KeyError: 'codes'."""
    import torch

    from latentebm import SparseCoding

    X = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    write_shards(X, tmp_path / "x")
    data = ShardedArray(tmp_path / "x")
    data.close()
    with pytest.raises(ValueError, match="was closed"):
        data[0:2]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("[1, 2]")
    with pytest.raises(ShardError, match="is damaged"):
        ShardedArray(tmp_path / "bad")

    def interrupt(n, model):
        if n == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "c.safetensors"
    with pytest.raises(KeyboardInterrupt):
        SparseCoding(8, 6, 0.1).fit(ShardedArray(tmp_path / "x"), epochs=2, batch_size=16,
                                    checkpoint=ckpt, callback=interrupt, progress=False)
    with pytest.raises(ValueError, match="holds no warm-start codes"):
        SparseCoding(8, 6, 0.1).fit(torch.from_numpy(X), epochs=2, batch_size=16,
                                    checkpoint=ckpt, resume=True, progress=False)
