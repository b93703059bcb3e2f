"""DatasetInfo, shared transforms, augmentation presets, finalize."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.data import BatchAugmentation, DatasetInfo, RandomIntensityScale, augmentation, transforms
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


@pytest.mark.parametrize(
    "shape, size",
    [
        ((256, 256, 1), (224, 224)),  # after DCT scaling: matrix products
        ((28, 28, 1), (224, 224)),  # upscaling
        ((2, 50, 60, 3), (50, 31)),  # a batch
        ((300, 400, 3), (57, 31)),  # over 2x smaller: TensorFlow's kernel
        ((7, 9, 1), (7, 9)),
    ],
)
def test_resize_is_tensorflows_antialiased_bilinear(shape, size):
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, shape), tf.float32)
    expected = tf.image.resize(images, size, antialias=True).numpy()
    np.testing.assert_allclose(transforms.resize(images, size).numpy(), expected, atol=0.01)


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
    aug = augmentation("xray", seed=4)
    config = aug.get_config()
    expected = {
        "horizontal_flip": True,
        "vertical_flip": True,
        "rotation": pytest.approx(5 / 360),
        "shear": pytest.approx(0.000349, abs=1e-6),
        "zoom": 0.1,
        "fill_mode": "nearest",
        "brightness": (0.7, 1.3),
        "contrast": 0.0,
        "seed": 4,
    }
    assert {key: config[key] for key in expected} == expected
    clone = keras.layers.deserialize(keras.layers.serialize(aug))
    assert isinstance(clone, BatchAugmentation) and clone.get_config() == config


def _draws(batch, **columns):
    """Uniform draws of `BatchAugmentation` with chosen columns (0.5 = no change)."""
    order = ["flip_x", "flip_y", "angle", "shear", "zoom_x", "zoom_y", "scale", "contrast"]
    values = np.full((batch, 8), 0.5, np.float32)
    for name, column in columns.items():
        values[:, order.index(name)] = column
    return tf.constant(values)


def _warp(layer, images, draws):
    images = tf.constant(images, tf.float32)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=layer._warps(draws, tf.shape(images)), output_shape=images.shape[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST",
    ).numpy()


def test_batch_augmentation_warp_geometry():
    image = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    flips = BatchAugmentation(horizontal_flip=True, vertical_flip=True)
    np.testing.assert_array_equal(_warp(flips, image, _draws(1, flip_x=0.0)), image[:, :, ::-1])
    np.testing.assert_array_equal(_warp(flips, image, _draws(1, flip_y=0.0)), image[:, ::-1])
    np.testing.assert_array_equal(_warp(flips, image, _draws(1, flip_x=0.9, flip_y=0.9)), image)
    quarter = BatchAugmentation(rotation=0.25)  # draw 1.0: +90 degrees, counterclockwise as in Keras
    turned = _warp(quarter, image, _draws(1, angle=1.0))
    np.testing.assert_allclose(turned[0, ..., 0], np.rot90(image[0, ..., 0]), atol=1e-3)
    zoom = BatchAugmentation(zoom=0.5)  # draw 0.0: the center at 2x, along x only here
    zoomed = _warp(zoom, image, _draws(1, zoom_x=0.0))
    source_x = 2.5 + 0.5 * (np.arange(6) - 2.5)
    np.testing.assert_allclose(zoomed[0, 0, :, 0], np.interp(source_x, np.arange(6), image[0, 0, :, 0]))


def test_batch_augmentation_is_per_image_and_stateless():
    images = tf.fill((16, 4, 4, 1), 100.0)
    bright = BatchAugmentation(brightness=(0.5, 0.8))
    out = bright.augment(images, tf.constant([1, 2])).numpy().reshape(16, -1)
    assert np.all(out.min(axis=1) == out.max(axis=1))
    assert np.all((out >= 50.0) & (out <= 80.0)) and len(np.unique(out[:, 0])) == 16
    again = bright.augment(images, tf.constant([1, 2])).numpy().reshape(16, -1)
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, bright.augment(images, tf.constant([1, 3])).numpy().reshape(16, -1))
    ramp = tf.constant(np.tile(np.array([0.0, 100.0, 200.0, 255.0]), (16, 4, 1))[..., None], tf.float32)
    contrast = BatchAugmentation(contrast=0.5).augment(ramp, tf.constant([0, 0])).numpy()
    mean = ramp.numpy().mean(axis=(1, 2), keepdims=True)
    factors = ((contrast - mean) / (ramp.numpy() - mean))[:, 0, 1, 0]  # the 100 column, unclipped
    assert np.all((factors >= 0.5) & (factors <= 1.5)) and len(np.unique(factors.round(5))) == 16
    layer = BatchAugmentation(horizontal_flip=True, seed=5)
    np.testing.assert_array_equal(layer(images, training=False).numpy(), images.numpy())
    with pytest.raises(ValueError, match="`fill_mode` must be one of"):
        BatchAugmentation(fill_mode="edge")
    with pytest.raises(ValueError, match=r"`zoom` must be in \[0, 1\)"):
        BatchAugmentation(zoom=1.5)


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
    train = transforms.finalize(ds, training=True, **kwargs)
    assert train.element_spec[0].shape.as_list() == [None, 8, 8, 1]
    first, second = _epoch(train), _epoch(train)
    again = transforms.finalize(ds, training=True, **kwargs)
    np.testing.assert_array_equal(_epoch(again), first)
    np.testing.assert_array_equal(_epoch(again), second)
    assert not np.array_equal(first, images.astype(np.float32))
    assert not np.array_equal(first, second)  # new views every epoch
    other_seed = transforms.finalize(ds, training=True, **{**kwargs, "seed": 3})
    assert not np.array_equal(_epoch(other_seed), first)


def test_preset_augmentation_is_per_image_and_before_the_channel_repeat():
    images = np.full((8, 6, 6, 1), 100, np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(8, np.int32)))
    bright = BatchAugmentation(brightness=(0.5, 1.5))
    train = transforms.finalize(
        ds, batch_size=8, training=True, shuffle=False, augment=bright, channels=3
    )
    [(batch, _)] = list(train)
    assert batch.shape == (8, 6, 6, 3)
    per_image = batch.numpy().reshape(8, -1)
    assert np.all(per_image.min(axis=1) == per_image.max(axis=1))
    assert len(np.unique(per_image[:, 0])) == 8


def _cache_output_types(ds):
    graph = tf.compat.v1.GraphDef.FromString(tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor).numpy())
    caches = [node for node in graph.node if node.op.startswith("CacheDataset")]
    return [[tf.dtypes.as_dtype(t) for t in node.attr["output_types"].list.type] for node in caches]


@pytest.mark.parametrize("cache", [True, "file"])
def test_cache_holds_uint8(tmp_path, cache):
    cache = str(tmp_path / "cache") if cache == "file" else cache
    images = np.zeros((4, 5, 5, 1), np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(4, np.int32)))
    out = transforms.finalize(ds, batch_size=2, training=True, cache=cache, augment="xray", channels=3)
    assert _cache_output_types(out) == [[tf.uint8, tf.int32]]
    assert out.element_spec[0].dtype == tf.float32


def test_file_cache_prints_its_size(tmp_path, capsys):
    prefix = str(tmp_path / "cache")
    images = np.zeros((10, 8, 6, 3), np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(10, np.int32)))
    kwargs = dict(batch_size=4, cache=prefix, training=True)
    _epoch(transforms.finalize(ds, **kwargs))
    assert capsys.readouterr().out == (
        f"Filling the image cache {prefix} in the first epoch: 10 uint8 images of 8x6x3, 0.0 MB on disk\n"
    )
    transforms.finalize(ds, **kwargs)
    on_disk = sum(os.path.getsize(p) for p in glob.glob(prefix + ".*") if not p.endswith(".owner"))
    assert 10 * 8 * 6 * 3 < on_disk < 10 * 8 * 6 * 3 + 4096
    assert capsys.readouterr().out == (
        f"Reading the image cache {prefix}: 10 images, {on_disk / 1e6:,.1f} MB on disk\n"
    )
