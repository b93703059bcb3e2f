"""Dermoscopy: HAM10000 / ISIC 2018 Task 3 images with their metadata CSV.

ISIC 2018 Task 3's training images are the HAM10000 images (same
`ISIC_00xxxxx` ids), so `HAM10000_metadata.csv` labels and groups both.
Class-per-folder dermoscopy sets (ISIC benign / malignant, seed 003) load
with `kdkeras.data.load_image_folder`.
"""

import codecs
import csv
import io
import os

import numpy as np

from kdkeras.data import images, pipeline
from kdkeras.data.errors import DataError
from kdkeras.data.folders import file_source, grouped_split, unpacked
from kdkeras.registry import LOADERS

CLASS_NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
CLASS_DESCRIPTIONS = {
    "akiec": "actinic keratoses and intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevi",
    "vasc": "vascular lesions",
}
_REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
_SHOWN_IN_MESSAGES = 5


def _read_text(path):
    """The CSV's text: UTF-8 (with or without BOM), or UTF-16 with its BOM (Excel's "Unicode text")."""
    with open(path, "rb") as f:
        data = f.read()
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        expected = "UTF-16" if encoding == "utf-16" else "UTF-8"
        raise DataError(
            f"{path} line {line}: byte {data[e.start:e.start + 1]!r} is not {expected} text "
            "(the file is in another encoding, such as Windows-1252). Save it as UTF-8 CSV."
        ) from None


def _index_images(image_dirs):
    index = {}
    for folder in map(unpacked, image_dirs):
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"Image folder {folder} does not exist; pass the folders holding the "
                "<image_id>.jpg files (e.g. HAM10000_images_part_1 and _part_2)."
            )
        for path in images.list_image_files(folder):
            index.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return index


def read_ham10000_metadata(metadata_csv, image_dirs):
    """Reads `HAM10000_metadata.csv` and finds each row's image.

    Args:
        metadata_csv: Path of the CSV (columns include `lesion_id`, `image_id`, `dx`).
        image_dirs: Folder or list of folders holding `<image_id>.jpg`,
            searched recursively; the first folder holding an id wins. A
            `.zip` (HAM10000_images_part_1.zip) is extracted once next to itself.

    Returns:
        `(paths, labels, lesion_ids)` in CSV row order; labels index `CLASS_NAMES`.

    Raises:
        ValueError: On a missing column, an unknown `dx` code, a duplicated
            `image_id` or images that cannot be found, naming the CSV rows.
    """
    metadata_csv = os.fspath(metadata_csv)
    if isinstance(image_dirs, (str, os.PathLike)):
        image_dirs = [image_dirs]
    image_dirs = [os.fspath(d) for d in image_dirs]
    if not os.path.isfile(metadata_csv):
        raise FileNotFoundError(
            f"Metadata CSV {metadata_csv} does not exist; pass the path of HAM10000_metadata.csv."
        )
    reader = csv.DictReader(io.StringIO(_read_text(metadata_csv), newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{metadata_csv} lacks column(s) {missing} (found {columns}); "
            "HAM10000_metadata.csv has lesion_id,image_id,dx,dx_type,age,sex,localization."
        )
    try:
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072 characters)
        raise DataError(
            f"{metadata_csv} line {reader.line_num + 1}: {e}. The file is not a HAM10000 metadata CSV "
            "(an unclosed quote, or binary data); fix that line or replace the file."
        ) from None
    if not rows:
        raise DataError(
            f"{metadata_csv} has a header but no rows; it must list one image per row."
        )
    index = _index_images(image_dirs)
    paths, labels, lesions, absent, seen = [], [], [], [], {}
    for line, row in enumerate(rows, start=2):
        dx = row["dx"].lower()
        if dx not in CLASS_NAMES:
            raise DataError(
                f"{metadata_csv} line {line}: unknown diagnosis dx={row['dx']!r} for image "
                f"{row['image_id']!r}; dx must be one of {CLASS_NAMES}. Fix or delete the row."
            )
        image_id = row["image_id"]
        if image_id in seen:
            raise DataError(
                f"{metadata_csv} lines {seen[image_id]} and {line} both list image {image_id!r}; "
                "delete the duplicate row."
            )
        seen[image_id] = line
        if not row["lesion_id"]:
            raise DataError(
                f"{metadata_csv} line {line}: empty lesion_id for image {image_id!r}; every row "
                "needs its lesion so that a lesion's images stay in one split."
            )
        if image_id not in index:
            absent.append(f"line {line}: {image_id}")
            continue
        paths.append(index[image_id])
        labels.append(CLASS_NAMES.index(dx))
        lesions.append(row["lesion_id"])
    if absent:
        shown = "; ".join(absent[:_SHOWN_IN_MESSAGES])
        hidden = len(absent) - _SHOWN_IN_MESSAGES
        more = f"; and {hidden} more" if hidden > 0 else ""
        raise DataError(
            f"{len(absent)} image(s) listed in {metadata_csv} are not in {image_dirs} "
            f"({shown}{more}); add the missing <image_id>.jpg files, pass the folder holding them "
            "in image_dirs, or delete those rows."
        )
    return paths, np.asarray(labels, dtype=np.int32), lesions


