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
