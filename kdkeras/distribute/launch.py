"""`kdkeras launch`: a multi-worker cluster of local processes, for trying it on one machine.

Every worker listens on a loopback port (127.0.0.1) and gets its own
`TF_CONFIG`; the ports are held from the moment they are picked until the
workers listen on them, so that no other program can take one in between.
This module does not import TensorFlow: the launcher only starts processes.
"""

import contextlib
import ctypes
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Seconds a worker waits for the whole cluster before it gives up (`watch_start`).
DEFAULT_START_TIMEOUT = 300
START_TIMEOUT_VARIABLE = "KDKERAS_CLUSTER_TIMEOUT"
# Workers a machine runs at most: whole TensorFlow processes, each with its
# own thread pools and about 1 GB of memory once a small model trains.
WORKERS_PER_CORE = 2
GB_PER_WORKER = 1.0
# Seconds the workers get to stop after the launcher forwards SIGTERM or SIGINT.
FORWARD_GRACE = 10.0
# The folder of one launch's worker temporary files: `<tmp>/kdkeras-launch-<launcher pid>-...`.
SCRATCH_PREFIX = "kdkeras-launch-"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def launch(phase_args, workers, log_dir, python=sys.executable):
    """Runs `kdkeras <phase_args> --strategy multiworker` as `workers` local workers.

    For trying a cluster on one machine: every worker listens on a free
    loopback port (127.0.0.1) and gets its own `TF_CONFIG`. Worker 0, the
    chief, prints to this terminal; worker `i` writes to
    `<log_dir>/worker<i>.log`. Every worker is polled; when one fails the
    others are ended, as a cluster scheduler would, and the failing worker is
    named; running the same command again resumes the phase. SIGTERM and
    SIGINT are forwarded to the workers; on Linux a worker is killed when the
    launcher dies, even by SIGKILL. The workers' temporary files (the
    scratch folders of `kdkeras.distribute.multiworker.write_dir`) live in one
    folder that the launcher removes, or the next launch if it was killed.

    Args:
        phase_args: The `kdkeras` arguments of one phase, e.g.
            `["distill", "--config", "quickstart"]`.
        workers: Number of worker processes (at least 1).
        log_dir: Folder for the other workers' logs.
        python: The Python that runs the workers.

    Returns:
        The job's exit status: 0, the first failing worker's (128 + N for a
        worker killed by signal N), or 128 + N after a signal N was forwarded.

    Raises:
        LaunchError: more workers than this machine's cores or memory hold.
    """
    check_worker_count(workers)
    os.makedirs(log_dir, exist_ok=True)
    remove_stale_scratch()
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    command = [python, "-m", "kdkeras", *phase_args, "--strategy", "multiworker"]
    processes, logs, received = [], [], []

    def forward(signum, _frame):
        received.append(signum)
        for p in processes:
            if p.poll() is None:
                p.send_signal(signum)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with reserve_ports(workers) as ports:
            for index, tf_config in enumerate(local_tf_configs(ports)):
                env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": scratch}
                output = None if index == 0 else open(os.path.join(log_dir, f"worker{index}.log"), "w", encoding="utf-8")
                if output is not None:
                    logs.append(output)
                    print(f"kdkeras launch: worker {index} logs to {output.name}", flush=True)
                # preexec_fn is unsafe only with threads; the launcher runs none.
                processes.append(subprocess.Popen(
                    command, env=env, stdout=output, stderr=output, preexec_fn=_die_with(os.getpid())))  # noqa: PLW1509
            wait_listening(ports, processes)
        failed, status = wait_workers(processes, received)
    finally:
        _kill(processes)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for log in logs:
            log.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if received:
        name = signal.Signals(received[0]).name
        print(f"kdkeras launch: {name} forwarded to the {workers} workers; they were stopped.", file=sys.stderr)
        return 128 + received[0]
    if failed is not None:
        where = "above" if failed == 0 else f"in {os.path.join(log_dir, f'worker{failed}.log')}"
        then = ("Run the same command again to resume from the last completed epoch" if status < 0
                else f"Its messages are {where}")
        print(
            f"kdkeras launch: worker {failed} (pid {processes[failed].pid}) {_describe_exit(status)}; the other "
            f"workers were stopped. {then}.",
            file=sys.stderr,
        )
    return 128 - status if status < 0 else status


