"""Safe file handling: atomic output, stale temporary files, archives, model loading.

A reader never sees a half-written artifact, a killed writer leaves nothing
that a later run mistakes for a result, an archive cannot write outside its
folder, and a model file from elsewhere cannot run code when it is loaded.
"""

import contextlib
import errno
import importlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile

_TEMP_PREFIX = ".tmp-"
# `atomic_path` names its temporary files `.tmp-<pid>-<random>-<name>`.
_TEMP_NAME = re.compile(r"^\.tmp-(\d+)-")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Written into each extraction folder: which archive file (path, size, mtime) it holds.
_ARCHIVE_STAMP = ".kdkeras-archive.json"
# Importing these registers kdkeras's serializable layers, losses and models.
_SERIALIZABLES = ("kdkeras.models", "kdkeras.distillation.distiller")
# Write failures that freeing space (or raising the file size limit) fixes.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class UnsafeArchiveError(ValueError):
    """An archive member that would land outside the extraction folder, or a link or device."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the fix."""


class UnsafeModelError(ModelFileError):
    """A model file whose loading would run code it carries (e.g. a `Lambda` layer)."""


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path that replaces `path` only if the block succeeds.

    The temporary file lives in the destination folder, so the final
    `os.replace` is a rename on one file system: atomic on POSIX and Windows.
    If the block raises, `path` keeps its previous content, or stays absent,
    and the temporary file is removed; a full disk (or quota, or file size
    limit) is re-raised as an `OSError` whose one line names `path` and the fix. A killed process cannot remove it: its
    name carries the writer's process id, so that `remove_stale_temp_files`
    can tell it from the file of a writer still at work.

    Args:
        path: Destination file path. Its folder is created if needed.

    Yields:
        A temporary file path to write to. It ends with the destination's file
        name, because some writers (Keras `save`, Matplotlib `savefig`) pick
        the format from compound suffixes such as `.weights.h5`.

    Example:

    ```python
    with atomic_path("runs/quickstart/student.keras") as tmp:
        model.save(tmp)
    ```
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", suffix=f"-{name}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        if os.path.isfile(tmp):
            # mkstemp creates 0600 files; give the result the usual umask-based mode.
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in _FULL_ERRNOS:
            raise
        raise OSError(
            e.errno,
            f"{os.strerror(e.errno)} while writing {path}; it was left as it was. Free space on "
            "that disk (or raise the file size limit, `ulimit -f`) and run the command again",
        ) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path, text):
    """Writes `text` to `path` atomically (UTF-8).

    Args:
        path: Destination file path.
        text: The full content.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def save_weights(model, path):
    """Saves `model`'s weights like `model.save_weights(path)`, atomically.

    HDF5 writes a `.weights.h5` file itself, and when one of its writes fails
    (a full disk, a file size limit) it crashes the process with a segfault
    while closing the file (h5py 3.14, HDF5 1.14), before any error can be
    reported. So the file image is built in memory, in Keras's own layout
    (the one `model.load_weights` reads), and written by Python, whose
    failure is an ordinary `OSError` raised by `atomic_path`.

    Args:
        model: A built Keras model (or `Distiller`); its optimizer state is
            saved too, as `save_weights` does.
        path: Destination, ending in `.weights.h5`.

    Example:

    ```python
    save_weights(model, "runs/quickstart/state/teacher/best.weights.h5")
    model.load_weights("runs/quickstart/state/teacher/best.weights.h5")
    ```
    """
    # Keras's `save_weights_only`, with an in-memory file where it opens a path;
    # its public API takes paths only.
    from keras.src.saving import saving_lib

    if not model.built:
        raise ValueError(f"Cannot save the weights of {model.name} to {path}: the model is not built yet.")
    image = io.BytesIO()
    store = saving_lib.H5IOStore(image, mode="w")
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    store.close()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(image.getbuffer())


def remove_stale_temp_files(folder, recursive=True):
    """Removes the temporary files that killed `atomic_path` writers left behind.

    Only files named by `atomic_path` whose writer process is no longer
    running on this machine are removed; a writer still at work keeps its file.

    Args:
        folder: Folder to clean; a missing folder is left alone.
        recursive: Also clean its subfolders.

    Returns:
        Sorted list of the removed paths.

    Example:

    ```python
    remove_stale_temp_files("runs/quickstart")  # before resuming a killed run
    ```
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + dirnames:
            match = _TEMP_NAME.match(name)
            if match and not process_alive(int(match.group(1))):
                path = os.path.join(dirpath, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if recursive and not _TEMP_NAME.match(d)]
    return sorted(removed)


