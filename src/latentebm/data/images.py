"""Natural images: loading, whitening and local contrast normalisation.

Images are float64 arrays in [0, 1], ``(H, W)`` for grey and ``(H, W, C)`` for colour.
Patches are rows, ``(n_patches, size*size*C)``, each flattened in C order from
``(size, size, C)`` (so for colour the channel index varies fastest).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._docs import fill_doc
from .._validation import check_int, check_scalar

__all__ = [
    "each_image",
    "load_images",
    "whiten_1f",
    "zca_whiten",
    "local_contrast_normalize",
    "SKIMAGE_PHOTOS",
    "IMAGE_EXTENSIONS",
]

#: Photographs bundled with scikit-image (no download needed): grey ones, then colour ones.
SKIMAGE_GREY_PHOTOS = ("camera", "moon", "grass", "gravel", "brick")
SKIMAGE_COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SKIMAGE_PHOTOS = SKIMAGE_GREY_PHOTOS + SKIMAGE_COLOUR_PHOTOS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
OLSHAUSEN_FIELD_CUTOFF = 0.4
"""``whiten_1f``'s default cut-off in cycles per pixel: Olshausen & Field's ``0.4 N`` cycles
per picture (recorded in prepared patch datasets, whose held-out patches must match it)."""
EXIF_ORIENTATION = 0x0112
"""The EXIF tag that says how a stored image is turned (1: upright)."""


# --------------------------------------------------------------------------- validation


FLAT = 1e-12
"""An image whose filtered content is below this share of its largest magnitude is flat (what
is left is the filters' rounding): ``whiten_1f`` refuses it and ``local_contrast_normalize``
returns zeros, whatever the image's scale."""


@fill_doc
def check_image(image, name: str = "image") -> np.ndarray:
    """A finite real ``(H, W)`` or ``(H, W, C)`` array, returned as float64.

    Parameters
    ----------
    image : array_like of shape (H, W) or (H, W, C)
        The image to check (numeric or bool, real, non-empty, finite, at most 4 channels:
        a 3-D array with more is refused, as channels-first or as a stack of images).
    {error_name}

    Returns
    -------
    ndarray of shape (H, W) or (H, W, C)
        The image as float64.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C), got shape {arr.shape}")
    if min(arr.shape) == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[2] > 4:
        if arr.shape[0] <= 4:
            raise ValueError(
                f"{name} of shape {arr.shape} looks channels-first (C, H, W); images here are "
                f"(H, W, C): pass np.moveaxis({name}, 0, -1)"
            )
        raise ValueError(
            f"{name} of shape {arr.shape} has {arr.shape[2]} channels; images here have 1 to "
            f"4 (H, W, C): a stack of {arr.shape[0]} grey images goes in as a list"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------- loading


def _to_float(img: np.ndarray, grey: bool, source: str) -> np.ndarray:
    from skimage.color import gray2rgb, rgb2gray
    from skimage.util import img_as_float64

    if img.ndim == 3 and img.shape[2] in (2, 4):  # drop alpha (grey + alpha, RGBA)
        img = img[..., :-1]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"{source}: expected a grey, RGB or RGBA image, got shape {img.shape}")
    if img.dtype.kind == "i":
        raise ValueError(f"{source}: a signed integer image ({img.dtype}) has no fixed range "
                         "to map to [0, 1]; save it unsigned, or as floats in [0, 1]")
    if img.dtype.kind == "f" and not (img.min() >= 0.0 and img.max() <= 1.0):
        raise ValueError(f"{source}: a float image must hold values in [0, 1], this one holds "
                         f"[{float(img.min()):.4g}, {float(img.max()):.4g}]; rescale it")
    out = img_as_float64(img)
    if grey and out.ndim == 3:
        out = rgb2gray(out)
    elif not grey and out.ndim == 2:
        out = gray2rgb(out)
    return np.clip(out, 0.0, 1.0)


def _read_image(file: Path) -> np.ndarray:
    """The pixels of ``file`` as displayed: turned upright by its EXIF orientation (a phone
    photograph is stored sideways with a tag that says so), a CMYK JPEG converted to RGB by
    Pillow; a multi-page file is refused."""
    from PIL import Image, ImageOps
    from skimage import io

    with Image.open(file) as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:  # which page is the photograph is not for us to guess
            raise ValueError(f"it holds {frames} pages (a multi-page TIFF); save the one "
                             "photograph of each page as its own file")
        turned = im.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
        if im.mode == "CMYK" or turned:
            upright = ImageOps.exif_transpose(im)
            return np.asarray(upright.convert("RGB") if upright.mode == "CMYK" else upright)
    return np.asarray(io.imread(file))


def load_images(
    folder: str | os.PathLike | None = None,
    *,
    grey: bool = True,
    max_images: int | None = None,
    return_names: bool = False,
) -> list[np.ndarray] | tuple[list[np.ndarray], list[str]]:
    """Load natural photographs as float64 arrays in [0, 1].

    ``folder=None`` gives scikit-image's bundled photographs (offline): with ``grey=True`` all
    of :data:`SKIMAGE_PHOTOS` converted to grey ``(H, W)``; with ``grey=False`` only the colour
    ones, ``(H, W, 3)``. Otherwise every PNG/JPEG/TIFF file in ``folder`` (sorted by name) is
    read (hidden ones, whose names start with a dot, are skipped; a multi-page one is
    refused), turned upright by its EXIF orientation; with ``grey=False`` grey files are
    repeated over three channels and alpha dropped. A CMYK file is converted to RGB; a
    signed-integer file, or a float one with values outside [0, 1], is refused (its range is
    unknown).

    Parameters
    ----------
    folder : str or os.PathLike or None
        Folder of PNG/JPEG/TIFF files, or ``None`` for scikit-image's bundled photographs.
    grey : bool
        Return grey ``(H, W)`` images; ``False`` gives colour ``(H, W, 3)``.
    max_images : int or None
        Keep at most this many images (the first by name); ``None`` keeps all.
    return_names : bool
        Also return where each image came from (for messages about one of them).

    Returns
    -------
    images : list of ndarray of shape (H, W) or (H, W, 3)
        float64 images in [0, 1] (sizes may differ).
    names : list of str
        With ``return_names``: the file names (``skimage.data.<name>`` for the bundled ones).
    """
    for flag, value in (("grey", grey), ("return_names", return_names)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {type(value).__name__}")
    if max_images is not None:
        max_images = check_int(max_images, "max_images", low=1)

    if folder is None:
        import skimage.data

        labels = [f"skimage.data.{n}" for n in
                  (SKIMAGE_PHOTOS if grey else SKIMAGE_COLOUR_PHOTOS)[:max_images]]
        images = [_to_float(getattr(skimage.data, label.rsplit(".", 1)[1])(), grey, label)
                  for label in labels]
        return (images, labels) if return_names else images

    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"folder must be a path or None, got {type(folder).__name__}")
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"folder {str(path)!r} is not a directory")
    # hidden files (macOS's "._name.png" resource forks, editors' backups) are not images
    files = sorted(
        p for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(
            f"folder {str(path)!r} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    images = []
    for file in files[:max_images]:
        try:
            img = _read_image(file)
        except Exception as exc:  # noqa: BLE001 - every reader failure means the same thing
            raise ValueError(
                f"folder {str(path)!r}: cannot read image {file.name!r}: {exc}"
            ) from exc
        images.append(_to_float(np.asarray(img), grey, f"folder {str(path)!r}: {file.name!r}"))
    return (images, [f.name for f in files[:max_images]]) if return_names else images


def each_image(fn: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray],
               names: Sequence[str] | None = None) -> list[np.ndarray]:
    """``fn`` applied to every image, its ``ValueError`` naming the image that raised it.

    Parameters
    ----------
    fn : callable
        From one image to an array (e.g. :func:`whiten_1f`).
    images : sequence of ndarray of shape (H, W) or (H, W, C)
        The images.
    names : sequence of str or None
        Where each image came from (e.g. the ``names`` of :func:`load_images`); ``None``:
        ``images[i]``.

    Returns
    -------
    list of ndarray
        ``fn`` of each image, in order.
    """
    names = [f"images[{i}]" for i in range(len(images))] if names is None else list(names)
    out = []
    for image, name in zip(images, names, strict=True):
        try:
            out.append(fn(image))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    return out


# --------------------------------------------------------------------------- whitening


def whiten_1f(image: np.ndarray, f0_ratio: float = OLSHAUSEN_FIELD_CUTOFF, *,
              pad: bool = True) -> np.ndarray:
    """Olshausen & Field's zero-phase whitening filter, applied in the Fourier domain.

    ``R(f) = f · exp(−(f / f0)^4)`` with ``f`` the radial spatial frequency in cycles per
    pixel (Nyquist is 0.5) and ``f0 = f0_ratio`` cycles per pixel, i.e. ``f0_ratio · N`` cycles
    per picture for an ``N``-pixel side: their ``f0 = 0.4 N``, 200 cycles/picture at 512
    pixels (Olshausen & Field, Vision Research 1997, and their sparsenet code). The ramp
    flattens the ~1/f amplitude spectrum of natural images; the exponential cuts
    the noisy corners near Nyquist. ``image`` is ``(H, W)`` or ``(H, W, C)`` (each channel
    filtered alike). ``pad=True`` mirrors the image to twice its size first so the periodic
    FFT sees no edge discontinuity.

    Parameters
    ----------
    image : array_like of shape (H, W) or (H, W, C)
        The image, at least 2x2 pixels.
    f0_ratio : float
        Cut-off frequency ``f0`` in cycles per pixel, the fraction of the side length in
        cycles per picture (> 0; 0.4 is Olshausen & Field's, 0.8 × Nyquist).
    pad : bool
        Mirror-pad to ``(2H, 2W)`` before filtering.

    Returns
    -------
    ndarray of shape (H, W) or (H, W, C)
        float64, each channel with zero mean and the whole image with unit variance.
    """
    img = check_image(image)
    f0_ratio = check_scalar(f0_ratio, "f0_ratio", low=0.0, low_inclusive=False)
    if not isinstance(pad, bool):
        raise TypeError(f"pad must be a bool, got {type(pad).__name__}")
    h, w = img.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got shape {img.shape}")

    chans = img[..., None] if img.ndim == 2 else img
    chans = chans - chans.mean(axis=(0, 1))
    # the filter is linear and the result normalised: at unit peak, images of 1e160 or 1e-160
    # keep their variance finite and normal
    peak = float(np.abs(chans).max())
    if peak == 0:
        raise ValueError("image is constant; cannot whiten")
    chans = chans / peak
    if pad:
        chans = np.pad(chans, ((0, h), (0, w), (0, 0)), mode="symmetric")
    ph, pw = chans.shape[:2]
    fy = np.fft.fftfreq(ph)[:, None]  # cycles per pixel; Nyquist is 0.5
    fx = np.fft.rfftfreq(pw)[None, :]
    f = np.hypot(fy, fx)
    filt = f * np.exp(-((f / f0_ratio) ** 4))
    spectrum = np.fft.rfft2(chans, axes=(0, 1)) * filt[..., None]
    out = np.fft.irfft2(spectrum, s=(ph, pw), axes=(0, 1))[:h, :w]

    out = out - out.mean(axis=(0, 1))
    std = out.std()
    if std <= FLAT * np.abs(img).max() / peak:
        raise ValueError("image is constant (or has no content below the cut-off); cannot whiten")
    out /= std
    return out[..., 0] if img.ndim == 2 else out


def zca_whiten(
    patches: np.ndarray, eps: float = 1e-2
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """ZCA-whiten rows of ``patches`` ``(n, d)``.

    With ``μ`` the mean row and ``C = U Λ Uᵀ`` the covariance, returns
    ``(X − μ) M`` where ``M = U (Λ + eps)^(−1/2) Uᵀ`` (symmetric), together with ``(μ, M)`` so
    new data can be whitened the same way: ``(X_new − μ) @ M``.

    Parameters
    ----------
    patches : array_like of shape (n, d)
        Real, finite rows, ``n >= 2``.
    eps : float
        Regulariser added to the eigenvalues (> 0, in the squared units of the data); damps
        the noisy low-variance directions.

    Returns
    -------
    whitened : ndarray of shape (n, d)
        ``(X − μ) M``, float64.
    (mean, matrix) : tuple of ndarray of shape (d,) and (d, d)
        The mean row ``μ`` and the symmetric whitening matrix ``M``.
    """
    x = np.asarray(patches)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise TypeError(f"patches must be a real numeric array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"patches must have shape (n, d), got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"patches needs at least 2 rows and 1 column, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("patches contains NaN or infinite values")
    eps = check_scalar(eps, "eps", low=0.0, low_inclusive=False)

    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / x.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, 0.0, None)
    matrix = (evecs / np.sqrt(evals + eps)) @ evecs.T
    return xc @ matrix, (mean, matrix)


def local_contrast_normalize(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Subtractive then divisive local normalisation with a Gaussian window of width ``sigma``.

    ``v = x − G_σ * x`` (per channel), ``s = sqrt(G_σ * v²)`` (averaged over channels), and the
    output is ``v / max(s, mean(s))`` so flat regions are not amplified.

    Parameters
    ----------
    image : array_like of shape (H, W) or (H, W, C)
        The image (channels are filtered separately, their local variances averaged).
    sigma : float
        Standard deviation of the Gaussian window in pixels (> 0).

    Returns
    -------
    ndarray of shape (H, W) or (H, W, C)
        float64, same shape as ``image`` (zeros for a flat image).
    """
    img = check_image(image)
    sigma = check_scalar(sigma, "sigma", low=0.0, low_inclusive=False)
    spatial = (sigma, sigma) if img.ndim == 2 else (sigma, sigma, 0.0)
    v = img - ndimage.gaussian_filter(img, spatial, mode="reflect")
    local_var = ndimage.gaussian_filter(v * v, spatial, mode="reflect")
    if img.ndim == 3:
        local_var = local_var.mean(axis=2, keepdims=True)
    s = np.sqrt(np.clip(local_var, 0.0, None))
    if float(s.mean()) <= FLAT * np.abs(img).max():  # the filter's rounding, not content
        return np.zeros_like(img)
    return v / np.maximum(s, float(s.mean()))