def ham10000_splits(metadata_csv, image_dirs, val_fraction=0.15, test_fraction=0.15, seed=0):
    """Lists the files and labels of each split of HAM10000 (see `load_ham10000`).

    Args:
        metadata_csv: Path of `HAM10000_metadata.csv`.
        image_dirs: Folder or list of folders holding `<image_id>.jpg`.
        val_fraction: Fraction of images (per class) for validation.
        test_fraction: Fraction of images (per class) for test.
        seed: Seed of the lesion split.

    Returns:
        `{"train": (paths, labels), "val": ..., "test": ...}`, labels as int32 arrays.
    """
    paths, labels, lesions = read_ham10000_metadata(metadata_csv, image_dirs)
    parts = grouped_split(labels, lesions, {"test": test_fraction, "val": val_fraction}, seed=seed)
    return {split: ([paths[i] for i in idx], labels[idx]) for split, idx in parts.items()}


@LOADERS.register("ham10000", local_paths=("metadata_csv", "image_dirs"))
@pipeline.loader
def load_ham10000(metadata_csv, image_dirs, val_fraction=0.15, test_fraction=0.15, *, options):
    """Loads HAM10000 (ISIC 2018 Task 3), 7 classes, split by lesion.

    HAM10000 holds several images of many lesions; DermaMNIST splits by image,
    so the same lesion can sit in train and test. Here the splits are
    grouped by `lesion_id` (no lesion in two splits) and stratified by
    diagnosis, seeded. Classes: akiec, bcc, bkl, df, mel, nv, vasc (the `dx`
    codes, in this index order; `CLASS_DESCRIPTIONS` spells them out).

    Args:
        metadata_csv: `HAM10000_metadata.csv`
            (`lesion_id,image_id,dx,dx_type,age,sex,localization`).
        image_dirs: Folder or list of folders holding `<image_id>.jpg`, or
            the `.zip` archives HAM10000 ships as (extracted once, next to them).
        val_fraction: Fraction of images (per class) for validation.
        test_fraction: Fraction of images (per class) for test.
        options: The pipeline options, passed as keyword arguments (`image_size`
            (native 450x600), `augment` (`"dermoscopy"`), `seed` (also of the
            lesion split), `limit` (taken after the split), ...; see
            `kdkeras.data.pipeline.PipelineOptions`). A memory cache of the 10,015
            images at 224 px takes 1.5 GB.

    Returns:
        `(train, val, test, info)`: batched datasets of
        `(float32 images in [0, 255], int32 labels)` and a `DatasetInfo`.

    Example:

    ```python
    train, val, test, info = load_ham10000(
        "HAM10000_metadata.csv",
        ["HAM10000_images_part_1", "HAM10000_images_part_2"],
        image_size=224, augment="dermoscopy")
    ```
    """
    splits = ham10000_splits(metadata_csv, image_dirs, val_fraction, test_fraction, options.seed)
    return file_source(
        splits,
        name="ham10000",
        class_names=CLASS_NAMES,
        source=os.fspath(metadata_csv),
        options=options,
    )
