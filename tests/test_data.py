"""Data layer: MNIST IDX files, verified download and cache, bundled sample, natural images."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import stat
import threading
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from latentebm._io import file_mode
from latentebm.data import (
    extract_patches,
    load_images,
    load_mnist,
    local_contrast_normalize,
    mnist_cache_dir,
    mnist_vectors,
    natural_patches,
    random_windows,
    read_idx,
    whiten_1f,
    windows,
    write_idx,
    zca_whiten,
)
from latentebm.data import mnist as mnist_mod
from latentebm.data.mnist import FILES, SAMPLE_DIR, SHA256, idx_bytes, parse_idx

REAL_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_real = pytest.mark.skipif(
    not (REAL_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"full MNIST files not found in {REAL_MNIST}",
)
NAMES = [name for pair in FILES.values() for name in pair]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test sees the user's env, cache or the network."""
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    monkeypatch.setenv("LATENTEBM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "MIRRORS", ("http://127.0.0.1:9/unreachable/",))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_mnist(folder: Path, n_train: int = 6, n_test: int = 4) -> dict[str, bytes]:
    """Write a tiny MNIST-shaped data set; return each file's bytes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        image_name, label_name = FILES[split]
        write_idx(folder / image_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / label_name, rng.integers(0, 10, n, dtype=np.uint8))
    return {name: (folder / name).read_bytes() for name in NAMES}


@pytest.fixture
def fake_checksums(monkeypatch, tmp_path):
    """A fake data set in tmp_path/src whose sha256 become the 'published' ones."""
    files = _fake_mnist(tmp_path / "src")
    monkeypatch.setattr(mnist_mod, "SHA256", {name: _sha(data) for name, data in files.items()})
    return files


# --------------------------------------------------------------------------- IDX format


def test_idx_round_trip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, images)
        np.testing.assert_array_equal(read_idx(tmp_path / name, ndim=3), images)
    write_idx(tmp_path / "l.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.gz", ndim=1), labels)
    data = idx_bytes(images)
    assert data[:4] == bytes.fromhex("00000803")
    assert data[4:16] == bytes.fromhex("00000005 0000001c 0000001c")
    assert idx_bytes(labels)[:4] == bytes.fromhex("00000801")


def test_write_idx_is_deterministic(tmp_path):
    arr = np.arange(100, dtype=np.uint8)
    a, b = write_idx(tmp_path / "a.gz", arr), write_idx(tmp_path / "b.gz", arr)
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00", "not an IDX"),
        (bytes.fromhex("00000903") + b"\0" * 12, "magic"),
        (bytes.fromhex("01000803") + b"\0" * 12, "magic"),
        (bytes.fromhex("00000801 00000002") + b"\1\2", "magic"),  # labels where images expected
        (bytes.fromhex("00000803 00000002 0000001c"), "truncated IDX header"),
        (bytes.fromhex("00000803 00000002 0000001c 0000001c") + b"\0" * 100, "truncated"),
        (bytes.fromhex("00000803 00000001 00000001 00000002") + b"\0" * 3, "corrupt"),
        # a header claiming 2^32 - 1 per axis: the byte count it implies, not an int64 overflow
        (bytes.fromhex("00000803 ffffffff ffffffff ffffffff") + b"\0" * 3,
         r"\(79228162458924105385300197391 bytes\)"),
    ],
)
def test_parse_idx_rejects_malformed(data, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_idx(data, "thefile", ndim=3)
    assert "thefile" in str(info.value)


def test_idx_bytes_validates():
    with pytest.raises(TypeError, match="array"):
        idx_bytes(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="array"):
        idx_bytes(np.uint8(3))


def test_corrupt_or_truncated_gzip_rejected(tmp_path):
    good = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    data = good.read_bytes()
    cut = tmp_path / "cut" / good.name
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"this is not gzip at all" * 10)
    with pytest.raises(ValueError, match="junk.gz"):
        read_idx(junk)
    flipped = bytearray(data)
    flipped[-6] ^= 0xFF  # corrupt the CRC/length trailer
    bad_crc = tmp_path / "crc.gz"
    bad_crc.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="crc.gz"):
        read_idx(bad_crc)
    # a valid gzip holding a short IDX body
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]))
    with pytest.raises(ValueError, match="short.gz"):
        read_idx(short)


# --------------------------------------------------------------------------- real files


@needs_real
def test_real_mnist_files():
    digest = hashlib.sha256((REAL_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    assert digest == "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    assert digest == SHA256["t10k-labels-idx1-ubyte.gz"]
    x, y = load_mnist("train", data_dir=REAL_MNIST)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(y).tolist()[:2] == [5923, 6742]
    xt, yt = load_mnist("test", data_dir=REAL_MNIST.parent)  # finds the mnist/ subfolder
    assert xt.shape == (10000, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]
    # the bundled sample is the head of the real data
    xs, ys = load_mnist("train", sample=True)
    np.testing.assert_array_equal(xs, x[:20000])
    np.testing.assert_array_equal(ys, y[:20000])
    xs, ys = load_mnist("test", sample=True)
    np.testing.assert_array_equal(xs, xt[:500])


# --------------------------------------------------------------------------- resolution


def test_bundled_sample_loads_offline():
    x, y = load_mnist("train", sample=True, download=False)
    assert x.shape == (20000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (20000,) and y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    xt, yt = load_mnist("test", sample=True)
    assert xt.shape == (500, 28, 28) and yt.shape == (500,)
    assert not mnist_cache_dir().exists()  # nothing downloaded or cached
    readme = (SAMPLE_DIR / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme
    total = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir())
    assert total < 4_000_000
    for name, digest in mnist_mod.SAMPLE_SHA256.items():
        assert digest in readme and _sha((SAMPLE_DIR / name).read_bytes()) == digest


def test_bundled_sample_checksum_enforced(monkeypatch):
    bad = dict(mnist_mod.SAMPLE_SHA256, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    monkeypatch.setattr(mnist_mod, "SAMPLE_SHA256", bad)
    with pytest.raises(ValueError, match="t10k-labels.*sha256"):
        load_mnist("test", sample=True)


def test_env_and_data_dir_resolution(tmp_path, monkeypatch):
    env_files = _fake_mnist(tmp_path / "env" / "mnist", n_train=3)
    _fake_mnist(tmp_path / "explicit", n_train=7)
    monkeypatch.setenv("LATENTEBM_DATA", str(tmp_path / "env"))  # the mnist/ subfolder is found
    x, y = load_mnist("train", download=False)
    assert x.shape == (3, 28, 28) and y.shape == (3,)
    buf = env_files["train-images-idx3-ubyte.gz"]
    np.testing.assert_array_equal(x.reshape(-1), np.frombuffer(gzip.decompress(buf)[16:], np.uint8))
    x, _ = load_mnist("train", data_dir=tmp_path / "explicit")  # explicit beats the env
    assert x.shape == (7, 28, 28)
    x, _ = load_mnist("train", data_dir=str(tmp_path / "explicit"))
    assert x.shape == (7, 28, 28)
    # uncompressed IDX files are accepted too
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in FILES["test"]:
        (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress(env_files[name]))
    xt, yt = load_mnist("test", data_dir=raw)
    assert xt.shape == (4, 28, 28) and yt.shape == (4,)
    assert not mnist_cache_dir().exists()


def test_missing_files_explained(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data_dir.*train-images-idx3-ubyte.gz.*download"):
        load_mnist("train", data_dir=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="data_dir.*not a directory"):
        load_mnist("train", data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("LATENTEBM_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="LATENTEBM_DATA.*t10k-images"):
        load_mnist("test")
    monkeypatch.delenv("LATENTEBM_DATA")
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_mnist("test", download=False)


def test_bad_files_in_data_dir_rejected(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "d"
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 27, 28), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="t10k-images.*28x28"):
        load_mnist("test", data_dir=d)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="3 labels.*4 images"):
        load_mnist("test", data_dir=d)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.full(4, 12, np.uint8))
    with pytest.raises(ValueError, match="t10k-labels.*0-9"):
        load_mnist("test", data_dir=d)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="t10k-images.*holds no images"):  # loaded as empty
        load_mnist("test", data_dir=d)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist("test", data_dir=d)
    assert (d / "t10k-labels-idx1-ubyte.gz").exists()  # user files are never deleted


def test_cache_hit_and_bad_cache_file_deleted(tmp_path, fake_checksums):
    cache = mnist_cache_dir()
    assert cache == tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name, data in fake_checksums.items():
        (cache / name).write_bytes(data)
    x, y = load_mnist("train", download=False)
    assert x.shape == (6, 28, 28) and y.shape == (6,)
    # same bytes length, one flipped byte: fails the checksum, is deleted, is not used
    bad = bytearray(fake_checksums["train-labels-idx1-ubyte.gz"])
    bad[20] ^= 1
    (cache / "train-labels-idx1-ubyte.gz").write_bytes(bytes(bad))
    with pytest.warns(UserWarning, match="sha256"), pytest.raises(FileNotFoundError):
        load_mnist("train", download=False)
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert (cache / "train-images-idx3-ubyte.gz").exists()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def local_server(tmp_path, fake_checksums):
    """127.0.0.1 HTTP server: /good/ has the right files, /bad/ corrupted ones, /none/ 404s."""
    root = tmp_path / "www"
    for name, data in fake_checksums.items():
        for sub, payload in (("good", data), ("bad", data[:-8] + b"\0" * 8)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / name).write_bytes(payload)
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_skips_bad_mirrors(monkeypatch, local_server, fake_checksums):
    mirrors = tuple(f"{local_server}/{sub}/" for sub in ("none", "bad", "good"))
    monkeypatch.setattr(mnist_mod, "MIRRORS", mirrors)
    x, y = load_mnist("test")
    assert x.shape == (4, 28, 28) and y.shape == (4,)
    cache = mnist_cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES["test"])  # no *.part left
    for name in FILES["test"]:
        assert (cache / name).read_bytes() == fake_checksums[name]
        assert stat.S_IMODE((cache / name).stat().st_mode) == file_mode()  # not pooch's 0600
    monkeypatch.setattr(mnist_mod, "MIRRORS", ())  # now served from the cache
    assert load_mnist("test")[0].shape == (4, 28, 28)


def test_download_all_mirrors_bad(monkeypatch, local_server):
    monkeypatch.setattr(mnist_mod, "MIRRORS", (f"{local_server}/bad/", f"{local_server}/none/"))
    with pytest.raises(OSError, match=r"(?s)sha256 mismatch.*404"):
        load_mnist("train")
    assert list(mnist_cache_dir().iterdir()) == []  # bad payloads never kept


def test_download_from_file_url(monkeypatch, tmp_path, fake_checksums):
    monkeypatch.setattr(mnist_mod, "MIRRORS", ((tmp_path / "src").as_uri() + "/",))
    x, _ = load_mnist("train")
    assert x.shape == (6, 28, 28)


def test_load_mnist_validates_arguments(tmp_path):
    for split in ("val", "TRAIN", 1, None):
        with pytest.raises(ValueError, match="split"):
            load_mnist(split)
    with pytest.raises(TypeError, match="data_dir"):
        load_mnist("train", data_dir=3)
    with pytest.raises(TypeError, match="download"):
        load_mnist("train", download="yes")
    with pytest.raises(TypeError, match="sample"):
        load_mnist("train", sample=1)
    with pytest.raises(ValueError, match="data_dir.*sample"):
        load_mnist("train", data_dir=tmp_path, sample=True)


def test_mnist_vectors():
    x, _ = load_mnist("test", sample=True)
    v = mnist_vectors(x)
    assert v.shape == (500, 784) and v.dtype == np.float32
    assert v.min() == 0.0 and v.max() == 1.0
    np.testing.assert_allclose(v[0], x[0].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(mnist_vectors(v.reshape(-1, 28, 28)), v)
    with pytest.raises(ValueError, match="images"):
        mnist_vectors(x[0])
    with pytest.raises(ValueError, match="images"):
        mnist_vectors(np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(TypeError, match="images"):
        mnist_vectors(x.astype(np.int64))
    with pytest.raises(ValueError, match="images"):
        mnist_vectors(np.full((1, 2, 2), 2.0))
    with pytest.raises(ValueError, match="images"):
        mnist_vectors(np.full((1, 2, 2), np.nan))


# --------------------------------------------------------------------------- natural images


@pytest.fixture(scope="module")
def photos():
    return load_images()


def test_load_images_default(photos):
    assert len(photos) == 9
    for im in photos:
        assert im.ndim == 2 and im.dtype == np.float64 and 0 <= im.min() and im.max() <= 1
    colour = load_images(grey=False, max_images=2)
    assert len(colour) == 2 and all(im.ndim == 3 and im.shape[2] == 3 for im in colour)
    assert len(load_images(max_images=3)) == 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio probing its plugins
def test_load_images_folder(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    io.imsave(folder / "b.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    io.imsave(folder / "a.tif", rng.integers(0, 65536, (16, 16), dtype=np.uint16))
    (folder / "notes.txt").write_text("ignored")
    grey = load_images(folder)
    assert [im.shape for im in grey] == [(16, 16), (20, 30)]  # sorted by name
    colour = load_images(str(folder), grey=False)
    assert [im.shape for im in colour] == [(16, 16, 3), (20, 30, 3)]
    assert all(im.dtype == np.float64 and 0 <= im.min() and im.max() <= 1 for im in colour)
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="folder.*c.jpg"):
        load_images(folder)
    with pytest.raises(FileNotFoundError, match="folder.*does not exist"):
        load_images(tmp_path / "missing")
    with pytest.raises(NotADirectoryError, match="folder"):
        load_images(folder / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder.*no images"):
        load_images(tmp_path / "empty")
    with pytest.raises(TypeError, match="folder"):
        load_images(3)
    with pytest.raises(ValueError, match="max_images"):
        load_images(max_images=0)
    with pytest.raises(TypeError, match="grey"):
        load_images(grey="yes")


def _radial_power(img: np.ndarray, edges: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.fft2(img - img.mean())) ** 2
    fy, fx = np.meshgrid(*(np.fft.fftfreq(n) for n in img.shape), indexing="ij")
    f = np.hypot(fy, fx)
    return np.array([power[(f >= a) & (f < b)].mean() for a, b in pairwise(edges)])


def test_whiten_1f_flattens_spectrum(photos):
    camera = photos[0]
    edges = np.geomspace(0.01, 0.15, 8)  # cycles/pixel, well below the cut-off f0 = 0.4
    centres = np.log(np.sqrt(edges[:-1] * edges[1:]))
    raw, white = _radial_power(camera, edges), _radial_power(whiten_1f(camera), edges)
    raw_slope = np.polyfit(centres, np.log(raw), 1)[0]
    white_slope = np.polyfit(centres, np.log(white), 1)[0]
    assert raw_slope < -2.0 and abs(white_slope) < 0.8  # ~1/f^2 power -> nearly flat
    assert (raw.max() / raw.min()) / (white.max() / white.min()) > 20


def test_whiten_1f_is_olshausen_and_fields_filter(photos):
    """Their sparsenet filter on an N×N image, in cycles per picture: ``ρ·exp(−(ρ/f0)⁴)``,
    ``f0 = 0.4 N`` (200 cycles/picture at 512 pixels). The library's cut at half of it."""
    n = 128
    image = photos[0][:n, :n]
    rho = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij"))
    theirs = np.real(np.fft.ifft2(np.fft.fft2(image - image.mean())
                                  * rho * np.exp(-(rho / (0.4 * n)) ** 4)))
    theirs = (theirs - theirs.mean()) / (theirs - theirs.mean()).std()
    np.testing.assert_allclose(whiten_1f(image, pad=False), theirs, atol=1e-9)


def test_whiten_1f_does_not_depend_on_the_images_scale(photos):
    """An image times 1e160 came back all zeros (its variance overflowed)."""
    image = photos[0][:64, :64]
    for scale in (1e160, 1e-160):
        np.testing.assert_allclose(whiten_1f(image * scale), whiten_1f(image), atol=1e-9)


def test_whiten_1f_properties(photos):
    w = whiten_1f(photos[0])
    assert w.shape == photos[0].shape and w.dtype == np.float64
    assert abs(w.mean()) < 1e-10 and w.std() == pytest.approx(1.0)
    colour = load_images(grey=False, max_images=1)[0][:100, :120]
    wc = whiten_1f(colour, f0_ratio=0.3, pad=False)
    assert wc.shape == colour.shape
    np.testing.assert_allclose(wc.mean(axis=(0, 1)), 0.0, atol=1e-10)
    assert wc.std() == pytest.approx(1.0)
    np.testing.assert_allclose(whiten_1f(3 * colour + 1, 0.3, pad=False), wc, atol=1e-9)
    for bad, exc in [(np.ones((8, 8)), ValueError), (np.zeros(8), ValueError)]:
        with pytest.raises(exc, match="image"):
            whiten_1f(bad)
    with pytest.raises(ValueError, match="image"):
        whiten_1f(np.full((8, 8), np.nan))
    with pytest.raises(TypeError, match="image"):
        whiten_1f(np.array([["a"]]))
    for f0 in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="f0_ratio"):
            whiten_1f(photos[0], f0)
    with pytest.raises(TypeError, match="f0_ratio"):
        whiten_1f(photos[0], "0.4")
    channels_first = np.moveaxis(colour, -1, 0)
    for image_function in (whiten_1f, local_contrast_normalize):
        with pytest.raises(ValueError, match=r"channels-first.*moveaxis"):
            image_function(channels_first)
    with pytest.raises(ValueError, match=r"images\[0\].*channels-first"):
        extract_patches([channels_first], 8, 4, seed=0)