class LaunchError(ValueError):
    """`kdkeras launch` was asked for a cluster this machine cannot hold; the message gives the numbers."""


def check_worker_count(workers, cores=None, available_gb=None):
    """Refuses more workers than this machine's cores and memory can run.

    Every worker is a whole TensorFlow process: at most `WORKERS_PER_CORE`
    per core (more spend the cluster's start timeout waiting for a CPU), and
    `GB_PER_WORKER` of available memory each.

    Args:
        workers: The number asked for.
        cores: CPU cores this process may use; default: measured.
        available_gb: Available memory in GB; default: measured (None where
            the system does not say).

    Raises:
        LaunchError: naming the limits and the largest count that fits.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LaunchError(f"launch needs at least 1 worker, got {workers!r}.")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    available_gb = _available_gb() if available_gb is None else available_gb
    limits = [(WORKERS_PER_CORE * cores, f"{cores} CPU core(s) ({WORKERS_PER_CORE} workers per core)")]
    if available_gb is not None:
        memory = f"{available_gb:.1f} GB of available memory ({GB_PER_WORKER:g} GB per worker)"
        limits.append((int(available_gb // GB_PER_WORKER), memory))
    fits, reason = min(limits)
    if workers > fits:
        raise LaunchError(
            f"--workers {workers} is more than this machine holds: it has {reason}, room for {max(fits, 0)} "
            "worker(s), each a whole TensorFlow process. Use --workers " + (f"{fits} or fewer" if fits >= 1 else "1")
            + ", or run the workers on several machines (TF_CONFIG, or Slurm's srun)."
        )


def _available_gb():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1e6
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
        except (AttributeError, OSError, ValueError):
            return None


def _die_with(parent):
    """A `preexec_fn` that makes the kernel kill the worker when the launcher `parent` dies (Linux)."""
    libc = _libc()

    def set_death_signal():
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # SIGKILL: a worker in a collective ignores SIGTERM
        if os.getppid() != parent:
            os._exit(1)  # the launcher died before the line above took effect

    return set_death_signal


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def remove_stale_scratch(parent=None):
    """Removes the scratch folders of launchers that are gone (killed before they could clean up).

    Args:
        parent: Folder to look in; default `tempfile.gettempdir()`.
    """
    parent = parent or tempfile.gettempdir()
    for name in os.listdir(parent):
        pid = name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if name.startswith(SCRATCH_PREFIX) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _describe_exit(status):
    if status < 0:
        return f"was killed by signal {-status} ({signal.Signals(-status).name})"
    return f"exited with status {status}"


@contextlib.contextmanager
def reserve_ports(count, host="127.0.0.1"):
    """Free TCP ports on `host`, held until the block ends.

    Each port stays bound, not listening, with `SO_REUSEPORT`, so that no
    other program takes it while the workers start; TensorFlow's gRPC server
    binds it with `SO_REUSEPORT` too and can listen on it meanwhile.

    Args:
        count: How many ports.
        host: The address to bind (loopback by default).

    Yields:
        A list of `count` distinct port numbers.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, 0))
            sockets.append(s)
        yield [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(ports, host="127.0.0.1"):
    """The `TF_CONFIG` of each worker of a cluster on this machine, one per port.

    Args:
        ports: One port per worker.
        host: The address every worker listens on (loopback by default).

    Returns:
        A list of dicts, worker `i`'s at index `i`.
    """
    workers = [f"{host}:{port}" for port in ports]
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in range(len(ports))]


def wait_all(processes, timeout=None):
    """Waits for worker processes; when one fails, ends the others.

    A worker whose peer died blocks in its next collective until TensorFlow's
    heartbeat notices, so the first non-zero exit ends the whole job, as a
    cluster scheduler would, and the job can be restarted to resume.

    Args:
        processes: `subprocess.Popen` objects.
        timeout: Seconds to wait in all, or None.

    Returns:
        The first non-zero exit status (negative: killed by that signal), else 0.

    Raises:
        subprocess.TimeoutExpired: the job ran past `timeout` (the processes
            are killed first).
    """
    return wait_workers(processes, timeout=timeout)[1]


