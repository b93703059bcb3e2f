"""Datasets of image files on disk: grouped splits, the file pipeline, class-per-folder trees."""

import collections
import os
import re
import stat
import tarfile
import warnings
import zipfile

import numpy as np
from PIL import Image

from kdkeras import files
from kdkeras.data import images, pipeline, transforms
from kdkeras.data.errors import DataError
from kdkeras.registry import LOADERS

SPLITS = ("train", "val", "test")
# Folder names of the splits, lower-cased: Kermany's train/val/test, and the
# Training/Testing of Kaggle sets such as the brain-tumour MRI one.
_SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid"),
    "test": ("test", "testing"),
}
# Names that are splits, not classes: a tree whose "classes" are called so is
# laid out in a way kdkeras does not understand, and is refused.
_SPLIT_LIKE = re.compile(
    r"^(train|training|test|testing|val|valid|validation|eval|evaluation|dev)([ _-]?(set|data|images?))?$", re.I
)


def unpacked(path):
    """A dataset folder, or the folder an archive of it is extracted to.

    A `.zip` or `.tar(.gz)` file is extracted once, next to itself, with
    `kdkeras.files.extract_archive` (no member may land outside that folder).
    When the archive holds a single top folder (Kaggle's `chest_xray/`),
    that folder is returned.

    Args:
        path: A folder or an archive file.

    Returns:
        A folder path.

    Raises:
        DataError: For an archive that is truncated, corrupt or unsafe.
    """
    path = os.fspath(path)
    if not (os.path.isfile(path) and path.lower().endswith(files.ARCHIVE_SUFFIXES)):
        return path
    try:
        folder = files.extract_archive(path)
    except files.UnsafeArchiveError as e:
        raise DataError(str(e)) from e
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DataError(
            f"Archive {path} is truncated or corrupt ({type(e).__name__}: {e}); nothing was "
            "extracted. Download it again."
        ) from e
    entries = [e for e in os.listdir(folder) if not e.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and os.path.isdir(os.path.join(folder, entries[0])):
        return os.path.join(folder, entries[0])
    return folder


def grouped_split(labels, groups, fractions, seed=0):
    """Splits examples so that no group (patient, lesion) lands in two splits.

    Each group takes the majority label of its examples; within each label the
    groups are shuffled (seeded) and assigned to the splits of `fractions` in
    turn; a split takes each group that brings its image count closer to
    `fraction * images of that label` (stratification). The rest is `"train"`,
    which always keeps at least one group of each label.

    Args:
        labels: Sparse label of each example.
        groups: Group id of each example (use the example index for an
            ungrouped stratified split).
        fractions: Ordered `{split_name: fraction}`, e.g. `{"test": 0.15, "val": 0.15}`.
        seed: Seed of the group shuffle.

    Returns:
        `{split_name: sorted example indices}` for `"train"` and every key of
        `fractions`.

    Example:

    >>> grouped_split([0, 0, 1, 1], ["p1", "p1", "p2", "p3"], {"val": 0.5})["val"]
    array([3])
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.shape[0] != groups.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {groups.shape[0]} groups")
    if sum(fractions.values()) >= 1.0 or min(fractions.values(), default=0.0) < 0.0:
        raise DataError(f"split fractions must be >= 0 and sum to less than 1, got {fractions}")
    members = collections.defaultdict(list)
    for index, group in enumerate(groups.tolist()):
        members[group].append(index)
    group_label = {
        g: collections.Counter(labels[idx].tolist()).most_common(1)[0][0]
        for g, idx in members.items()
    }
    rng = np.random.default_rng(seed)
    assigned = {}
    for label in sorted(set(group_label.values())):
        label_groups = [g for g in members if group_label[g] == label]
        remaining = [label_groups[i] for i in rng.permutation(len(label_groups))]
        total = sum(len(members[g]) for g in label_groups)
        for split, fraction in fractions.items():
            target, taken = fraction * total, 0
            for group in list(remaining):
                size = len(members[group])
                if len(remaining) > 1 and taken + size / 2 < target:
                    assigned[group] = split
                    taken += size
                    remaining.remove(group)
    out = {split: [] for split in ("train", *fractions)}
    for group, idx in members.items():
        out[assigned.get(group, "train")].extend(idx)
    return {split: np.array(sorted(idx), dtype=np.int64) for split, idx in out.items()}


def file_source(splits, *, name, class_names, source, options):
    """The `Source` of lists of image files: screened, inspected, ready to decode.

    Files are sampled (`options.limit`), screened and decoded once up front
    (`screen_image_files`, `images.inspect_images`); unreadable ones are
    skipped, or raise with `options.strict`.

    Args:
        splits: `{"train": (paths, labels), "val": ..., "test": ...}` with
            sparse int labels in `[0, len(class_names))`.
        name: Dataset name for `DatasetInfo`.
        class_names: Class names in index order.
        source: Root folder or CSV, named in messages and `info.source`.
        options: The `PipelineOptions`; `image_size` None needs all files to
            share one size, `channels` None gives 1 if every file is gray, else 3.

    Returns:
        A `kdkeras.data.pipeline.Source`.
    """
    picked = {}
    for split in SPLITS:
        paths, labels = splits[split]
        keep = transforms.subset_indices(len(paths), options.limit, options.seed)
        picked[split] = ([paths[i] for i in keep], np.asarray(labels, dtype=np.int32)[keep])
    all_paths = [path for split in SPLITS for path in picked[split][0]]
    size = options.size
    screened, refused = screen_image_files(all_paths, strict=options.strict, source=source)
    headers, skipped = images.inspect_images(screened, strict=options.strict, source=source, image_size=size)
    readable = {header.path: header for header in headers}
    _check_every_class_readable(picked, readable, class_names, source)
    examples = {}
    for split in SPLITS:
        paths, labels = picked[split]
        keep = [i for i, path in enumerate(paths) if path in readable]
        if not keep:
            raise DataError(
                f"The {split} split of {source} has no readable image; add images to it "
                "(see the layout in the loader's docstring)."
            )
        paths = [paths[i] for i in keep]
        ratios = np.array([readable[path].jpeg_ratio for path in paths], np.int32)
        examples[split] = pipeline.Examples.from_arrays(images.tf_paths(paths), ratios, labels[keep])
    native = images.native_channels(headers)
    n_channels = options.channels or native
    decoded_channels = min(n_channels, native)
    size = size or images.native_size(headers, source)

    def decode(path, jpeg_ratio, label):
        return images.decode_image_file(path, decoded_channels, size, jpeg_ratio), label

    return pipeline.Source(
        name=name,
        task="binary-class" if len(class_names) == 2 else "multi-class",
        class_names=list(class_names),
        n_channels=n_channels,
        image_size=size,
        splits=examples,
        decode=decode,
        source=str(source),
        skipped=refused + skipped,
    )


def screen_image_files(paths, strict=False, source=None):
    """Refuses, before any decoding, files that would hang or exhaust memory.

    Two cheap checks per file: it must be a regular file (reading a FIFO named
    `x.png` blocks forever), and the size in its header must stay within PIL's
    decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS` (a 140 kB PNG can
    declare 12000 x 12000 pixels, 2.4 GB once decoded). Files that cannot be
    opened at all are left to `images.inspect_images`, which reports them.

    Args:
        paths: Image file paths.
        strict: Raise on a refused file instead of skipping it.
        source: Dataset root or CSV named in messages.

    Returns:
        `(kept, refused)`: the paths that passed, in order, and those refused.

    Raises:
        DataError: In strict mode, naming every refused file and why.
    """
    refused = []
    for path in paths:
        reason = _screen(path)
        if reason:
            refused.append((path, reason))
    if refused:
        where = f" in {source}" if source else ""
        lines = "; ".join(f"{path} ({reason})" for path, reason in refused[:10])
        more = f"; and {len(refused) - 10} more" if len(refused) > 10 else ""
        if strict:
            raise DataError(
                f"{len(refused)} image file(s){where} refused before decoding: {lines}{more}. "
                "Replace or delete them, or pass strict=False to skip them."
            )
        warnings.warn(
            f"Skipped {len(refused)} image file(s){where} refused before decoding: {lines}{more}. "
            "They are listed in info.skipped; pass strict=True to raise instead.",
            stacklevel=3,
        )
    bad = {path for path, _ in refused}
    return [path for path in paths if path not in bad], [path for path, _ in refused]


def _screen(path):
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # a broken link or a vanished file: inspect_images names it
    if not stat.S_ISREG(mode):
        return "not a regular file but a FIFO, socket or device; only image files are read"
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as e:
        return f"{e} Resize the image below {limit:,} pixels"
    except Exception:  # not an image PIL knows: inspect_images names the reason
        return None
    if limit and width * height > limit:
        return (
            f"{width}x{height} pixels is over PIL.Image.MAX_IMAGE_PIXELS = {limit:,} and would take "
            f"{width * height * 3 / 1e9:.1f} GB to decode; resize it, or raise that limit if you trust the file"
        )
    return None


def _check_every_class_readable(picked, readable, class_names, source):
    """An all-unreadable class is refused like an empty class folder, not kept with 0 images."""
    for label, class_name in enumerate(class_names):
        listed = [p for split in SPLITS for p, y in zip(*picked[split]) if y == label]
        if listed and not any(path in readable for path in listed):
            raise DataError(
                f"Class {class_name!r} of {source} has no readable image: all {len(listed)} of its "
                f"files were skipped (e.g. {listed[0]}, see the warning above). Replace them, or "
                "remove the class folder."
            )


def find_split_folders(root):
    """Maps `"train"`, `"val"`, `"test"` to subfolders of `root` (names case-insensitive)."""
    entries = {e.lower(): e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e))}
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        for candidate in names:
            if candidate in entries:
                found[split] = os.path.join(root, entries[candidate])
                break
    return found


def _class_folders(folder):
    return sorted(
        e
        for e in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, e)) and not e.startswith((".", "__MACOSX"))
    )


def _scan_classes(folder, class_names):
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(folder, class_name)
        if not os.path.isdir(class_dir):
            continue
        files = images.list_image_files(class_dir)
        if not files:
            raise DataError(
                f"Class folder {class_dir} holds no image ({', '.join(images.IMAGE_EXTENSIONS)}); "
                "add images to it or delete the folder."
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    unknown = sorted(set(_class_folders(folder)) - set(class_names))
    if unknown:
        raise DataError(
            f"{folder} has class folder(s) {unknown} that are not among the classes "
            f"{list(class_names)}; rename or remove them, or pass class_names=."
        )
    loose = [
        e for e in os.listdir(folder) if e.lower().endswith(images.IMAGE_EXTENSIONS)
    ]
    if loose:
        warnings.warn(
            f"Ignored {len(loose)} image(s) directly in {folder} (e.g. {sorted(loose)[0]}): "
            "only images inside a class folder have a label.",
            stacklevel=3,
        )
    return paths, np.asarray(labels, dtype=np.int32)


def image_folder_splits(root, class_names=None, val_fraction=0.15, test_fraction=0.15, seed=0):
    """Lists the files and labels of each split of a class-per-folder tree.

    See `load_image_folder` for the layouts.

    Args:
        root: Dataset root folder, or a `.zip` / `.tar(.gz)` archive of it
            (see `unpacked`).
        class_names: Optional class folder names, fixing their order.
        val_fraction: Fraction carved for validation when there is no val folder.
        test_fraction: Fraction carved for test when there is no test folder.
        seed: Seed of the stratified split.

    Returns:
        `(splits, class_names)`: `{"train": (paths, labels), "val": ..., "test": ...}`
        with int32 label arrays, and the class names in index order.
    """
    root = unpacked(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Image folder {root} does not exist; pass the dataset root folder."
        )
    split_dirs = find_split_folders(root)
    class_root = split_dirs.get("train", root)
    if split_dirs and "train" not in split_dirs:
        raise DataError(
            f"{root} has {sorted(split_dirs)} folder(s) but no train/ folder; "
            "add root/train/<class>/ or put the class folders directly in root."
        )
    if class_names is None:
        class_names = _class_folders(class_root)
        split_like = [c for c in class_names if _SPLIT_LIKE.match(c)]
        if split_like:
            raise DataError(
                f"{class_root} has folder(s) {split_like} that name splits, not classes. kdkeras "
                "reads root/<class>/*.png, or root/{train,val,test}/<class>/*.png (also "
                "Training/Testing and validation/valid); move the class folders into such a layout."
            )
    class_names = [str(c) for c in class_names]
    if len(class_names) < 2:
        raise DataError(
            f"{class_root} must hold at least two class folders (one per class), "
            f"found {class_names}."
        )
    missing = [c for c in class_names if not os.path.isdir(os.path.join(class_root, c))]
    if missing:
        raise DataError(
            f"Class folder(s) {missing} missing in {class_root}; create them or fix class_names."
        )
    pool_paths, pool_labels = _scan_classes(class_root, class_names)
    splits = {}
    for split in ("val", "test"):
        if split in split_dirs:
            splits[split] = _scan_classes(split_dirs[split], class_names)
    carve = {}
    if "test" not in splits:
        carve["test"] = test_fraction
    if "val" not in splits:
        carve["val"] = val_fraction
    parts = grouped_split(pool_labels, np.arange(len(pool_paths)), carve, seed=seed)
    for split, indices in parts.items():
        splits[split] = ([pool_paths[i] for i in indices], pool_labels[indices])
    return splits, class_names


@LOADERS.register("image_folder", local_paths=("root",))
@pipeline.loader
def load_image_folder(root, class_names=None, val_fraction=0.15, test_fraction=0.15, *, options):
    """Loads a class-per-folder image tree (e.g. ISIC benign / malignant).

    Two layouts are accepted:

    - `root/{train,val,test}/<class>/*.jpg`: the given splits are used; a
      missing `val` (or `validation`) or `test` folder is carved out of train
      (seeded, stratified by class).
    - `root/<class>/*.jpg`: val and test are carved out of all images.

    Classes are the sorted class folder names (of `train/` when present) and
    images are found recursively inside each class folder; JPEG, PNG, GIF and
    24/32-bit BMP, any size and mode, and any file name (non-UTF-8 bytes too).
    Pass `image_size` unless all images share one size.

    Args:
        root: Dataset root folder, or a `.zip` / `.tar(.gz)` archive of it,
            extracted once next to itself (see `unpacked`).
        class_names: Optional class folder names, fixing their order.
        val_fraction: Fraction carved for validation when there is no val folder.
        test_fraction: Fraction carved for test when there is no test folder.
        options: The pipeline options, passed as keyword arguments
            (`image_size`, `augment`, `seed` (also of the carved splits), ...;
            see `kdkeras.data.pipeline.PipelineOptions`).

    Returns:
        `(train, val, test, info)`: batched datasets of
        `(float32 images in [0, 255], int32 labels)` and a `DatasetInfo`.

    Example:

    ```python
    train, val, test, info = load_image_folder("isic/", image_size=128)
    ```
    """
    root = unpacked(root)
    splits, class_names = image_folder_splits(root, class_names, val_fraction, test_fraction, options.seed)
    return file_source(
        splits,
        name=os.path.basename(os.path.normpath(root)),
        class_names=class_names,
        source=os.fspath(root),
        options=options,
    )
