"""Loaded by every Python the tests start (conftest puts this folder on PYTHONPATH).

It installs the network guard when `KDKERAS_TESTS_OFFLINE=1`, so subprocesses
(`python -m kdkeras ...`, notebook kernels, multi-worker runs) are as offline
as the test process itself.
"""

import os

if os.environ.get("KDKERAS_TESTS_OFFLINE") == "1":
    import network_guard

    network_guard.install()
