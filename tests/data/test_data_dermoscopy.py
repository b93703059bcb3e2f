"""HAM10000 / ISIC 2018: metadata CSV, images in several folders, lesion-grouped splits."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kdkeras.data import images, load_ham10000, transforms
from kdkeras.data.dermoscopy import CLASS_NAMES, ham10000_splits, read_ham10000_metadata

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
# Images per lesion for each diagnosis: HAM10000 holds 1 to 6 images of a lesion.
LESIONS = {
    "akiec": [1, 2, 1, 1],
    "bcc": [2, 1, 1, 3],
    "bkl": [1, 1, 2, 1, 1],
    "df": [1, 1, 1],
    "mel": [3, 1, 2, 1, 1, 1],
    "nv": [1, 1, 1, 2, 1, 1, 1, 4, 1, 1],
    "vasc": [1, 2, 1],
}


def write_ham10000(root):
    """HAM10000_metadata.csv and `ISIC_00xxxxx.jpg` RGB JPEGs split over two folders."""
    rng = np.random.default_rng(0)
    parts = [os.path.join(root, f"HAM10000_images_part_{i}") for i in (1, 2)]
    for part in parts:
        os.makedirs(part)
    rows, image_number, lesion_number = [], 24306, 0
    for dx, sizes in LESIONS.items():
        for size in sizes:
            lesion_number += 1
            for _ in range(size):
                image_id = f"ISIC_{image_number:07d}"
                part = parts[image_number % 2]
                pixels = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(part, image_id + ".jpg"), quality=90)
                rows.append(f"HAM_{lesion_number:07d},{image_id},{dx},histo,45.0,male,back\n")
                image_number += 1
    csv_path = os.path.join(root, "HAM10000_metadata.csv")
    with open(csv_path, "w") as f:
        f.write(HEADER + "".join(rows))
    return csv_path, parts


@pytest.fixture
def ham(tmp_path):
    return write_ham10000(str(tmp_path))


def _rewrite(csv_path, transform):
    lines = open(csv_path).read().splitlines(keepends=True)
    with open(csv_path, "w") as f:
        f.write("".join(transform(lines)))


def test_metadata_rows_map_to_images_and_labels(ham):
    csv_path, parts = ham
    paths, labels, lesions = read_ham10000_metadata(csv_path, parts)
    n_images = sum(sum(sizes) for sizes in LESIONS.values())
    assert len(paths) == len(labels) == len(lesions) == n_images == 48
    assert os.path.basename(paths[0]) == "ISIC_0024306.jpg" and paths[0].startswith(parts[0])
    assert os.path.basename(paths[1]) == "ISIC_0024307.jpg" and paths[1].startswith(parts[1])
    expected = [CLASS_NAMES.index(dx) for dx, sizes in LESIONS.items() for _ in range(sum(sizes))]
    assert labels.tolist() == expected
    assert lesions[:3] == ["HAM_0000001", "HAM_0000002", "HAM_0000002"]


@pytest.mark.parametrize("seed", range(10))
def test_splits_are_grouped_by_lesion_and_stratified(ham, seed):
    csv_path, parts = ham
    splits = ham10000_splits(csv_path, parts, val_fraction=0.2, test_fraction=0.2, seed=seed)
    paths, _, lesions = read_ham10000_metadata(csv_path, parts)
    lesion_of = dict(zip(paths, lesions))
    owners = {s: {lesion_of[p] for p in paths} for s, (paths, _) in splits.items()}
    assert not owners["train"] & owners["val"]
    assert not owners["train"] & owners["test"]
    assert not owners["val"] & owners["test"]
    assert sum(len(paths) for paths, _ in splits.values()) == 48
    assert set(splits["train"][1].tolist()) == set(range(7))
    nv = CLASS_NAMES.index("nv")
    assert 2 <= np.sum(splits["test"][1] == nv) <= 4  # 20% of 14 nv images, lesions kept whole


def test_load_ham10000_pipeline(ham):
    csv_path, parts = ham
    train, val, test, info = load_ham10000(csv_path, parts, batch_size=8, augment="dermoscopy")
    assert info.class_names == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert (info.task, info.n_channels, info.image_size) == ("multi-class", 3, (15, 20))
    splits = ham10000_splits(csv_path, parts)
    assert info.split_sizes == {s: len(paths) for s, (paths, _) in splits.items()}
    train_labels = splits["train"][1]
    assert info.class_counts == np.bincount(train_labels, minlength=7).tolist()
    images, labels = next(iter(train))
    assert images.shape == (8, 15, 20, 3) and images.dtype == "float32"
    assert labels.dtype == "int32"
    y_test = np.concatenate([y.numpy() for _, y in test])
    np.testing.assert_array_equal(y_test, splits["test"][1])
    assert info.source == csv_path


def test_single_image_folder_as_string(tmp_path):
    csv_path, parts = write_ham10000(str(tmp_path))
    for name in os.listdir(parts[1]):
        os.rename(os.path.join(parts[1], name), os.path.join(parts[0], name))
    paths, _, _ = read_ham10000_metadata(csv_path, parts[0])
    assert len(paths) == 48


def test_unknown_diagnosis(ham):
    csv_path, parts = ham
    _rewrite(csv_path, lambda lines: lines[:3] + [lines[3].replace(",akiec,", ",scc,")] + lines[4:])
    expected = r"HAM10000_metadata\.csv line 4: unknown diagnosis dx='scc'"
    with pytest.raises(ValueError, match=expected):
        load_ham10000(csv_path, parts)


def test_missing_images_are_listed_with_csv_lines(ham):
    csv_path, parts = ham
    os.remove(os.path.join(parts[1], "ISIC_0024307.jpg"))
    os.remove(os.path.join(parts[0], "ISIC_0024310.jpg"))
    expected = (
        r"2 image\(s\) listed in .*HAM10000_metadata\.csv are not in .*"
        r"\(line 3: ISIC_0024307; line 6: ISIC_0024310\).*or delete those rows"
    )
    with pytest.raises(ValueError, match=expected):
        load_ham10000(csv_path, parts)


def test_csv_format_errors(ham, tmp_path):
    csv_path, parts = ham
    with pytest.raises(FileNotFoundError, match=r"Image folder .*nowhere does not exist"):
        load_ham10000(csv_path, [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=r"Metadata CSV .*missing\.csv does not exist"):
        load_ham10000(tmp_path / "missing.csv", parts)
    _rewrite(csv_path, lambda lines: lines + [lines[1]])
    with pytest.raises(ValueError, match=r"lines 2 and 50 both list image 'ISIC_0024306'"):
        load_ham10000(csv_path, parts)
    without_lesions = lambda lines: ["image_id,dx\n"] + [  # noqa: E731
        ",".join(row.split(",")[1:3]) + "\n" for row in lines[1:]
    ]
    _rewrite(csv_path, without_lesions)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['lesion_id'\]"):
        load_ham10000(csv_path, parts)
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER)
    with pytest.raises(ValueError, match="has a header but no rows"):
        load_ham10000(empty, parts)


def test_large_jpegs_decode_at_dct_scale_with_full_decode_pixels(ham):
    csv_path, parts = ham
    splits = ham10000_splits(csv_path, parts)
    yy, xx = np.mgrid[0:192, 0:256]
    rng = np.random.default_rng(1)
    sources = {}
    for i, path in enumerate(sorted(p for paths, _ in splits.values() for p in paths)):
        base = 127 + 100 * np.sin(xx / (9.0 + i % 5)) * np.cos(yy / 13.0)
        pixels = base[..., None] + np.array([0.0, -20.0, 20.0]) + rng.normal(0, 3, (192, 256, 3))
        sources[path] = np.clip(pixels, 0, 255).astype(np.uint8)
        Image.fromarray(sources[path]).save(path, quality=90)
    _, _, test, info = load_ham10000(csv_path, parts, image_size=(48, 64), batch_size=4)
    headers, _ = images.inspect_images(splits["test"][0], image_size=(48, 64))
    assert {h.jpeg_ratio for h in headers} == {4}
    scaled = np.concatenate([x.numpy() for x, _ in test])
    paths = splits["test"][0]
    full = np.stack([images.decode_image_file(tf.constant(p), 3, (48, 64), 1).numpy() for p in paths])
    truth = np.stack([transforms.resize(sources[p], (48, 64)).numpy() for p in paths])
    # libjpeg upsamples 4:2:0 chroma differently at 1/4 scale: red and blue move by a
    # few levels, and land closer to the resized source pixels than the full decode does.
    assert np.abs(scaled - full).mean() < 2.0
    scaled_error = np.abs(scaled - truth).mean(axis=(1, 2, 3))
    full_error = np.abs(full - truth).mean(axis=(1, 2, 3))
    assert np.all(scaled_error < full_error + 0.25) and scaled_error.max() < 1.5
