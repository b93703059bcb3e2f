"""Test-wide setup: quiet TensorFlow, deterministic seeds and no network."""

import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNEUMONIA_NPZ = os.path.join(REPO, "kdkeras", "data", "bundled", "pneumoniamnist.npz")

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (
        host.startswith("127.") or host in ("localhost", "::1") or self.family == socket.AF_UNIX
    ):
        return _real_connect(self, address)
    raise OSError(f"tests must not reach the network (tried to connect to {address!r})")


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _loopback_only
    yield
    socket.socket.connect = _real_connect


@pytest.fixture(autouse=True)
def _seeded():
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def pneumonia_npz():
    """Path of the bundled, real PneumoniaMNIST (28 px) npz."""
    return PNEUMONIA_NPZ