def wait_workers(processes, received=(), timeout=None, grace=FORWARD_GRACE):
    """`wait_all` that says which worker failed, polling every worker each round.

    Args:
        processes: `subprocess.Popen` objects, worker `i` at index `i`.
        received: A list that fills with signals forwarded to the workers;
            `grace` seconds after the first, the workers still running are killed.
        timeout: Seconds to wait in all, or None.
        grace: Seconds a worker gets to stop after a forwarded signal.

    Returns:
        `(index, status)` of the first worker that failed, or `(None, 0)`.

    Raises:
        subprocess.TimeoutExpired: the job ran past `timeout` (the processes
            are killed first).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    stop_at = None
    while True:
        codes = [p.poll() for p in processes]  # every worker, not only up to the first running one
        failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
        if failed is not None or all(code is not None for code in codes):
            break
        if received and stop_at is None:
            stop_at = time.monotonic() + grace
        if stop_at is not None and time.monotonic() > stop_at:
            break
        if deadline is not None and time.monotonic() > deadline:
            _kill(processes)
            raise subprocess.TimeoutExpired([p.args for p in processes], timeout)
        time.sleep(0.1)
    _kill(processes)
    return (failed, codes[failed]) if failed is not None else (None, 0)


def _kill(processes):
    # SIGKILL: a worker blocked in a collective ignores SIGTERM (TensorFlow's preemption handler).
    for p in processes:
        if p.poll() is None:
            p.kill()
    for p in processes:
        p.wait()


def listens(address, timeout=2.0):
    """Whether something accepts TCP connections at `host:port`."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def port_in_use(port, host="127.0.0.1"):
    """Whether another program holds `port`: it listens there, or the port cannot be bound.

    A port that `reserve_ports` holds (bound with `SO_REUSEPORT`, not
    listening) counts as free: it is kept for a worker.

    Args:
        port: The TCP port.
        host: The address to check (an address of this machine).
    """
    if listens(f"{host}:{port}", timeout=0.5):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE  # not an address of this machine: not ours to judge
    return False


def wait_listening(ports, processes, timeout=120, host="127.0.0.1"):
    """Waits until something listens on every port, a process exits, or `timeout` seconds pass.

    Call it inside `reserve_ports`, after starting the workers: the ports stay
    held until every worker's server listens on its own.

    Args:
        ports: The workers' ports.
        processes: The workers' `subprocess.Popen` objects.
        timeout: Seconds to wait at most.
        host: The address the workers listen on.
    """
    deadline = time.monotonic() + timeout
    waiting = set(ports)
    while waiting and time.monotonic() < deadline and all(p.poll() is None for p in processes):
        waiting = {port for port in waiting if not listens(f"{host}:{port}", timeout=0.5)}
        time.sleep(0.2)


def watch_start(worker_pid, tf_config, timeout):
    """The watchdog of a worker's start (`kdkeras.distribute.multiworker.watch_cluster_start`).

    Runs in its own process and waits for the worker to close this process's
    standard input, which it does once the strategy has started (or failed).
    After `timeout` seconds it prints which other workers nothing answers for,
    and kills the worker.

    Args:
        worker_pid: The worker's process id (a string, from the command line).
        tf_config: The worker's `TF_CONFIG` (JSON text).
        timeout: Seconds to wait (a string).
    """
    timeout = float(timeout)
    if select.select([sys.stdin], [], [], timeout)[0]:
        return
    tf_config = json.loads(tf_config)
    task = tf_config["task"]
    silent = [
        f"{job} {index} ({address})"
        for job, addresses in tf_config["cluster"].items()
        for index, address in enumerate(addresses)
        if (job, index) != (task["type"], task["index"]) and not listens(address)
    ]
    if silent:
        reason = (
            f"nothing answers at {', '.join(silent)}: start kdkeras with the same TF_CONFIG "
            "cluster (and that task) on those machines, and check the addresses and firewalls"
        )
    else:
        others = [address for job, addresses in tf_config["cluster"].items() for address in addresses]
        reason = (
            f"something answers at every address ({', '.join(others)}), but no cluster formed: another "
            "program may hold one of those ports (a worker started there stops naming it; `ss -ltnp` "
            "shows the owner), or the workers were given different TF_CONFIG clusters"
        )
    print(
        f"kdkeras: config error: strategy = 'multiworker': {task['type']} {task['index']} waited "
        f"{timeout:g} s for the cluster and {reason}. (Set {START_TIMEOUT_VARIABLE} to wait longer.)",
        file=sys.stderr,
        flush=True,
    )
    os.kill(int(worker_pid), signal.SIGKILL)
