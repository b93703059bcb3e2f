"""Class-per-folder trees (ISIC benign / malignant) and the grouped, stratified split."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kdkeras.data import images, load_image_folder, transforms
from kdkeras.data.folders import grouped_split, image_folder_splits


def write_tree(root, counts, size=(12, 10), mode="RGB"):
    """`counts` maps `"split/class"` (or `"class"`) to a number of JPEGs."""
    rng = np.random.default_rng(0)
    for folder, n in counts.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for i in range(n):
            shape = size + ((3,) if mode == "RGB" else ())
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, folder, f"ISIC_{i:07d}.jpg"))
    return str(root)


def test_grouped_split_exact_assignment():
    labels = [0] * 10 + [1] * 10
    groups = list(range(20))
    parts = grouped_split(labels, groups, {"test": 0.2, "val": 0.1}, seed=0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    for split, indices in parts.items():
        assert np.bincount(np.asarray(labels)[indices]).tolist() == {
            "train": [7, 7], "val": [1, 1], "test": [2, 2]
        }[split]
    again = grouped_split(labels, groups, {"test": 0.2, "val": 0.1}, seed=0)
    other = grouped_split(labels, groups, {"test": 0.2, "val": 0.1}, seed=1)
    assert all(np.array_equal(parts[s], again[s]) for s in parts)
    assert not all(np.array_equal(parts[s], other[s]) for s in parts)


def test_grouped_split_keeps_groups_whole_and_one_group_in_train():
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    groups = ["a", "a", "b", "c", "c", "c", "d", "e"]
    for seed in range(20):
        parts = grouped_split(labels, groups, {"val": 0.4}, seed=seed)
        owner = {}
        for split, indices in parts.items():
            for i in indices:
                assert owner.setdefault(groups[i], split) == split
        assert {labels[i] for i in parts["train"]} == {0, 1}
    single = grouped_split([0, 0, 1], ["a", "a", "b"], {"val": 0.9})
    assert single["val"].tolist() == []
    with pytest.raises(ValueError, match="sum to less than 1"):
        grouped_split(labels, groups, {"val": 0.5, "test": 0.5})
    with pytest.raises(ValueError, match="8 labels but 2 groups"):
        grouped_split(labels, ["a", "b"], {"val": 0.1})


def test_flat_tree_is_split_stratified(tmp_path):
    root = write_tree(tmp_path / "isic", {"benign": 20, "malignant": 10})
    splits, classes = image_folder_splits(root, val_fraction=0.2, test_fraction=0.2)
    assert classes == ["benign", "malignant"]
    assert {s: np.bincount(y, minlength=2).tolist() for s, (_, y) in splits.items()} == {
        "train": [12, 6], "val": [4, 2], "test": [4, 2]
    }
    all_paths = [p for paths, _ in splits.values() for p in paths]
    assert len(set(all_paths)) == 30
    train, _, _, info = load_image_folder(root, val_fraction=0.2, test_fraction=0.2, batch_size=5)
    assert info.split_sizes == {"train": 18, "val": 6, "test": 6}
    assert (info.task, info.n_channels, info.image_size) == ("binary-class", 3, (12, 10))
    assert info.class_weights == pytest.approx({0: 18 / 24, 1: 18 / 12})
    assert next(iter(train))[0].shape == (5, 12, 10, 3)


def test_split_folders_are_used_and_missing_val_is_carved(tmp_path):
    root = write_tree(
        tmp_path / "isic",
        {"train/benign": 10, "train/malignant": 10, "test/benign": 3, "test/malignant": 2},
        mode="L",
    )
    splits, classes = image_folder_splits(root, val_fraction=0.2)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [16, 4, 5]
    assert all(os.sep + "test" + os.sep in p for p in splits["test"][0])
    assert splits["test"][1].tolist() == [0, 0, 0, 1, 1]
    *_, info = load_image_folder(root, class_names=["malignant", "benign"], channels=3)
    assert info.class_names == ["malignant", "benign"] and info.n_channels == 3
    os.makedirs(os.path.join(root, "validation", "benign"))
    write_tree(root, {"validation/benign": 2})
    splits, _ = image_folder_splits(root)
    assert splits["val"][1].tolist() == [0, 0] and len(splits["train"][0]) == 20


def test_folder_errors(tmp_path):
    root = write_tree(tmp_path / "isic", {"benign": 3, "malignant": 3})
    os.makedirs(os.path.join(root, "empty"))
    with pytest.raises(ValueError, match=r"Class folder .*empty holds no image"):
        load_image_folder(root)
    expected = r"class folder\(s\) \['empty'\] that are not among the classes"
    with pytest.raises(ValueError, match=expected):
        load_image_folder(root, class_names=["benign", "malignant"])
    with pytest.raises(ValueError, match=r"Class folder\(s\) \['nevus'\] missing in"):
        load_image_folder(root, class_names=["benign", "nevus"])
    os.rmdir(os.path.join(root, "empty"))
    Image.new("RGB", (10, 12)).save(os.path.join(root, "stray.jpg"))
    with pytest.warns(UserWarning, match=r"Ignored 1 image\(s\) directly in .*stray\.jpg"):
        load_image_folder(root, val_fraction=0.3, test_fraction=0.3)
    one_class = write_tree(tmp_path / "one", {"benign": 2})
    with pytest.raises(ValueError, match=r"at least two class folders .* found \['benign'\]"):
        load_image_folder(one_class)
    no_train = write_tree(tmp_path / "no_train", {"test/a": 1, "test/b": 1})
    with pytest.raises(ValueError, match=r"but no train/ folder"):
        load_image_folder(no_train)
    os.remove(os.path.join(root, "stray.jpg"))
    with pytest.raises(ValueError, match=r"The val split of .* has no readable image"):
        load_image_folder(root, val_fraction=0.0)


def _smooth_jpeg(path, size, seed):
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    base = 127 + 100 * np.sin(xx / (7.0 + seed)) * np.cos(yy / 11.0)
    noise = np.random.default_rng(seed).normal(0, 3, size)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=92)


def test_isic_tree_of_large_jpegs_matches_the_full_decode(tmp_path):
    for c, name in enumerate(("benign", "malignant")):
        os.makedirs(tmp_path / name)
        for i in range(6):
            _smooth_jpeg(tmp_path / name / f"ISIC_{c}{i:06d}.jpg", (200, 300), seed=i + c)
    splits, _ = image_folder_splits(str(tmp_path), seed=0)
    _, _, test, _ = load_image_folder(str(tmp_path), image_size=(50, 36), batch_size=4)
    headers, _ = images.inspect_images(splits["test"][0], image_size=(50, 36))
    assert {h.jpeg_ratio for h in headers} == {4}  # 200 // 4 >= 50, 300 // 8 = 37 but 200 // 8 < 50
    scaled = np.concatenate([x.numpy() for x, _ in test])
    full = np.stack(
        [images.decode_image_file(tf.constant(p), 1, (50, 36), 1).numpy() for p in splits["test"][0]]
    )
    difference = np.abs(scaled - full)
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4


@pytest.mark.parametrize("cache", [True, False, "file"])
def test_cached_uint8_pixels_are_the_rounded_float_decode(tmp_path, cache):
    root = write_tree(tmp_path / "tree", {"a": 4, "b": 4}, size=(30, 40))
    cache = str(tmp_path / "cache") if cache == "file" else cache
    splits, _ = image_folder_splits(root, seed=0)
    _, _, test, _ = load_image_folder(root, image_size=(17, 23), batch_size=3, cache=cache)
    got = np.concatenate([x.numpy() for x, _ in test])
    floats = [
        transforms.resize(tf.cast(tf.io.decode_jpeg(tf.io.read_file(p)), tf.float32), (17, 23)).numpy()
        for p in splits["test"][0]
    ]
    np.testing.assert_array_equal(got, np.round(np.stack(floats)))


def test_non_utf8_names_load_from_disk_and_from_a_latin1_tar(tmp_path):
    root = os.fsencode(tmp_path / "tree")
    for name in (b"b\xe9nin", b"malin"):
        os.makedirs(os.path.join(root, name))
        for i in range(5):
            pixels = np.full((8, 8, 3), 40 * i, np.uint8)
            Image.fromarray(pixels).save(os.fsdecode(os.path.join(root, name, b"l\xe9sion%d.png" % i)))
    train, val, test, info = load_image_folder(os.fsdecode(root), batch_size=4)
    assert info.class_names == [os.fsdecode(b"b\xe9nin"), "malin"]
    assert sum(int(x.shape[0]) for ds in (train, val, test) for x, _ in ds) == 10
    archive = tmp_path / "latin1.tar"
    with tarfile.open(archive, "w", encoding="latin-1") as tar:
        for name in ("bénin", "malin"):
            for i in range(5):
                member = tarfile.TarInfo(f"data/{name}/lésion{i}.png")
                data = open(os.path.join(root, b"malin", b"l\xe9sion%d.png" % i), "rb").read()
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    train, val, test, info = load_image_folder(str(archive), batch_size=4)
    assert sum(int(x.shape[0]) for ds in (train, val, test) for x, _ in ds) == 10
