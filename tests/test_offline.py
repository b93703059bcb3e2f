"""The suite's own guards: no network in the test process or its children, no real home."""

import os
import pwd
import socket
import subprocess
import sys
import urllib.request

import pytest

REMOTE = ["zenodo.org", "storage.googleapis.com", "8.8.8.8"]


@pytest.mark.parametrize("host", REMOTE)
def test_remote_names_are_neither_resolved_nor_reached(host):
    with pytest.raises(OSError, match=rf"tests must not reach the network \(tried to resolve '{host}'"):
        socket.getaddrinfo(host, 443)
    with pytest.raises(OSError, match="tests must not reach the network"):
        socket.gethostbyname(host)
    with pytest.raises(OSError, match="tests must not reach the network"):
        socket.create_connection((host, 443), timeout=1)
    with socket.socket() as s, pytest.raises(OSError, match=r"tried to connect to \("):
        s.connect(("8.8.8.8", 53))


def test_downloads_fail_at_once():
    # The MedMNIST and ImageNet-weights hosts, as keras.utils.get_file reaches them.
    with pytest.raises(OSError, match=r"tried to resolve 'zenodo\.org'"):
        urllib.request.urlopen("https://zenodo.org/records/10519652/files/pneumoniamnist.npz", timeout=1)


def test_loopback_still_works():
    with socket.socket() as server:
        server.bind(("localhost", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=5):
            pass


@pytest.mark.slow
def test_child_pythons_are_guarded_too():
    code = (
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('zenodo.org', 443)\n"
        "except OSError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tests must not reach the network (tried to resolve 'zenodo.org'" in result.stdout


def test_home_is_not_the_real_home():
    real = pwd.getpwuid(os.getuid()).pw_dir
    assert os.path.realpath(os.path.expanduser("~")) != os.path.realpath(real)
    assert os.path.basename(os.path.expanduser("~")).startswith("kdkeras-tests-home-")


@pytest.mark.slow
def test_medmnist_table_is_read_without_creating_its_home_folder(tmp_path):
    code = (
        "import os\n"
        "from kdkeras.data import medmnist\n"
        "print(len(medmnist.flags_2d()), medmnist.medmnist_info()['pneumoniamnist']['n_samples']['test'])\n"
        "print(sorted(os.listdir(os.environ['HOME'])))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    first, listing = result.stdout.splitlines()[:2]
    assert first == "12 624" and ".medmnist" not in listing
