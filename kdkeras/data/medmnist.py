"""MedMNIST v2 (Yang et al., Sci Data 2023): every 2D flag, sizes 28, 64, 128 and 224.

The `medmnist` package is the source of truth for names, tasks, labels, URLs
and MD5s, but `import medmnist` imports torch, which a TensorFlow process
must not load (CUDA library clashes, seconds of start-up). Its `info.py`
holds INFO as a literal, which is parsed without importing the package or
running the file (whose import creates `~/.medmnist`).
"""

import ast
import functools
import hashlib
import importlib.util
import os
import warnings
import zipfile
import zlib

import keras
import numpy as np

from kdkeras import files
from kdkeras.config.schema import BUNDLED
from kdkeras.data import pipeline, transforms
from kdkeras.data.errors import DataError
from kdkeras.registry import LOADERS

ROOT_ENV = "KDKERAS_MEDMNIST_ROOT"
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")
_BUNDLED = ("pneumoniamnist",)
# The bundled PneumoniaMNIST holds the official images with the train split in
# another order (see bundled/README.md), so its MD5 is a known good one too.
_KNOWN_GOOD_MD5 = {("pneumoniamnist", 28): "9846a857441ea474bbec7e4b70de222d"}
_TASKS = {"multi-label, binary-class": "multi-label"}
_INSTALL_HINT = "pip install --no-deps medmnist"


@functools.cache
def medmnist_info():
    """The `medmnist.INFO` table, read without importing `medmnist` (nor torch).

    Returns:
        The INFO dict of the installed medmnist package.

    Raises:
        ModuleNotFoundError: If medmnist is not installed.
    """
    spec = importlib.util.find_spec("medmnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    info_files = [os.path.join(d, "info.py") for d in locations]
    info_files = [f for f in info_files if os.path.isfile(f)]
    if not info_files:
        raise ModuleNotFoundError(
            "kdkeras reads MedMNIST's dataset table from the medmnist package, which is not "
            f"installed. Install it without its torch dependency: `{_INSTALL_HINT}`."
        )
    # INFO is a literal; executing info.py would also create ~/.medmnist (medmnist's
    # DEFAULT_ROOT is computed, with makedirs, at import), even for a custom root.
    with open(info_files[0], encoding="utf-8") as f:
        tree = ast.parse(f.read(), info_files[0])
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INFO" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ModuleNotFoundError(
        f"{info_files[0]} has no INFO table; this medmnist version is not supported. "
        f"Install medmnist 3: `{_INSTALL_HINT}`."
    )


def flags_2d():
    """Names of the 2D MedMNIST datasets (`"pathmnist"`, ..., `"organsmnist"`)."""
    return [flag for flag in medmnist_info() if not flag.endswith("3d")]


def _flag_info(flag):
    info = medmnist_info()
    if flag not in info:
        raise DataError(f"Unknown MedMNIST flag {flag!r}; choose one of {flags_2d()}.")
    if flag.endswith("3d"):
        raise DataError(
            f"{flag} holds 3D volumes, which kdkeras does not load; choose a 2D flag: {flags_2d()}."
        )
    return info[flag]


def _check_size(size):
    if size not in SIZES:
        raise DataError(f"MedMNIST size must be one of {SIZES}, got {size!r}")


def default_root(root=None):
    """The folder of MedMNIST npz files.

    Resolution order: the `root` argument, the environment variable
    `KDKERAS_MEDMNIST_ROOT`, then `~/.medmnist` (medmnist's own default).

    Args:
        root: Optional explicit folder.

    Returns:
        A folder path (not created).
    """
    if root is not None:
        return os.path.expanduser(os.fspath(root))
    if os.environ.get(ROOT_ENV):
        return os.path.expanduser(os.environ[ROOT_ENV])
    return os.path.join(os.path.expanduser("~"), ".medmnist")


def npz_filename(flag, size=28):
    """medmnist's file name: `{flag}.npz` at 28 px, else `{flag}_{size}.npz`."""
    _check_size(size)
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _url_and_md5(flag, size):
    info = _flag_info(flag)
    suffix = "" if size == 28 else f"_{size}"
    return info[f"url{suffix}"], info[f"MD5{suffix}"]


