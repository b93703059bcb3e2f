"""DatasetInfo, shared transforms, augmentation presets, finalize."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.data import DatasetInfo, RandomIntensityScale, augmentation
from kdkeras.data import transforms
from kdkeras.data.info import multi_hot_stats, sparse_class_stats


def _info(**changes):
    fields = dict(
        name="pneumoniamnist",
        task="binary-class",
        class_names=["normal", "pneumonia"],
        n_channels=1,
        image_size=[28, 28],
        split_sizes={"train": 4, "val": 1, "test": 1},
        class_counts=[3, 1],
        class_weights={0: 2 / 3, 1: 2.0},
        source="x.npz",
    )
    return DatasetInfo(**{**fields, **changes})


def test_dataset_info_json_round_trip():
    info = _info(skipped=["a.jpeg"])
    assert info.num_classes == 2 and info.image_size == (28, 28)
    data = info.to_dict()
    assert data["num_classes"] == 2 and data["image_size"] == [28, 28]
    assert DatasetInfo.from_dict(json.loads(json.dumps(data))) == info
    with pytest.raises(ValueError, match="task must be one of"):
        _info(task="regression")
    with pytest.raises(ValueError, match="label_mode must be one of"):
        _info(label_mode="one-hot")


def test_class_statistics():
    counts, weights = sparse_class_stats([0, 0, 0, 1, 3], 4)
    assert counts == [3, 1, 0, 1]
    assert weights == pytest.approx({0: 5 / 12, 1: 5 / 4, 2: 0.0, 3: 5 / 4})
    counts, pos_weights = multi_hot_stats([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert counts == [3, 2, 0]
    assert pos_weights == pytest.approx([1 / 3, 1.0, 1.0])


def test_resize_and_channels():
    constant = tf.fill((30, 40, 1), 100.0)
    np.testing.assert_allclose(transforms.resize(constant, (7, 9)).numpy(), 100.0, atol=1e-4)
    assert transforms.resize(tf.zeros((2, 30, 40, 3)), 16).shape == (2, 16, 16, 3)
    rgb = tf.constant([[[255.0, 0.0, 0.0], [0.0, 255.0, 0.0]]])
    np.testing.assert_allclose(
        transforms.to_channels(rgb, 1).numpy()[..., 0], [[76.2195, 149.685]], rtol=1e-5
    )
    gray = tf.constant([[[10.0], [20.0]]])
    np.testing.assert_array_equal(transforms.to_channels(gray, 3).numpy()[0, 1], [20, 20, 20])
    rgba = tf.constant([[[1.0, 2.0, 3.0, 4.0]]])
    np.testing.assert_array_equal(transforms.to_channels(rgba, 3).numpy(), [[[1, 2, 3]]])
    gray_alpha = tf.constant([[[9.0, 255.0]]])
    np.testing.assert_array_equal(transforms.to_channels(gray_alpha, 1).numpy(), [[[9]]])
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        transforms.to_channels(rgb, 2)
    np.testing.assert_array_equal(
        transforms.to_uint8(tf.constant([-5.0, 0.4, 254.6, 300.0])).numpy(), [0, 0, 255, 255]
    )
    assert transforms.image_size_tuple(32) == (32, 32)
    assert transforms.image_size_tuple((20, 30)) == (20, 30)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        transforms.image_size_tuple((0, 3))


def test_subset_indices():
    assert transforms.subset_indices(5, None).tolist() == [0, 1, 2, 3, 4]
    assert transforms.subset_indices(5, 9).tolist() == [0, 1, 2, 3, 4]
    picked = transforms.subset_indices(100, 10, seed=4)
    assert picked.tolist() == sorted(picked.tolist()) and len(set(picked.tolist())) == 10
    assert picked.tolist() == transforms.subset_indices(100, 10, seed=4).tolist()
    assert picked.tolist() != transforms.subset_indices(100, 10, seed=5).tolist()
    with pytest.raises(ValueError, match="limit must be a positive int"):
        transforms.subset_indices(5, 0)


@pytest.mark.parametrize("preset", ["light", "xray", "dermoscopy"])
def test_augmentation_presets_keep_shape_and_range(preset):
    keras.config.set_dtype_policy("mixed_float16")
    aug = augmentation(preset, seed=3)
    keras.config.set_dtype_policy("float32")
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)), tf.float32)
    out = aug(images, training=True)
    assert out.shape == (4, 32, 32, 3) and out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    assert not np.allclose(out.numpy(), images.numpy())
    np.testing.assert_array_equal(aug(images, training=False).numpy(), images.numpy())


def test_xray_preset_reproduces_seed_002():
    layers = augmentation("xray").layers
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip", "RandomRotation", "RandomShear", "RandomZoom", "RandomIntensityScale"
    ]
    flip, rotation, shear, zoom, scale = layers
    assert flip.mode == "horizontal_and_vertical"
    assert rotation.factor == pytest.approx((-5 / 360, 5 / 360))
    assert shear.x_factor == pytest.approx((-0.000349, 0.000349), abs=1e-6)
    zoom_range = (zoom.height_lower, zoom.height_upper, zoom.width_lower, zoom.width_upper)
    assert zoom_range == pytest.approx((-0.1, 0.1, -0.1, 0.1))
    assert scale.factor == (0.7, 1.3)
    assert {rotation.fill_mode, shear.fill_mode, zoom.fill_mode} == {"nearest"}


def test_augmentation_arguments():
    custom = augmentation([keras.layers.RandomFlip("horizontal")])
    assert len(custom.layers) == 1
    with pytest.raises(ValueError, match=r"Unknown augmentation preset 'heavy'; choose one of"):
        augmentation("heavy")
    with pytest.raises(TypeError, match="list of keras.layers.Layer"):
        augmentation([lambda x: x])


def test_random_intensity_scale():
    layer = RandomIntensityScale((0.5, 0.8), seed=1)
    images = tf.fill((6, 4, 4, 1), 100.0)
    out = layer(images, training=True).numpy()
    per_image = out.reshape(6, -1)
    assert np.all(per_image.min(axis=1) == per_image.max(axis=1))
    assert np.all((per_image >= 50.0) & (per_image <= 80.0))
    assert len(np.unique(per_image[:, 0])) == 6
    saturated = RandomIntensityScale((2.0, 3.0))(tf.fill((1, 2, 2, 1), 200.0))
    assert float(tf.reduce_min(saturated)) == 255.0
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.get_config()["factor"] == (0.5, 0.8) and clone.seed == 1
    with pytest.raises(ValueError, match="0 <= low <= high"):
        RandomIntensityScale((1.2, 0.8))


def _epoch(ds):
    return np.concatenate([x.numpy() for x, _ in ds])


@pytest.mark.parametrize("cache", [True, False, "file"])
def test_finalize_order_shuffle_and_cache(tmp_path, cache):
    cache = str(tmp_path / "cache") if cache == "file" else cache
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    labels = np.arange(20, dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    kwargs = dict(batch_size=6, seed=7, cache=cache, channels=3)
    val = transforms.finalize(ds, training=False, **kwargs)
    first = next(iter(val))
    assert first[0].shape == (6, 2, 2, 3) and first[0].dtype == tf.float32
    np.testing.assert_array_equal(_epoch(val)[:, 0, 0, 0], np.arange(20))
    train = transforms.finalize(ds, training=True, **kwargs)
    epoch1, epoch2 = _epoch(train)[:, 0, 0, 0], _epoch(train)[:, 0, 0, 0]
    assert sorted(epoch1.tolist()) == list(range(20)) and sorted(epoch2.tolist()) == list(range(20))
    assert epoch1.tolist() != epoch2.tolist()
    again = transforms.finalize(ds, training=True, **kwargs)
    np.testing.assert_array_equal(_epoch(again)[:, 0, 0, 0], epoch1)
    fixed = transforms.finalize(ds, training=True, shuffle=False, **kwargs)
    np.testing.assert_array_equal(_epoch(fixed)[:, 0, 0, 0], np.arange(20))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        transforms.finalize(ds, batch_size=0)


def test_finalize_augments_train_only_and_reproducibly():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(64, np.int32)))
    kwargs = dict(batch_size=4, seed=2, augment="xray", shuffle=False)
    val = transforms.finalize(ds, training=False, **kwargs)
    np.testing.assert_array_equal(_epoch(val), images.astype(np.float32))
    first = _epoch(transforms.finalize(ds, training=True, **kwargs))
    second = _epoch(transforms.finalize(ds, training=True, **kwargs))
    assert not np.array_equal(first, images.astype(np.float32))
    np.testing.assert_array_equal(first, second)
