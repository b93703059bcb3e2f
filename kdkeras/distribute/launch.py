"""`kdkeras launch`: a multi-worker cluster of local processes, for trying it on one machine.

Every worker listens on a loopback port (127.0.0.1) and gets its own
`TF_CONFIG`; the ports are held from the moment they are picked until the
workers listen on them, so that no other program can take one in between.
This module does not import TensorFlow: the launcher only starts processes.
"""

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

# Seconds a worker waits for the whole cluster before it gives up (`watch_start`).
DEFAULT_START_TIMEOUT = 300
START_TIMEOUT_VARIABLE = "KDKERAS_CLUSTER_TIMEOUT"


def launch(phase_args, workers, log_dir, python=sys.executable):
    """Runs `kdkeras <phase_args> --strategy multiworker` as `workers` local workers.

    For trying a cluster on one machine: every worker listens on a free
    loopback port (127.0.0.1) and gets its own `TF_CONFIG`. Worker 0, the
    chief, prints to this terminal; worker `i` writes to
    `<log_dir>/worker<i>.log`. When one worker fails the others are ended, as a
    cluster scheduler would; running the same command again resumes the phase.

    Args:
        phase_args: The `kdkeras` arguments of one phase, e.g.
            `["distill", "--config", "quickstart"]`.
        workers: Number of worker processes (at least 1).
        log_dir: Folder for the other workers' logs.
        python: The Python that runs the workers.

    Returns:
        The job's exit status: 0, or the first failing worker's.
    """
    if workers < 1:
        raise ValueError(f"launch needs at least 1 worker, got {workers}.")
    os.makedirs(log_dir, exist_ok=True)
    command = [python, "-m", "kdkeras", *phase_args, "--strategy", "multiworker"]
    processes, logs = [], []
    with reserve_ports(workers) as ports:
        for index, tf_config in enumerate(local_tf_configs(ports)):
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
            if index == 0:
                output = None
            else:
                path = os.path.join(log_dir, f"worker{index}.log")
                output = open(path, "w", encoding="utf-8")
                logs.append(output)
                print(f"kdkeras launch: worker {index} logs to {path}", flush=True)
            processes.append(subprocess.Popen(command, env=env, stdout=output, stderr=output))
        wait_listening(ports, processes)
    try:
        status = wait_all(processes)
    finally:
        _kill(processes)
        for log in logs:
            log.close()
    if status:
        print(f"kdkeras launch: a worker exited with status {status}; the others were stopped.", file=sys.stderr)
    return status


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
        The first non-zero exit status, else 0.

    Raises:
        subprocess.TimeoutExpired: the job ran past `timeout` (the processes
            are killed first).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    while any(p.poll() is None for p in processes):
        failed = [p.returncode for p in processes if p.returncode not in (None, 0)]
        if failed:
            status = failed[0]
            break
        if deadline is not None and time.monotonic() > deadline:
            _kill(processes)
            raise subprocess.TimeoutExpired([p.args for p in processes], timeout)
        time.sleep(0.2)
    _kill(processes)
    return status or next((p.returncode for p in processes if p.returncode), 0)


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
        reason = "every worker answers, but they do not form one cluster: give every worker the same TF_CONFIG cluster"
    print(
        f"kdkeras: config error: strategy = 'multiworker': {task['type']} {task['index']} waited "
        f"{timeout:g} s for the cluster and {reason}. (Set {START_TIMEOUT_VARIABLE} to wait longer.)",
        file=sys.stderr,
        flush=True,
    )
    os.kill(int(worker_pid), signal.SIGKILL)