def bundled_npz(flag="pneumoniamnist"):
    """Path of a MedMNIST npz shipped inside kdkeras (28 px PneumoniaMNIST only).

    Args:
        flag: Dataset flag; only `"pneumoniamnist"` is bundled.

    Returns:
        Absolute path of the npz.

    Example:

    ```python
    train, val, test, info = load_medmnist(
        "pneumoniamnist", root=os.path.dirname(bundled_npz()))
    ```
    """
    if flag not in _BUNDLED:
        raise DataError(
            f"Only {list(_BUNDLED)} is bundled with kdkeras, not {flag!r}; "
            f"use load_medmnist({flag!r}) to read or download it."
        )
    return os.path.join(BUNDLED_DIR, f"{flag}.npz")


def file_md5(path):
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_npz(flag, size=28, root=None, url=None):
    """Downloads a MedMNIST npz and verifies its MD5 against medmnist's INFO.

    The file is written under a temporary name and renamed only once its MD5
    matches, so a failed or corrupted download leaves nothing behind.

    Args:
        flag: Dataset flag, e.g. `"dermamnist"`.
        size: 28, 64, 128 or 224.
        root: Destination folder (see `default_root`).
        url: Override of INFO's URL (a mirror, or `file://` in tests).

    Returns:
        Path of the verified npz.

    Raises:
        ValueError: If the downloaded file's MD5 differs from INFO's.
        OSError: If the URL cannot be fetched; the message names the URL and
            the exact path to place a manually downloaded file at.
    """
    info_url, md5 = _url_and_md5(flag, size)
    url = url or info_url
    target = os.path.join(default_root(root), npz_filename(flag, size))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not os.access(os.path.dirname(target), os.W_OK):
        raise PermissionError(
            f"Cannot write {target}: its folder is read-only. Pass root= (or set {ROOT_ENV}) "
            "to a writable folder."
        )
    # A killed download leaves a partial temporary npz of up to gigabytes.
    files.remove_stale_temp_files(os.path.dirname(target), recursive=False)
    with files.atomic_path(target) as tmp:
        try:
            keras.utils.get_file(
                fname=os.path.basename(tmp),
                origin=url,
                file_hash=md5,
                hash_algorithm="md5",
                cache_dir=os.path.dirname(tmp),
                cache_subdir="",
                force_download=True,
            )
        except ValueError as e:
            raise DataError(
                f"The file downloaded from {url} does not have the MD5 {md5} listed by medmnist "
                f"for {npz_filename(flag, size)} ({e}); it was discarded and nothing was saved "
                f"at {target}. Retry, or download it yourself and place it at {target}."
            ) from e
        except Exception as e:  # get_file wraps URL and socket errors in a bare Exception.
            raise OSError(
                f"Could not download {url} ({e}). Without internet access, download that URL "
                f"elsewhere and place the file at {target} (or in the folder given by root= "
                f"or {ROOT_ENV})."
            ) from e
    return target


