"""MedMNIST loading: real PneumoniaMNIST, every 2D flag, offline download, bad npz files."""

import hashlib
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from kdkeras.data import bundled_npz, load_medmnist
from kdkeras.data import medmnist as mm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_medmnist_npz(path, flag, size=28, counts=(6, 3, 4), seed=0):
    """Writes an npz in MedMNIST's exact format: keys, uint8 dtypes, shapes of INFO."""
    info = mm.medmnist_info()[flag]
    rng = np.random.default_rng(seed)
    n_labels = len(info["label"])
    multi_label = info["task"].startswith("multi-label")
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        shape = (n, size, size) if info["n_channels"] == 1 else (n, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if multi_label:
            labels = rng.integers(0, 2, (n, n_labels))
        else:
            labels = (np.arange(n) % n_labels)[:, None]
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return str(path)


def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def _batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_bundled_pneumoniamnist_real_numbers(pneumonia_npz):
    assert bundled_npz() == os.path.abspath(pneumonia_npz)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val, test, info = load_medmnist("pneumoniamnist", path=pneumonia_npz)
    assert info.split_sizes == {"train": 4708, "val": 524, "test": 624}
    assert info.class_names == ["normal", "pneumonia"]
    assert (info.task, info.label_mode, info.n_channels, info.image_size) == (
        "binary-class", "sparse", 1, (28, 28)
    )
    assert info.class_counts == [1214, 3494]
    assert info.class_weights == pytest.approx({0: 4708 / (2 * 1214), 1: 4708 / (2 * 3494)})
    images, labels = next(iter(train))
    assert images.shape == (64, 28, 28, 1) and images.dtype == "float32"
    assert labels.shape == (64,) and labels.dtype == "int32"
    x_val, y_val = _batches(val)
    assert x_val.shape == (524, 28, 28, 1) and int(y_val.sum()) == 389
    raw = np.load(pneumonia_npz, allow_pickle=False)
    x_test, y_test = _batches(test)
    np.testing.assert_array_equal(x_test[..., 0], raw["test_images"].astype(np.float32))
    np.testing.assert_array_equal(y_test, raw["test_labels"][:, 0])


def test_train_shuffle_is_seeded_and_changes_each_epoch(pneumonia_npz):
    def epochs(seed):
        train, *_ = load_medmnist("pneumoniamnist", path=pneumonia_npz, limit=200, seed=seed)
        return _batches(train)[0], _batches(train)[0]

    first, second = epochs(0)
    again, _ = epochs(0)
    other, _ = epochs(1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(np.sort(first.ravel()), np.sort(second.ravel()))


def test_limit_takes_a_seeded_sample_in_file_order(pneumonia_npz):
    _, val, _, info = load_medmnist("pneumoniamnist", path=pneumonia_npz, limit=50, seed=3)
    assert info.split_sizes == {"train": 50, "val": 50, "test": 50}
    keep = np.sort(np.random.default_rng(3).permutation(524)[:50])
    raw = np.load(pneumonia_npz)["val_images"]
    np.testing.assert_array_equal(_batches(val)[0][..., 0], raw[keep])
    assert sum(info.class_counts) == 50


def test_resize_and_channels_of_bundled(pneumonia_npz):
    train, val, _, info = load_medmnist(
        "pneumoniamnist", path=pneumonia_npz, image_size=(32, 40), channels=3, limit=8, batch_size=4
    )
    images, _ = next(iter(val))
    assert images.shape == (4, 32, 40, 3) and info.n_channels == 3 and info.image_size == (32, 40)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 255.0


@pytest.mark.parametrize("flag", sorted(f for f in mm.medmnist_info() if not f.endswith("3d")))
def test_every_2d_flag_loads(tmp_path, flag):
    info_entry = mm.medmnist_info()[flag]
    write_medmnist_npz(tmp_path / f"{flag}.npz", flag)
    with pytest.warns(UserWarning, match="MD5"):
        train, val, test, info = load_medmnist(flag, root=tmp_path, download=False, batch_size=4)
    images, labels = next(iter(train))
    assert images.shape == (4, 28, 28, info_entry["n_channels"])
    names = info_entry["label"]
    assert info.class_names == [names[str(i)] for i in range(len(names))]
    assert info.split_sizes == {"train": 6, "val": 3, "test": 4}
    if flag == "chestmnist":
        assert (info.task, info.label_mode) == ("multi-label", "multi-hot")
        assert labels.shape == (4, 14) and labels.dtype == "float32"
    else:
        expected_task = {"retinamnist": "ordinal-regression"}.get(flag, info_entry["task"])
        assert (info.task, info.label_mode) == (expected_task, "sparse")
        assert labels.shape == (4,) and labels.dtype == "int32"


def test_chestmnist_multi_hot_weights(tmp_path):
    path = write_medmnist_npz(tmp_path / "chestmnist.npz", "chestmnist", counts=(20, 2, 2))
    train_labels = np.load(path)["train_labels"]
    with pytest.warns(UserWarning, match="MD5"):
        train, _, _, info = load_medmnist("chestmnist", path=path, shuffle=False, batch_size=20)
    positives = train_labels.sum(axis=0)
    assert info.class_counts == positives.tolist()
    assert info.class_weights is None
    assert info.pos_weights == pytest.approx([(20 - p) / p if p else 1.0 for p in positives])
    np.testing.assert_array_equal(next(iter(train))[1], train_labels.astype(np.float32))


def test_size_64_file_name_and_rgb_to_gray(tmp_path):
    assert mm.npz_filename("dermamnist", 64) == "dermamnist_64.npz"
    path = write_medmnist_npz(tmp_path / "dermamnist_64.npz", "dermamnist", size=64)
    raw = np.load(path)["val_images"].astype(np.float64)
    with pytest.warns(UserWarning, match="MD5"):
        _, val, _, info = load_medmnist(
            "dermamnist", size=64, root=tmp_path, channels=1, batch_size=3, download=False
        )
    gray = next(iter(val))[0].numpy()[..., 0]
    np.testing.assert_array_equal(gray, np.round(raw @ np.array([0.2989, 0.5870, 0.1140])))
    assert info.name == "dermamnist_64" and info.n_channels == 1


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(mm.ROOT_ENV, raising=False)
    assert mm.default_root() == str(tmp_path / "home" / ".medmnist")
    monkeypatch.setenv(mm.ROOT_ENV, str(tmp_path / "env"))
    assert mm.default_root() == str(tmp_path / "env")
    assert mm.default_root(tmp_path / "arg") == str(tmp_path / "arg")
    os.makedirs(tmp_path / "env")
    write_medmnist_npz(tmp_path / "env" / "breastmnist.npz", "breastmnist")
    with pytest.warns(UserWarning, match="MD5"):
        *_, info = load_medmnist("breastmnist", download=False)
    assert info.source == str(tmp_path / "env" / "breastmnist.npz")


def test_download_from_file_url_verifies_md5(tmp_path, monkeypatch):
    source = write_medmnist_npz(tmp_path / "mirror.npz", "breastmnist")
    root = tmp_path / "root"
    url = "file://" + source
    expected = r"does not have the MD5 .* nothing was saved at .*breastmnist\.npz"
    with pytest.raises(ValueError, match=expected):
        load_medmnist("breastmnist", root=root, url=url)
    assert os.listdir(root) == []
    monkeypatch.setitem(mm.medmnist_info()["breastmnist"], "MD5", _md5(source))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        *_, info = load_medmnist("breastmnist", root=root, url=url)
    assert os.listdir(root) == ["breastmnist.npz"]
    assert _md5(root / "breastmnist.npz") == _md5(source)
    assert info.split_sizes == {"train": 6, "val": 3, "test": 4}


def test_no_network_error_names_url_and_destination(tmp_path):
    url = "http://127.0.0.1:9/breastmnist.npz"
    target = tmp_path / "breastmnist.npz"
    expected = rf"Could not download {re.escape(url)}.*place the file at {re.escape(str(target))}"
    with pytest.raises(OSError, match=expected):
        load_medmnist("breastmnist", root=tmp_path, url=url)
    assert os.listdir(tmp_path) == []
    official = mm.medmnist_info()["breastmnist"]["url"]
    with pytest.raises(OSError, match=rf"Could not download {re.escape(official)}"):
        load_medmnist("breastmnist", root=tmp_path)
    assert os.listdir(tmp_path) == []
    expected = rf"download=False\. Download {re.escape(official)}"
    with pytest.raises(FileNotFoundError, match=expected):
        load_medmnist("breastmnist", root=tmp_path, download=False)


def test_bad_npz_files_name_the_file_and_key(tmp_path):
    good = dict(np.load(write_medmnist_npz(tmp_path / "good.npz", "pneumoniamnist")))

    def write(name, **changes):
        arrays = {**good, **changes}
        np.savez(tmp_path / name, **{k: v for k, v in arrays.items() if v is not None})
        return str(tmp_path / name)

    cases = [
        (
            write("keys.npz", val_labels=None),
            r"keys\.npz lacks the MedMNIST key\(s\) \['val_labels'\]",
        ),
        (
            write("range.npz", test_labels=np.array([[0], [1], [2], [1]], np.uint8)),
            r"range\.npz: test_labels has values in \[0, 2\], outside \[0, 1\]",
        ),
        (
            write("dtype.npz", train_images=good["train_images"].astype(np.float32)),
            r"dtype\.npz: train_images is float32 \(6, 28, 28\), expected uint8",
        ),
        (
            write("count.npz", val_labels=good["val_labels"][:2]),
            r"count\.npz: val_labels is uint8 \(2, 1\), expected .* \(3, 1\)",
        ),
        (
            write("pickle.npz", train_labels=np.array([[0], [1]] * 3, dtype=object)),
            r"pickle\.npz: key train_labels cannot be read without pickle",
        ),
    ]
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated zip")
    cases.append((str(tmp_path / "junk.npz"), r"junk\.npz is not a readable npz file"))
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_medmnist("pneumoniamnist", path=path)
    expected = r"expected uint8 \(N, 64, 64\) for pneumoniamnist at size 64"
    with pytest.raises(ValueError, match=expected):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_medmnist("pneumoniamnist", size=64, path=tmp_path / "good.npz")


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown MedMNIST flag 'pneumonia'; choose one of"):
        load_medmnist("pneumonia")
    with pytest.raises(ValueError, match="organmnist3d holds 3D volumes"):
        load_medmnist("organmnist3d")
    with pytest.raises(ValueError, match=r"size must be one of \(28, 64, 128, 224\), got 32"):
        load_medmnist("pneumoniamnist", size=32)
    with pytest.raises(ValueError, match=r"Only \['pneumoniamnist'\] is bundled"):
        bundled_npz("dermamnist")
    with pytest.raises(FileNotFoundError, match=r"MedMNIST file .*nope\.npz does not exist"):
        load_medmnist("pneumoniamnist", path="nope.npz")
    with pytest.raises(ValueError, match="channels must be None, 1 or 3, got 2"):
        load_medmnist("pneumoniamnist", path=bundled_npz(), channels=2)


def test_missing_medmnist_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(mm.importlib.util, "find_spec", lambda name: None)
    mm.medmnist_info.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps medmnist"):
            mm.medmnist_info()
    finally:
        monkeypatch.undo()
        mm.medmnist_info.cache_clear()


@pytest.mark.slow
def test_loading_never_imports_torch(tmp_path):
    # A stub torch on the path makes any `import torch` (direct or via `import
    # medmnist`) succeed and show up in sys.modules, so this check can fail.
    stub = tmp_path / "stub" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    code = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('torch') is not None\n"
        "import kdkeras, kdkeras.data\n"
        "from kdkeras.data import load_medmnist, bundled_npz\n"
        "train, *_ = load_medmnist('pneumoniamnist', path=bundled_npz(), limit=8)\n"
        "next(iter(train))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'medmnist')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"), REPO, os.environ["PYTHONPATH"]])}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
