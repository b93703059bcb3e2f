"""Chest X-ray folders in the Kermany layout: labels, patient-grouped validation, bad input."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kdkeras.data import images, load_xray_folder
from kdkeras.data.xray import patient_id, xray_splits

# File names as in the Kaggle "chest_xray" archive of Kermany et al.
LAYOUT = {
    "train/NORMAL": [
        "IM-0115-0001.jpeg",
        "IM-0117-0001.jpeg",
        "IM-0119-0001.jpeg",
        "IM-0125-0001.jpeg",
        "NORMAL2-IM-1427-0001.jpeg",
        "NORMAL2-IM-0381-0001.jpeg",
        "NORMAL2-IM-0588-0001-0002.jpeg",
        "IM-0127-0001.png",
        "IM-0129-0001.png",
    ],
    "train/PNEUMONIA": [
        "person1_bacteria_1.jpeg",
        "person1_bacteria_2.jpeg",
        "person12_bacteria_45.jpeg",
        "person12_bacteria_46.jpeg",
        "person12_bacteria_47.jpeg",
        "person3_virus_15.jpeg",
        "person3_virus_16.jpeg",
        "person20_virus_51.jpeg",
        "person45_bacteria_219.jpeg",
        "person1946_bacteria_4874.jpeg",
        "person100_virus_184.jpeg",
        "person101_virus_187.jpeg",
        "person101_virus_188.jpeg",
    ],
    "val/NORMAL": ["NORMAL2-IM-1430-0001.jpeg", "NORMAL2-IM-1431-0001.jpeg"],
    "val/PNEUMONIA": ["person1946_bacteria_4875.jpeg", "person1950_bacteria_4881.jpeg"],
    "test/NORMAL": ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg"],
    "test/PNEUMONIA": ["person147_bacteria_706.jpeg", "person1610_virus_2793.jpeg"],
}


def _pixels(rng, height, width, channels):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(30, 220, shape, dtype=np.uint8)


def write_kermany(root, sizes=((40, 48), (44, 36), (36, 36))):
    """Kermany tree: gray JPEGs of varied sizes, one RGB JPEG, an RGBA and a 16-bit PNG."""
    rng = np.random.default_rng(0)
    for index, (folder, names) in enumerate(LAYOUT.items()):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for j, name in enumerate(names):
            path = os.path.join(root, folder, name)
            height, width = sizes[(index + j) % len(sizes)]
            if name == "IM-0127-0001.png":
                Image.fromarray(_pixels(rng, height, width, 4)).save(path)
            elif name == "IM-0129-0001.png":
                Image.fromarray(_pixels(rng, height, width, 1).astype(np.uint16) * 257).save(path)
            elif name == "person12_bacteria_46.jpeg":
                Image.fromarray(_pixels(rng, height, width, 3)).save(path, quality=90)
            else:
                Image.fromarray(_pixels(rng, height, width, 1)).save(path, quality=90)
    return str(root)


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    return write_kermany(tmp_path_factory.mktemp("chest_xray"))


@pytest.fixture
def kermany_copy(kermany, tmp_path):
    return shutil.copytree(kermany, tmp_path / "chest_xray")


def _names(paths):
    return sorted(os.path.basename(p) for p in paths)


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_patient_id():
    assert patient_id("x/person12_bacteria_45.jpeg") == "person12"
    assert patient_id("Person7_virus_3.jpeg") == "person7"
    assert patient_id("x/IM-0115-0001.jpeg") == "x/IM-0115-0001.jpeg"
    assert patient_id("NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427-0001.jpeg"


@pytest.mark.parametrize("seed", range(20))
def test_validation_is_carved_by_patient(kermany, seed):
    splits = xray_splits(kermany, val_fraction=0.3, seed=seed)
    patients = {s: {patient_id(p) for p in paths} for s, (paths, _) in splits.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    pool = LAYOUT["train/NORMAL"] + LAYOUT["train/PNEUMONIA"] + LAYOUT["val/NORMAL"]
    pool += LAYOUT["val/PNEUMONIA"]
    assert _names(splits["train"][0] + splits["val"][0]) == sorted(pool)
    assert set(splits["val"][1].tolist()) == {0, 1}
    assert _names(splits["test"][0]) == sorted(LAYOUT["test/NORMAL"] + LAYOUT["test/PNEUMONIA"])
    same_patient = [s for s, (paths, _) in splits.items() for p in paths if "person1946_" in p]
    assert same_patient in (["train", "train"], ["val", "val"])


def test_large_enough_val_folder_is_kept(kermany):
    splits = xray_splits(kermany, min_val=4)
    assert _names(splits["val"][0]) == sorted(LAYOUT["val/NORMAL"] + LAYOUT["val/PNEUMONIA"])
    assert splits["val"][1].tolist() == [0, 0, 1, 1]
    assert len(splits["train"][0]) == 22


def test_three_classes_from_file_names(kermany):
    splits = xray_splits(kermany, num_classes=3, min_val=4)
    labels = dict(zip(map(os.path.basename, splits["train"][0]), splits["train"][1].tolist()))
    assert labels["IM-0115-0001.jpeg"] == 0
    assert labels["person12_bacteria_45.jpeg"] == 1
    assert labels["person3_virus_15.jpeg"] == 2
    *_, info = load_xray_folder(kermany, num_classes=3, min_val=4, image_size=16, channels=1)
    assert info.class_names == ["normal", "bacteria", "virus"]
    assert info.task == "multi-class"
    assert info.class_counts == [9, 7, 6]
    assert info.class_weights == pytest.approx({0: 22 / 27, 1: 22 / 21, 2: 22 / 18})


def test_pipeline_yields_files_in_order_and_mixed_modes(kermany):
    train, val, test, info = load_xray_folder(
        kermany, image_size=(24, 20), batch_size=4, augment="xray", seed=1
    )
    assert info.n_channels == 3  # one RGB JPEG among gray files
    assert info.image_size == (24, 20)
    splits = xray_splits(kermany, seed=1)
    assert info.split_sizes == {s: len(paths) for s, (paths, _) in splits.items()}
    assert sum(info.split_sizes.values()) == 30 and info.skipped == []
    for ds, split in ((val, "val"), (test, "test")):
        x, y = _all(ds)
        paths, labels = splits[split]
        expected = np.stack(
            [images.decode_image_file(tf.constant(p), 3, (24, 20)).numpy() for p in paths]
        )
        np.testing.assert_array_equal(x, expected.astype(np.float32))
        np.testing.assert_array_equal(y, labels)
    x, y = _all(train)
    assert x.shape == (info.split_sizes["train"], 24, 20, 3)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 255.0
    assert sorted(y.tolist()) == sorted(splits["train"][1].tolist())


def test_gray_channels_and_limit(kermany):
    _, val, _, info = load_xray_folder(kermany, image_size=16, channels=1, limit=5, batch_size=8)
    n_val = min(5, len(xray_splits(kermany)["val"][0]))
    assert info.n_channels == 1 and info.split_sizes == {"train": 5, "val": n_val, "test": 4}
    assert next(iter(val))[0].shape == (n_val, 16, 16, 1)


def test_file_cache_per_split(kermany, tmp_path):
    prefix = tmp_path / "cache" / "kermany"
    os.makedirs(prefix.parent)
    train, val, test, _ = load_xray_folder(kermany, image_size=16, channels=1, cache=str(prefix))
    _, val_memory, _, _ = load_xray_folder(kermany, image_size=16, channels=1)
    for ds in (train, val, test):
        _all(ds)
    cached = sorted({name.split(".")[0] for name in os.listdir(prefix.parent)})
    assert cached == ["kermany-test", "kermany-train", "kermany-val"]
    np.testing.assert_array_equal(_all(val)[0], _all(val_memory)[0])


def test_native_size_requires_uniform_images(tmp_path):
    with pytest.raises(ValueError, match=r"different sizes .* pass image_size=\(height, width\)"):
        load_xray_folder(write_kermany(tmp_path / "mixed"))
    uniform = write_kermany(tmp_path / "uniform", sizes=((30, 26),))
    train, *_, info = load_xray_folder(uniform, batch_size=2)
    assert info.image_size == (30, 26)
    assert next(iter(train))[0].shape == (2, 30, 26, 3)


def test_corrupt_images_are_skipped_and_reported(kermany_copy):
    folder = kermany_copy / "train" / "PNEUMONIA"
    data = (folder / "person1_bacteria_1.jpeg").read_bytes()
    (folder / "person7_bacteria_30.jpeg").write_bytes(data[: len(data) // 2])
    (kermany_copy / "test" / "NORMAL" / "IM-0005-0001.jpeg").write_bytes(b"")
    expected = r"Skipped 2 unreadable image file\(s\) in .*person7_bacteria_30\.jpeg .*IM-0005-0001"
    with pytest.warns(UserWarning, match=expected):
        *_, test, info = load_xray_folder(kermany_copy, image_size=16, min_val=4)
    assert _names(info.skipped) == ["IM-0005-0001.jpeg", "person7_bacteria_30.jpeg"]
    assert info.split_sizes == {"train": 22, "val": 4, "test": 4}
    assert len(_all(test)[0]) == 4
    expected = r"2 unreadable image file\(s\).*person7_bacteria_30\.jpeg"
    with pytest.raises(ValueError, match=expected):
        load_xray_folder(kermany_copy, image_size=16, strict=True)


def test_pneumonia_file_without_kind_fails_for_three_classes(kermany_copy):
    src = kermany_copy / "train" / "PNEUMONIA" / "person1_bacteria_1.jpeg"
    shutil.copy(src, kermany_copy / "train" / "PNEUMONIA" / "person5_1.jpeg")
    with pytest.raises(ValueError, match=r"Cannot tell bacteria from virus for .*person5_1\.jpeg"):
        load_xray_folder(kermany_copy, num_classes=3, image_size=16)
    assert len(xray_splits(kermany_copy, num_classes=2, min_val=4)["train"][0]) == 23


def test_layout_errors(kermany_copy, tmp_path):
    for name in os.listdir(kermany_copy / "test" / "NORMAL"):
        os.remove(kermany_copy / "test" / "NORMAL" / name)
    with pytest.raises(ValueError, match=r"Class folder .*test/NORMAL holds no image"):
        load_xray_folder(kermany_copy, image_size=16)
    shutil.rmtree(kermany_copy / "test" / "NORMAL")
    with pytest.raises(ValueError, match=r"test has no NORMAL/ folder"):
        load_xray_folder(kermany_copy, image_size=16)
    shutil.rmtree(kermany_copy / "test")
    with pytest.raises(ValueError, match=r"has no test/ folder; the Kermany layout is"):
        load_xray_folder(kermany_copy, image_size=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_xray_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="num_classes must be 2 or 3, got 4"):
        load_xray_folder(kermany_copy, num_classes=4)


def test_a_small_val_folder_merged_into_train_is_said_with_the_reason(tmp_path, capsys):
    root = write_kermany(tmp_path / "chest_xray")
    n_val = len(xray_splits(root, min_val=1)["val"][0])
    capsys.readouterr()
    xray_splits(root, min_val=n_val + 1, val_fraction=0.3)
    out = capsys.readouterr().out
    assert f"{n_val} images, fewer than min_val = {n_val + 1}" in out
    assert "merged into train" in out and "patient-grouped 30% of train" in out and f"min_val={n_val}" in out
    xray_splits(root, min_val=n_val)
    assert capsys.readouterr().out == ""
