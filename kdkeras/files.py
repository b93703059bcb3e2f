"""Atomic file output: a reader never sees a half-written artifact."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path that replaces `path` only if the block succeeds.

    The temporary file lives in the destination folder, so the final
    `os.replace` is a rename on one file system: atomic on POSIX and Windows.
    If the block raises (or the process is killed), `path` keeps its previous
    content, or stays absent, and the temporary file is removed.

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
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{name}", dir=folder)
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