def test_zca_whiten():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((6, 6))
    x = rng.standard_normal((5000, 6)) @ mixing + 3.0
    w, (mean, matrix) = zca_whiten(x, eps=1e-8)
    np.testing.assert_allclose(np.cov(w, rowvar=False, bias=True), np.eye(6), atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose((x[:10] - mean) @ matrix, w[:10])
    # ZCA is the whitening closest to the input: it keeps the data's orientation
    assert np.mean(np.sum(w * (x - mean), axis=1)) > 0
    with pytest.raises(ValueError, match="patches"):
        zca_whiten(np.zeros(5))
    with pytest.raises(ValueError, match="patches"):
        zca_whiten(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="patches"):
        zca_whiten(np.full((3, 2), np.inf))
    with pytest.raises(TypeError, match="patches"):
        zca_whiten(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="eps"):
        zca_whiten(x, eps=0)


def test_local_contrast_normalize(photos):
    img = photos[0][:128, :128]
    out = local_contrast_normalize(img, sigma=3)
    assert out.shape == img.shape and np.isfinite(out).all()
    np.testing.assert_allclose(local_contrast_normalize(0.5 * img + 0.2, sigma=3), out, atol=1e-9)
    assert abs(out.mean()) < 0.1 and 0.3 < out.std() < 1.5
    colour = np.random.default_rng(0).random((32, 40, 3))
    assert local_contrast_normalize(colour, 2).shape == (32, 40, 3)
    np.testing.assert_array_equal(local_contrast_normalize(np.ones((9, 9)), 2), 0.0)
    for sigma in (0, -1.0, np.nan):
        with pytest.raises(ValueError, match="sigma"):
            local_contrast_normalize(img, sigma)
    with pytest.raises(ValueError, match="image"):
        local_contrast_normalize(np.zeros((2, 2, 2, 2)), 1)


def test_extract_patches_deterministic_and_correct():
    rng = np.random.default_rng(0)
    a = np.arange(40 * 50, dtype=float).reshape(40, 50)
    b = rng.random((30, 30))
    p1 = extract_patches([a, b], 8, 500, seed=3)
    assert p1.shape == (500, 64) and p1.dtype == np.float64
    np.testing.assert_array_equal(p1, extract_patches([a, b], 8, 500, seed=3))
    assert not np.array_equal(p1, extract_patches([a, b], 8, 500, seed=4))
    np.testing.assert_allclose(p1.mean(axis=1), 0.0, atol=1e-9)
    gen = np.random.default_rng(3)
    np.testing.assert_array_equal(extract_patches([a, b], 8, 500, seed=gen), p1)
    # raw patches are true crops: image a's values encode their position
    raw = extract_patches(a, 8, 50, seed=0, remove_mean=False)
    for patch in raw:
        r, c = divmod(int(patch[0]), 50)
        np.testing.assert_array_equal(patch, a[r : r + 8, c : c + 8].reshape(-1))
    # positions are uniform over all images: a has (33*43)/(33*43 + 23*23) of them
    from_a = extract_patches([a, b], 8, 4000, seed=1, remove_mean=False)[:, 0] >= 1
    assert abs(from_a.mean() - 33 * 43 / (33 * 43 + 23 * 23)) < 0.03
    # colour layout: (size, size, C) flattened, channel fastest
    col = rng.random((10, 12, 3))
    pc = extract_patches(col, 10, 5, seed=0, remove_mean=False)
    assert pc.shape == (5, 300)
    assert any(np.array_equal(p, col[:, c : c + 10].reshape(-1)) for p in pc for c in range(3))


def test_extract_patches_validates():
    img = np.zeros((10, 10))
    cases = [
        (dict(images=img, size=11, n_patches=5), ValueError, "size"),
        (dict(images=img, size=0, n_patches=5), ValueError, "size"),
        (dict(images=img, size=2.5, n_patches=5), TypeError, "size"),
        (dict(images=img, size=True, n_patches=5), TypeError, "size"),
        (dict(images=img, size=3, n_patches=0), ValueError, "n_patches"),
        (dict(images=[], size=3, n_patches=5), ValueError, "images"),
        (dict(images="img.png", size=3, n_patches=5), TypeError, "images"),
        (dict(images=[img, np.zeros((10, 10, 3))], size=3, n_patches=5), ValueError, "images"),
        (dict(images=[img, np.full((5, 5), np.nan)], size=3, n_patches=5), ValueError, "images"),
        (dict(images=np.zeros(10), size=3, n_patches=5), ValueError, "images"),
    ]
    for kwargs, exc, name in cases:
        with pytest.raises(exc, match=name):
            extract_patches(**kwargs, seed=0)
    with pytest.raises(TypeError, match="seed"):
        extract_patches(img, 3, 5, seed="0")
    with pytest.raises(ValueError, match="seed"):
        extract_patches(img, 3, 5, seed=-1)


@pytest.mark.parametrize("whiten", ["1f", "zca", "none"])
def test_natural_patches(photos, whiten):
    imgs = [photos[0][:200, :200], photos[5][:200, :200]]
    p = natural_patches(8, 2000, images=imgs, whiten=whiten, seed=0)
    assert p.shape == (2000, 64) and p.dtype == np.float32
    assert float(p.std()) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(p, natural_patches(8, 2000, images=imgs, whiten=whiten, seed=0))
    if whiten == "zca":
        eigvals = np.linalg.eigvalsh(np.cov(p.astype(np.float64), rowvar=False))
        assert eigvals[-2] / np.median(eigvals) < 3  # flat apart from the removed DC direction


def test_natural_patches_sources_and_errors(tmp_path):
    from skimage import io

    io.imsave(tmp_path / "x.png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    assert natural_patches(6, 100, images=tmp_path, seed=1).shape == (100, 36)
    assert natural_patches(6, 100, images=tmp_path, grey=False, seed=1).shape == (100, 108)
    colour = [np.random.default_rng(1).random((30, 30, 3))]
    assert natural_patches(6, 50, images=colour, whiten="none").shape == (50, 36)
    with pytest.raises(ValueError, match="whiten"):
        natural_patches(6, 10, images=colour, whiten="pca")
    with pytest.raises(ValueError, match="size"):
        natural_patches(64, 10, images=colour)
    with pytest.raises(FileNotFoundError, match="folder"):
        natural_patches(6, 10, images=tmp_path / "missing")
    with pytest.raises(ValueError, match="n_patches"):
        natural_patches(6, 1, images=colour, whiten="zca")
    # a flat photograph among many: the error names its file (or its index in a list)
    io.imsave(tmp_path / "y_flat.png", np.full((40, 40), 7, np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match=r"^y_flat\.png: image is constant"):
        natural_patches(6, 10, images=tmp_path)
    with pytest.raises(ValueError, match=r"^images\[1\]: image is constant"):
        natural_patches(6, 10, images=[colour[0], np.full((30, 30, 3), 0.5)])
    images, names = load_images(tmp_path, return_names=True)
    assert names == ["x.png", "y_flat.png"] and len(images) == 2
    assert load_images(None, return_names=True)[1][0] == "skimage.data.camera"


def test_windows_are_crops_and_random_windows_draws_like_before():
    images = torch.arange(3 * 2 * 9 * 11, dtype=torch.float64).reshape(3, 2, 9, 11)
    which, rows, cols = torch.tensor([2, 0, 1]), torch.tensor([0, 5, 3]), torch.tensor([7, 0, 2])
    cut = windows(images, which, rows, cols, 4)
    assert cut.shape == (3, 2, 4, 4)
    for k in range(3):
        i, r, c = int(which[k]), int(rows[k]), int(cols[k])
        torch.testing.assert_close(cut[k], images[i, :, r : r + 4, c : c + 4], rtol=0, atol=0)
    # the draw order (images, rows, columns) that ConvDictionaryLearning's initialisation uses
    gen = torch.Generator().manual_seed(5)
    which = torch.randint(3, (6,), generator=gen)
    rows = torch.randint(6, (6,), generator=gen)
    cols = torch.randint(8, (6,), generator=gen)
    expected = torch.stack([images[int(i), :, int(r) : int(r) + 4, int(c) : int(c) + 4]
                            for i, r, c in zip(which, rows, cols, strict=True)])
    got = random_windows(images, 6, 4, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_photographs_load_as_displayed_and_hidden_files_are_skipped(tmp_path):
    """A camera JPEG stored sideways with EXIF Orientation=6 loaded sideways; a macOS
    "._photo.jpg" resource fork beside it aborted the whole folder."""
    from PIL import Image, ImageOps

    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = 255  # the left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90° clockwise to display
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(stored).convert("CMYK").save(tmp_path / "print.jpg", exif=exif.tobytes())
    (tmp_path / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    images, names = load_images(tmp_path, grey=False, return_names=True)
    assert names == ["photo.jpg", "print.jpg"]
    with Image.open(tmp_path / "photo.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im)) / 255.0
    for image in images:
        assert image.shape == (80, 40, 3)
        assert float(image[:38].mean()) > 0.9 and float(image[42:].mean()) < 0.1  # top white
    np.testing.assert_allclose(images[0], shown, atol=1e-12)
    # a multi-page TIFF loaded its first page without a word
    pages = [Image.fromarray(stored), Image.fromarray(255 - stored)]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ValueError, match="scan.tif.*2 pages"):
        load_images(tmp_path)


def test_image_files_are_read_in_their_own_range_or_refused(tmp_path):
    """A CMYK JPEG came back inverted (its C, M, Y read as R, G, B), a float TIFF of 0-255 was
    clipped to 1 and a signed one lost its negative half; a grey + alpha PNG was refused."""
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))  # dark left, bright right
    (tmp_path / "cmyk").mkdir()
    Image.fromarray(np.stack([ramp] * 3, -1)).convert("CMYK").save(tmp_path / "cmyk" / "x.jpg",
                                                                  quality=100)
    img = load_images(tmp_path / "cmyk")[0]
    assert img[:, :4].mean() < 0.05 and img[:, -4:].mean() > 0.95
    (tmp_path / "la").mkdir()
    Image.fromarray(np.stack([ramp, np.full_like(ramp, 255)], -1), "LA").save(
        tmp_path / "la" / "x.png")
    np.testing.assert_allclose(load_images(tmp_path / "la")[0], ramp / 255.0)
    for name, pixels, match in (("float", ramp.astype(np.float32), "float image.*0, 255"),
                                ("signed", ramp.astype(np.int16), "signed integer")):
        (tmp_path / name).mkdir()
        Image.fromarray(pixels).save(tmp_path / name / "x.tif")
        with pytest.raises(ValueError, match=match):
            load_images(tmp_path / name)


def test_flat_and_tiny_images_are_judged_by_their_own_scale():
    """A flat image's local contrast was -1 everywhere (the filter's rounding divided by a floor
    just as small); whitening called an image of 1e-13 constant."""
    for value in (0.9, 0.123456789):
        np.testing.assert_array_equal(local_contrast_normalize(np.full((10, 10), value)), 0.0)
        np.testing.assert_array_equal(local_contrast_normalize(np.full((9, 11, 3), value)), 0.0)
    x = np.random.default_rng(0).random((32, 32))
    np.testing.assert_allclose(whiten_1f(1e-13 * x), whiten_1f(x), atol=1e-9)
    np.testing.assert_allclose(local_contrast_normalize(1e-13 * x), local_contrast_normalize(x),
                               atol=1e-9)


def test_a_stack_of_grey_images_is_not_read_as_one_image_of_many_channels():
    stack = np.random.default_rng(0).random((10, 28, 28))
    with pytest.raises(ValueError, match="28 channels.*stack of 10 grey images"):
        extract_patches(stack, 5, 4, seed=0)
    assert extract_patches(list(stack), 5, 4, seed=0).shape == (4, 25)
    with pytest.raises(ValueError, match="size"):
        random_windows(torch.zeros(3, 1, 8, 8), 2, 0, torch.Generator())