def _validate(npz, path, flag, size, info):
    required = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    missing = [key for key in required if key not in npz.files]
    if missing:
        raise DataError(
            f"{path} lacks the MedMNIST key(s) {missing} (found {sorted(npz.files)}). A MedMNIST "
            f"npz holds {required}; delete the file and let load_medmnist download {flag} again."
        )
    multi_label = _TASKS.get(info["task"], info["task"]) == "multi-label"
    num_classes = len(info["label"])
    image_shape = (size, size) if info["n_channels"] == 1 else (size, size, info["n_channels"])
    arrays = {}
    for split in SPLITS:
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            try:
                arrays[key] = npz[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise _corrupt_member(path, key, flag, e) from e
                raise DataError(
                    f"{path}: key {key} cannot be read without pickle ({e}); MedMNIST arrays "
                    "are plain numeric arrays. Replace the file with the official one."
                ) from e
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise _corrupt_member(path, key, flag, e) from e
            if not isinstance(arrays[key], np.ndarray):
                # np.load returns the raw bytes of a member that is not a .npy file.
                raise DataError(
                    f"{path}: key {key} is not a NumPy array (the archive member is not a .npy "
                    "file). Save the file with numpy.savez, or replace it with the official one."
                )
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim and x.shape[0] == 0:
            raise DataError(
                f"{path}: {split}_images holds no image; every split needs at least one "
                "(training is validated and tested on them). Replace the file."
            )
        if x.dtype != np.uint8 or x.shape[1:] != image_shape:
            raise DataError(
                f"{path}: {split}_images is {x.dtype} {x.shape}{_non_finite(x)}, expected uint8 (N, "
                f"{', '.join(map(str, image_shape))}) for {flag} at size {size}. Check the "
                "flag and size arguments, or replace the file."
            )
        label_width = num_classes if multi_label else 1
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0], label_width):
            raise DataError(
                f"{path}: {split}_labels is {y.dtype} {y.shape}{_non_finite(y)}, expected integers of shape "
                f"({x.shape[0]}, {label_width}), one row per image of {split}_images."
            )
        high = 1 if multi_label else num_classes - 1
        if y.size and (y.min() < 0 or y.max() > high):
            raise DataError(
                f"{path}: {split}_labels has values in [{y.min()}, {y.max()}], outside "
                f"[0, {high}] ({flag} has {num_classes} {'labels' if multi_label else 'classes'}). "
                "Fix the labels or replace the file."
            )
    return arrays


def _corrupt_member(path, key, flag, error):
    return DataError(
        f"{path}: key {key} is corrupt ({type(error).__name__}: {error}), as after an "
        f"interrupted copy or download. Delete the file and let load_medmnist download {flag} "
        "again, or replace it with the official one."
    )


def _non_finite(array):
    # NaN can only hide in a float array; saying so points at the broken export.
    if not np.issubdtype(array.dtype, np.floating):
        return ""
    count = int(array.size - np.isfinite(array).sum())
    return f" with {count} NaN or infinite value(s)" if count else ""


def read_npz(path, flag, size=28):
    """Reads and validates a MedMNIST npz (`allow_pickle=False`).

    Args:
        path: npz path.
        flag: Dataset flag whose INFO entry the arrays must match.
        size: Image size the file must hold.

    Returns:
        Dict of the six arrays (`train_images`, `train_labels`, ...).

    Raises:
        DataError: Naming the file and key, if the file is not a readable
            npz (truncated, corrupt, pickled objects), lacks a key, or holds
            arrays of the wrong dtype (float images, NaN included), shape or
            label range.
    """
    info = _flag_info(flag)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"{path} is not a readable npz file ({e}); delete it and let load_medmnist "
            "download it again, or replace it."
        ) from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not a MedMNIST npz archive; replace it.")
    with npz:
        return _validate(npz, path, flag, size, info)


def resolve_bundled(data):
    """`[data]` with `root = "@bundled"` replaced by the folder of the copy shipped inside kdkeras.

    The quickstart names the bundled PneumoniaMNIST this way, so it runs offline
    from any working directory.
    """
    if data.get("root") != BUNDLED:
        return data
    return {**data, "root": os.path.dirname(bundled_npz(data.get("flag", "pneumoniamnist")))}


