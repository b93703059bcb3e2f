"""Where a benchmark ran: machine, software versions, date and load."""

import datetime
import os
import platform
import shutil
import subprocess

LSCPU_LINES = 10


def describe_environment():
    """The facts a benchmark table needs beside its numbers.

    Returns:
        A JSON-ready dict: `date` (UTC, ISO 8601), `cpus` (cores this process
        may use), `lscpu` (its first lines, or None where `lscpu` is absent),
        `platform`, `python`, `tensorflow`, `keras`, `gpus` (visible GPU
        names) and `load_average` (1, 5 and 15 minutes; None where unknown).

    Example:

    ```python
    env = describe_environment()
    print(env["cpus"], env["tensorflow"])
    ```
    """
    import keras
    import tensorflow as tf

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": cpu_count(),
        "lscpu": _lscpu_head(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "load_average": load_average(),
    }


def cpu_count():
    """CPU cores this process may run on (its affinity), as `nproc` prints."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average():
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _lscpu_head():
    if shutil.which("lscpu") is None:
        return None
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return "\n".join(text.splitlines()[:LSCPU_LINES])
