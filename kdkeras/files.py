"""Safe file handling: atomic output, stale temporary files, model loading in safe mode.

A reader never sees a half-written artifact, a killed writer leaves nothing
that a later run mistakes for a result, and a model file from elsewhere
cannot run code when it is loaded.
"""

import contextlib
import importlib
import os
import re
import shutil
import tempfile
import zipfile

_TEMP_PREFIX = ".tmp-"
# `atomic_path` names its temporary files `.tmp-<pid>-<random>-<name>`.
_TEMP_NAME = re.compile(r"^\.tmp-(\d+)-")
# Importing these registers kdkeras's serializable layers, losses and models.
_SERIALIZABLES = ("kdkeras.models", "kdkeras.distiller")


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
    and the temporary file is removed. A killed process cannot remove it: its
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
            if match and not _process_alive(int(match.group(1))):
                path = os.path.join(dirpath, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if recursive and not _TEMP_NAME.match(d)]
    return sorted(removed)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


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