def process_alive(pid):
    """Whether process `pid` is running on this machine (a zombie counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def extract_archive(archive, destination=None, max_bytes=None):
    """Extracts a zip or tar archive into a new folder, refusing path traversal.

    Every member is checked before anything is written: an absolute path, a
    `..` component, a link or a device file raises `UnsafeArchiveError` (a
    crafted archive could otherwise overwrite any file the user can write),
    and so does a total size over `max_bytes` (a zip bomb). Members are
    extracted into a temporary folder renamed to `destination` at the end, so
    a folder that exists is complete. It is reused while it holds this same
    archive file (path, size and modification time, recorded in a hidden
    `.kdkeras-archive.json`); an archive replaced by a new version, or another
    archive of the same name (`data.zip`, then `data.tar.gz`), is extracted
    afresh. A folder without that record (extracted by hand) is reused as is.

    Args:
        archive: A `.zip`, `.tar`, `.tar.gz` / `.tgz`, `.tar.bz2` or `.tar.xz` file.
        destination: Folder to create; defaults to the archive's path without
            its suffix (`HAM10000_images_part_1.zip` -> `HAM10000_images_part_1/`).
        max_bytes: Largest total size of the extracted files; defaults to the
            free space of the destination's disk.

    Returns:
        The destination folder.

    Raises:
        UnsafeArchiveError: Naming the archive and the offending member, or
            the size that does not fit.
        zipfile.BadZipFile, tarfile.TarError: For a truncated or corrupt archive.

    Example:

    ```python
    images = extract_archive("downloads/HAM10000_images_part_1.zip")
    ```
    """
    archive = os.fspath(archive)
    suffix = next((s for s in ARCHIVE_SUFFIXES if archive.lower().endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{archive} is not an archive kdkeras extracts ({', '.join(ARCHIVE_SUFFIXES)}).")
    destination = os.fspath(destination or archive[: -len(suffix)])
    stamp = _archive_stamp(archive)
    previous = _read_stamp(destination)
    if os.path.isdir(destination) and previous in (None, stamp):
        return destination
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temp_files(parent, recursive=False)
    tmp = tempfile.mkdtemp(
        prefix=f"{_TEMP_PREFIX}{os.getpid()}-", suffix=f"-{os.path.basename(destination)}", dir=parent
    )
    if max_bytes is None:
        max_bytes = shutil.disk_usage(parent).free
    try:
        _extract_checked(archive, suffix, tmp, max_bytes, parent)
        with open(os.path.join(tmp, _ARCHIVE_STAMP), "w", encoding="utf-8") as f:
            json.dump(stamp, f)
        if os.path.isdir(destination):
            # An extraction of another archive version: swapped out, then removed.
            old = tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", suffix="-replaced", dir=parent)
            os.rename(destination, os.path.join(old, "folder"))
            os.rename(tmp, destination)
            shutil.rmtree(old)
        else:
            os.rename(tmp, destination)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return destination


def _extract_checked(archive, suffix, folder, max_bytes, parent):
    """Checks every member of `archive`, then extracts them all into `folder`."""
    if suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            for info in infos:
                _check_member(archive, info.filename)
            # zipfile stops each member at its declared size, so the sum bounds the output.
            _check_size(archive, sum(info.file_size for info in infos), max_bytes, parent)
            z.extractall(folder)
        return
    with tarfile.open(archive) as t:
        members = t.getmembers()
        for member in members:
            _check_member(archive, member.name)
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive}: member {member.name!r} is a link or a device file, which "
                    "kdkeras does not extract (it could point outside the folder). "
                    "Extract the archive yourself if you trust it."
                )
        _check_size(archive, sum(member.size for member in members), max_bytes, parent)
        t.extractall(folder, members=members, filter="data")


def _archive_stamp(archive):
    status = os.stat(archive)
    return {"archive": os.path.abspath(archive), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _read_stamp(folder):
    try:
        with open(os.path.join(folder, _ARCHIVE_STAMP), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_size(archive, total, max_bytes, parent):
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive}: its members add up to {total / 1e9:.2f} GB, over the {max_bytes / 1e9:.2f} GB "
            f"that fit in {parent}; nothing was extracted. Free disk space, or check the archive "
            "(a small archive that unpacks to this much is a zip bomb)."
        )


def _check_member(archive, name):
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside the extraction folder "
            "(absolute path or '..'); nothing was extracted. The archive is damaged or "
            "crafted: download it again from its official source."
        )


def load_model(path, unsafe_load=False):
    """Loads a `.keras` model file in Keras safe mode.

    Safe mode refuses to deserialize Python code stored in the file (the
    bytecode of a `Lambda` layer's function), which would run on load: a model
    file from a stranger is as dangerous as a script from a stranger. kdkeras's
    own models hold no such code.

    Args:
        path: A `.keras` file.
        unsafe_load: Load code stored in the file too. Only for files whose
            source you trust (the CLI's `--unsafe-load`).

    Returns:
        The Keras model.

    Raises:
        FileNotFoundError: If `path` does not exist.
        UnsafeModelError: If the file holds code and `unsafe_load` is False.
        ModelFileError: If the file is not a complete `.keras` archive.

    Example:

    ```python
    teacher = load_model("runs/quickstart/teacher.keras")
    ```
    """
    import keras

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file {path} not found: pass the path of a saved .keras model.")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a complete .keras file (a .keras file is a zip archive; this one is "
            "truncated, corrupt or another format such as .h5 or .weights.h5). Save the model "
            "again with `model.save('model.keras')`, or re-run the phase that writes it."
        )
    for module in _SERIALIZABLES:
        importlib.import_module(module)
    try:
        return keras.models.load_model(path, safe_mode=not unsafe_load)
    except ValueError as e:
        if "safe_mode" not in str(e):
            raise ModelFileError(f"Cannot load the model in {path}: {e}") from e
        raise UnsafeModelError(
            f"Refused to load {path}: it stores Python code (such as a Lambda layer) that would "
            "run on load, and kdkeras loads models in Keras safe mode. If you trust where the "
            "file comes from, load it with --unsafe-load (Python: unsafe_load=True); otherwise "
            "ask for a model without Lambda layers."
        ) from e
