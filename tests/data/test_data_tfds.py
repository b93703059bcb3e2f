"""TFDS loading, offline: a tiny image-classification builder prepared in a temporary folder."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kdkeras.data import load_tfds
from kdkeras.data.tfds import default_splits


class KdkerasTinyScans(tfds.core.GeneratorBasedBuilder):
    """Registered as `kdkeras_tiny_scans`: 8x8 gray images, 3 classes, train and test splits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=["cyst", "drusen", "normal"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20, 0), "test": self._generate_examples(6, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            image = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
            yield i, {"image": image, "label": [0, 0, 1, 2][i % 4]}


NAME = "kdkeras_tiny_scans"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfds")
    tfds.builder(NAME, data_dir=str(folder)).download_and_prepare()
    return str(folder)


def _labels(split, data_dir):
    ds = tfds.builder(NAME, data_dir=data_dir).as_dataset(split=split, shuffle_files=False)
    return np.array([int(e["label"]) for e in ds])


def test_default_splits():
    assert default_splits(["train", "validation", "test"]) == ("train", "validation", "test")
    assert default_splits(["train", "test"]) == ("train[:90%]", "train[90%:]", "test")
    assert default_splits(["train"]) == ("train[:80%]", "train[80%:90%]", "train[90%:]")
    with pytest.raises(ValueError, match=r"no 'train' split \(it has \['test'\]\)"):
        default_splits(["test"])


def test_load_prepared_dataset(data_dir):
    train, val, test, info = load_tfds(NAME, data_dir=data_dir, download=False, batch_size=4)
    assert info.class_names == ["cyst", "drusen", "normal"]
    assert (info.task, info.n_channels, info.image_size) == ("multi-class", 1, (8, 8))
    assert info.split_sizes == {"train": 18, "val": 2, "test": 6}
    train_labels = _labels("train[:90%]", data_dir)
    assert info.class_counts == np.bincount(train_labels, minlength=3).tolist()
    images, labels = next(iter(train))
    assert images.shape == (4, 8, 8, 1) and images.dtype == "float32" and labels.dtype == "int32"
    y_test = np.concatenate([y.numpy() for _, y in test])
    np.testing.assert_array_equal(y_test, _labels("test", data_dir))
    raw = next(iter(tfds.builder(NAME, data_dir=data_dir).as_dataset(split="test")))
    np.testing.assert_array_equal(next(iter(test))[0][0].numpy(), raw["image"].numpy())


def test_conversions_splits_and_limit(data_dir):
    _, val, _, info = load_tfds(
        NAME,
        split=("train[:50%]", "train[50%:]", "test"),
        data_dir=data_dir,
        image_size=16,
        channels=3,
        limit=5,
        batch_size=8,
    )
    assert info.split_sizes == {"train": 5, "val": 5, "test": 5}
    images, labels = next(iter(val))
    assert images.shape == (5, 16, 16, 3) and info.n_channels == 3
    keep = np.sort(np.random.default_rng(0).permutation(10)[:5])
    np.testing.assert_array_equal(labels.numpy(), _labels("train[50%:]", data_dir)[keep])
    assert sum(info.class_counts) == 5


def test_errors(data_dir, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=rf"{NAME}' is not prepared in .* download=False"):
        load_tfds(NAME, data_dir=str(tmp_path), download=False)

    def offline(self, *args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(KdkerasTinyScans, "download_and_prepare", offline)
    expected = rf"Could not download and prepare .*{NAME}.*no route to host"
    with pytest.raises(OSError, match=expected):
        load_tfds(NAME, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"has no feature 'img' \(it has \['image', 'label'\]\)"):
        load_tfds(NAME, data_dir=data_dir, image_key="img")
    with pytest.raises(ValueError, match="split must name three splits"):
        load_tfds(NAME, data_dir=data_dir, split=("train", "test"))
