"""Test-wide setup: quiet TensorFlow, deterministic seeds, no network, no real home.

The network guard (`tests/offline/network_guard.py`) refuses name resolution
and connections to any host but loopback. It is installed here for the test
process and, through `tests/offline/sitecustomize.py` on `PYTHONPATH`, in every
Python a test starts. `HOME` points at a session folder, so code that writes
under `~` (Keras's `~/.keras`, MedMNIST's `~/.medmnist`) never touches the
real home folder.
"""

import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE = os.path.join(REPO, "tests", "offline")
PNEUMONIA_NPZ = os.path.join(REPO, "kdkeras", "data", "bundled", "pneumoniamnist.npz")

# Children inherit the guard: sitecustomize installs it when the variable is set.
os.environ["KDKERAS_TESTS_OFFLINE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (OFFLINE, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, OFFLINE)
import network_guard  # noqa: E402

network_guard.install()

# A home folder of the session's own, removed when the session ends; created
# before anything imports Keras, which reads `~/.keras` at import.
_HOME = tempfile.mkdtemp(prefix="kdkeras-tests-home-")
os.environ["HOME"] = _HOME
os.environ.pop("KDKERAS_MEDMNIST_ROOT", None)
os.environ.pop("KERAS_HOME", None)

import pytest  # noqa: E402


def pytest_unconfigure(config):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seeded():
    import keras
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    # A deterministic experiment turns op determinism on for the whole process (TensorFlow has no
    # public switch back), and Keras then refuses jit_compile: later tests must not inherit it.
    tf_config.disable_op_determinism()


@pytest.fixture
def pneumonia_npz():
    """Path of the bundled, real PneumoniaMNIST (28 px) npz."""
    return PNEUMONIA_NPZ


# The smallest real experiment: the bundled PneumoniaMNIST, 64 images, two
# 4-8-filter CNNs, one epoch per phase. Tests change what they test.
TINY_EXPERIMENT = {
    "name": "tiny",
    "seed": 0,
    "data": {"loader": "medmnist", "flag": "pneumoniamnist", "root": "@bundled", "batch_size": 32, "limit": 64},
    "teacher": {"model": "cnn_small", "options": {"filters": [4, 8]}, "epochs": 1},
    "student": {"model": "cnn_small", "options": {"filters": [4, 8]}, "epochs": 1},
}


@pytest.fixture(scope="session")
def tiny_experiment():
    """Writes the tiny experiment's TOML, with changes, and returns its path.

    Call it as `tiny_experiment(folder, **changes)`: a top-level value replaces
    the tiny one, a table (`data={"limit": 96}`) is merged into the tiny
    table, and None removes a key (`teacher={"options": None}`). The file is
    `folder / "<name>.toml"`. `tiny_experiment.raw(**changes)` returns the
    table without writing it.
    """
    return _TinyExperiment()


class _TinyExperiment:
    def raw(self, **changes):
        raw = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY_EXPERIMENT.items()}
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key].update(value)
                raw[key] = {k: v for k, v in raw[key].items() if v is not None}
            else:
                raw[key] = value
        return {key: value for key, value in raw.items() if value is not None}

    def __call__(self, folder, **changes):
        raw = self.raw(**changes)
        path = folder / f"{raw['name']}.toml"
        path.write_text(toml_text(raw), encoding="utf-8")
        return path


def toml_text(raw):
    """TOML of a config table: scalars first, then `[tables]`, then `[[arrays of tables]]`."""
    def tables(value):
        return isinstance(value, list) and value and all(isinstance(v, dict) for v in value)

    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict) and not tables(v)]
    for key, value in raw.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    for key, value in raw.items():
        for row in value if tables(value) else ():
            lines += ["", f"[[{key}]]"] + [f"{k} = {_toml_value(v)}" for k, v in row.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
