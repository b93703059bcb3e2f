"""TensorFlow's C++ start-up lines, hidden when kdkeras is imported first, unless asked for.

Importing TensorFlow 2.21 writes absl, oneDNN, CUDA-probe and CPU-feature
notices straight to file descriptor 2, before `TF_CPP_MIN_LOG_LEVEL` is read,
and a CPU machine logs an `E0000 ... failed call to cuInit` error on first use.
`hide_tensorflow_startup_lines()`, run by `import kdkeras` (and so by the
`kdkeras` command), hides them: it sets `TF_CPP_MIN_LOG_LEVEL=3` unless the
environment sets it, and points descriptor 2 at the null device while
TensorFlow's own module runs. `TF_CPP_MIN_LOG_LEVEL=0` (set before
`import kdkeras`) shows every line; a TensorFlow imported before kdkeras is
left as it is.
"""

import contextlib
import os
import sys

from kdkeras import import_hooks

LEVEL = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def _stderr_to_null():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        # Restored before an exception propagates, so its traceback is seen.
        os.dup2(saved, 2)
        os.close(saved)


def _exec_quietly(exec_module, module):
    with _stderr_to_null():
        exec_module(module)


def hide_tensorflow_startup_lines():
    """Hides TensorFlow's C++ start-up lines for the rest of the process, unless asked for or too late."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault(LEVEL, "3")
    if os.environ[LEVEL] == "0":
        return
    import_hooks.around_import("tensorflow", _exec_quietly)
