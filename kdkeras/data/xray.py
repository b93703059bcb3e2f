"""Chest X-ray folders in the Kermany et al. (Cell 2018) layout, 2 or 3 classes."""

import os
import re

import numpy as np

from kdkeras.data import images, pipeline
from kdkeras.data.errors import DataError
from kdkeras.data.folders import file_source, find_split_folders, grouped_split, unpacked
from kdkeras.registry import LOADERS

CLASS_NAMES = {2: ["normal", "pneumonia"], 3: ["normal", "bacteria", "virus"]}
_PATIENT = re.compile(r"^(person\d+)_", re.IGNORECASE)


def patient_id(path):
    """Patient of a Kermany file: `"person12"` for `person12_bacteria_45.jpeg`.

    Files without a `personN_` prefix (the NORMAL images, named like
    `IM-0115-0001.jpeg` or `NORMAL2-IM-1427-0001.jpeg`) carry no patient id;
    each is its own group, identified by its path.

    Args:
        path: Image file path.

    Returns:
        The lower-case patient id, or `path` itself.
    """
    match = _PATIENT.match(os.path.basename(path))
    return match.group(1).lower() if match else path


def _label(path, diagnosis, num_classes):
    if diagnosis == "normal":
        return 0
    if num_classes == 2:
        return 1
    name = os.path.basename(path).lower()
    for label, kind in ((1, "bacteria"), (2, "virus")):
        if kind in name:
            return label
    raise DataError(
        f"Cannot tell bacteria from virus for {path}: a 3-class Kermany file name must contain "
        "'bacteria' or 'virus' (e.g. person12_bacteria_45.jpeg). Rename the file, move it out "
        "of PNEUMONIA/, or use num_classes=2."
    )


def _scan(split_dir, num_classes):
    entries = {e.lower(): e for e in os.listdir(split_dir)}
    paths, labels = [], []
    for diagnosis in ("normal", "pneumonia"):
        folder = os.path.join(split_dir, entries.get(diagnosis, diagnosis.upper()))
        if not os.path.isdir(folder):
            raise DataError(
                f"{split_dir} has no {diagnosis.upper()}/ folder; the Kermany layout is "
                "root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg."
            )
        files = images.list_image_files(folder)
        if not files:
            raise DataError(
                f"Class folder {folder} holds no image; add its images or fix the root."
            )
        paths.extend(files)
        labels.extend(_label(path, diagnosis, num_classes) for path in files)
    return paths, np.asarray(labels, dtype=np.int32)


def xray_splits(root, num_classes=2, val_fraction=0.1, min_val=100, seed=0):
    """Lists the files and labels of each split of a Kermany folder (see `load_xray_folder`).

    Args:
        root: Folder holding `train/` and `test/` (and possibly `val/`), or a
            `.zip` / `.tar(.gz)` archive of it (see `kdkeras.data.folders.unpacked`).
        num_classes: 2 or 3.
        val_fraction: Fraction of the train pool carved out for validation.
        min_val: Smallest val folder used as is.
        seed: Seed of the patient split.

    Returns:
        `{"train": (paths, labels), "val": ..., "test": ...}`, labels as int32 arrays.
    """
    if num_classes not in CLASS_NAMES:
        raise DataError(f"num_classes must be 2 or 3, got {num_classes!r}")
    root = unpacked(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"X-ray folder {root} does not exist; pass the folder holding train/ and test/."
        )
    split_dirs = find_split_folders(root)
    for split in ("train", "test"):
        if split not in split_dirs:
            raise DataError(
                f"{root} has no {split}/ folder; the Kermany layout is "
                "root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (val optional). If you unpacked "
                "the Kaggle archive, point root at its inner chest_xray/ folder."
            )
    splits = {split: _scan(split_dirs[split], num_classes) for split in split_dirs}
    val = splits.get("val")
    if val is None or len(val[0]) < min_val:
        train_paths, train_labels = splits["train"]
        if val is not None:
            train_paths = train_paths + val[0]
            train_labels = np.concatenate([train_labels, val[1]])
            # Said aloud: a user who shipped a val/ folder expects it to be the validation set.
            print(
                f"{split_dirs['val']}: {len(val[0])} images, fewer than min_val = {min_val}, too few to "
                f"select a model or fit calibration on: merged into train, and validation is a "
                f"patient-grouped {val_fraction:.0%} of train instead (min_val={len(val[0])} uses the folder as is)."
            )
        groups = [patient_id(path) for path in train_paths]
        parts = grouped_split(train_labels, groups, {"val": val_fraction}, seed=seed)
        for split, indices in parts.items():
            splits[split] = ([train_paths[i] for i in indices], train_labels[indices])
    return splits


@LOADERS.register("xray_folder", local_paths=("root",))
@pipeline.loader
def load_xray_folder(root, num_classes=2, val_fraction=0.1, min_val=100, *, options):
    """Loads chest X-rays in the Kermany layout (Kaggle "chest_xray").

    Layout: `root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg` (folder names
    case-insensitive, `val/` optional). With `num_classes=3` the PNEUMONIA
    images are split by file name into bacteria (`person12_bacteria_45.jpeg`)
    and virus (`person1_virus_6.jpeg`), the setup of seed 002.

    The official val folder holds 16 images, too few to select a model on.
    When it is missing or holds fewer than `min_val` images, its images join
    train and validation is carved out of that pool grouped by patient
    (`personN`), so no patient has images in both train and val. NORMAL files
    have no patient id and each is its own group (see `patient_id`). The test
    folder is used as given.

    Images may have any size and mode (gray, RGB, RGBA, 16-bit PNG); pass
    `image_size` since Kermany images differ in size.

    Args:
        root: Folder holding `train/` and `test/` (and possibly `val/`), or
            the Kaggle archive holding it, extracted once next to itself.
        num_classes: 2 (normal, pneumonia) or 3 (normal, bacteria, virus).
        val_fraction: Fraction of the train pool carved out for validation.
        min_val: Smallest val folder used as is.
        options: The pipeline options, passed as keyword arguments (`image_size`,
            `channels`, `augment`, `seed` (also of the patient split), ...; see
            `kdkeras.data.pipeline.PipelineOptions`). The Kaggle copy stores a few
            hundred X-rays as RGB JPEGs, so pass `channels=1` to keep its images
            gray; `augment="xray"` is seed 002's set.

    Returns:
        `(train, val, test, info)`: batched datasets of
        `(float32 images in [0, 255], int32 labels)` and a `DatasetInfo`.

    Example:

    ```python
    train, val, test, info = load_xray_folder(
        "chest_xray/", num_classes=3, image_size=224, augment="xray")
    ```
    """
    splits = xray_splits(root, num_classes, val_fraction, min_val, options.seed)
    return file_source(
        splits,
        name=f"chest_xray_{num_classes}class",
        class_names=CLASS_NAMES[num_classes],
        source=os.fspath(root),
        options=options,
    )