@LOADERS.register("medmnist", resolve=resolve_bundled)
@pipeline.loader
def load_medmnist(flag, size=28, root=None, download=True, url=None, path=None, *, options):
    """Loads a 2D MedMNIST dataset with its official train / val / test split.

    The npz is looked up in the root folder (`root`, else `$KDKERAS_MEDMNIST_ROOT`,
    else `~/.medmnist`) under medmnist's file name (`{flag}.npz` at 28 px,
    `{flag}_{size}.npz` otherwise). A local file is used as is: if its MD5
    differs from medmnist's INFO a warning is issued, since a re-packed copy
    (like the bundled PneumoniaMNIST) holds the same images under another
    hash. A missing file is downloaded and must match INFO's MD5.

    Tasks follow INFO: binary-class and multi-class give int32 labels `(B,)`;
    ChestMNIST (multi-label) gives multi-hot float32 labels `(B, 14)`;
    RetinaMNIST (ordinal-regression, grades 0-4) gives int32 grades `(B,)` to
    train as multi-class, and `info.task` keeps `"ordinal-regression"`.

    The whole split is read into memory (224 px PathMNIST: about 15 GB), so
    `cache` applies only when images are resized or converted.

    Args:
        flag: A 2D flag of `medmnist.INFO`, e.g. `"pneumoniamnist"`.
        size: 28, 64, 128 or 224 (MedMNIST+ sizes).
        root: Folder of npz files.
        download: Download a missing file (with MD5 check).
        url: Override of INFO's download URL (a mirror, or `file://`).
        path: Explicit npz path, bypassing root and download.
        options: The pipeline options, passed as keyword arguments
            (`image_size`, `batch_size`, ...; see `kdkeras.data.pipeline.PipelineOptions`).

    Returns:
        `(train, val, test, info)`: batched datasets of
        `(float32 images in [0, 255], labels)` and a `DatasetInfo`.

    Example:

    ```python
    train, val, test, info = load_medmnist("dermamnist", size=64, batch_size=128)
    ```
    """
    info = _flag_info(flag)
    _check_size(size)
    path = _local_npz(flag, size, root, download, url, path)
    # A broken file raises first: its error, not an MD5 warning, says what is wrong.
    arrays = read_npz(path, flag, size)
    _warn_if_unofficial(path, flag, size)
    task = _TASKS.get(info["task"], info["task"])
    multi_label = task == "multi-label"
    native_channels = info["n_channels"]
    n_channels = options.channels or native_channels
    target_size = options.size or (size, size)

    def convert(images, labels):
        if n_channels == 1 and native_channels == 3:
            images = transforms.to_channels(images, 1)
        if target_size != (size, size):
            images = transforms.resize(images, target_size)
        return transforms.to_uint8(images), labels

    needs_convert = target_size != (size, size) or n_channels < native_channels
    return pipeline.Source(
        name=flag if size == 28 else f"{flag}_{size}",
        task=task,
        class_names=[info["label"][str(i)] for i in range(len(info["label"]))],
        n_channels=n_channels,
        image_size=target_size,
        splits={split: _examples(arrays, split, multi_label, options) for split in SPLITS},
        decode=convert if needs_convert else None,
        source=path,
        label_mode="multi-hot" if multi_label else "sparse",
        # Arrays already in memory gain nothing from a second, cached copy.
        cacheable=needs_convert,
    )


def _examples(arrays, split, multi_label, options):
    """One split's images `(N, H, W, C)` and labels (int32, or float32 multi-hot), sampled by `limit`."""
    keep = transforms.subset_indices(len(arrays[f"{split}_labels"]), options.limit, options.seed)
    x = arrays[f"{split}_images"][keep]
    if x.ndim == 3:
        x = x[..., np.newaxis]
    y = arrays[f"{split}_labels"][keep]
    y = y.astype(np.float32) if multi_label else y[:, 0].astype(np.int32)
    return pipeline.Examples.from_arrays(x, y)


def _warn_if_unofficial(path, flag, size):
    # A re-packed copy (the bundled PneumoniaMNIST) holds the same images under another hash.
    _, expected_md5 = _url_and_md5(flag, size)
    actual_md5 = file_md5(path)
    if actual_md5 not in (expected_md5, _KNOWN_GOOD_MD5.get((flag, size))):
        warnings.warn(
            f"{path} has MD5 {actual_md5}, not {expected_md5} as listed by medmnist for "
            f"{npz_filename(flag, size)}. Using it as is (a re-packed copy can hold the same "
            "images); delete it to download the official file.",
            stacklevel=4,
        )


def _local_npz(flag, size, root, download, url, path):
    """The npz to read: `path`, else the root folder's file, downloaded if missing and allowed."""
    if path is None:
        path = os.path.join(default_root(root), npz_filename(flag, size))
        if not os.path.isfile(path):
            info_url, _ = _url_and_md5(flag, size)
            if not download:
                raise FileNotFoundError(
                    f"{path} does not exist and download=False. Download {url or info_url} "
                    f"and place it at {path}, or pass download=True."
                )
            path = download_npz(flag, size, root=root, url=url)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MedMNIST file {path} does not exist; fix path=, or leave it out to use the root "
            "folder and download."
        )
    return path
