"""How training reports progress: bars where someone watches, lines where a file records.

Keras's `verbose="auto"` draws a progress bar redrawn with carriage returns
whenever the platform is POSIX, even when stdout is a log file or a CI pipe,
where every redraw is kept: megabytes of `\\r` for one training run.
"""

import sys


def fit_verbosity(stream=None):
    """The Keras `verbose` value for `fit` that suits where output goes.

    Args:
        stream: The stream progress is written to; defaults to `sys.stdout`.

    Returns:
        1 (a progress bar) in a terminal or a Jupyter/Colab notebook, which
        redraw it in place; 2 (one line per epoch) anywhere else: a file, a
        pipe, CI.
    """
    stream = sys.stdout if stream is None else stream
    if _is_terminal(stream) or _is_notebook(stream):
        return 1
    return 2


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _is_notebook(stream):
    # ipykernel's stream class; checked by name so that a plain script never imports it.
    return type(stream).__module__.startswith("ipykernel.")
