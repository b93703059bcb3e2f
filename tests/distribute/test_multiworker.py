"""strategy = "multiworker": local worker processes on 127.0.0.1 against one process.

Every worker is a subprocess with one CPU device and its own TF_CONFIG; the
one-process reference runs the same program under the default strategy with
the same global batch. All traffic stays on loopback and every wait is bounded.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from kdkeras.distribute import launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300  # seconds any one job may take, start-up included

# Distiller variants trained across two workers (all of them are checked under
# MirroredStrategy in test_distribute.py; these cover the logits, the features
# and the cached path, at the cost of one trace each). Three workers train the
# logits variant and synchronised BatchNorm only: a third process on 2 cores
# costs more than its variants.
VARIANTS = ("knowledge_distillation", "feature_matches", "cached_teacher_logits", "synchronized_batch_norm")
THREE_WORKER_VARIANTS = ("knowledge_distillation", "synchronized_batch_norm")

VARIANT_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    from kdkeras.distribute import strategy as distribute

    strategy = distribute.get_strategy(sys.argv[1])  # first: collectives are set up at start-up

    import keras
    import numpy as np

    from kdkeras.distillation import losses as kd_losses
    from kdkeras.distillation.distiller import Distiller
    from kdkeras.distillation.features import FeatureMatch

    # 48 examples in global batches of 12: 4 full batches an epoch, split evenly over 2 or 3 workers.
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 48).astype("int32")
    weights = np.linspace(0.5, 1.5, 48).astype("float32")
    VARIANTS = {
        "knowledge_distillation": {"loss": lambda: kd_losses.KnowledgeDistillation(temperature=2.0)},
        "feature_matches": {
            "features": lambda: [FeatureMatch("conv", "conv", kind) for kind in ("hint", "attention", "cosine")]
        },
        "cached_teacher_logits": {"cached": True},
        "synchronized_batch_norm": {"loss": lambda: kd_losses.KnowledgeDistillation(temperature=2.0), "batch_norm": True},
    }


    def net(width, seed, regularizer=None, batch_norm=False):
        # No dropout, and BatchNorm only where kdkeras synchronises it: a worker's share of the
        # batch must give the same logits as the whole.
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Rescaling(1 / 255)(inputs)
        h = keras.layers.Conv2D(width, 3, activation="relu", kernel_regularizer=regularizer, name="conv")(h)
        if batch_norm:
            h = keras.layers.BatchNormalization(momentum=0.5)(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(3, kernel_regularizer=regularizer)(h))


    results = {}
    for variant in sys.argv[3].split(","):
        spec = VARIANTS[variant]
        with strategy.scope():
            teacher = net(8, seed=1)
            student = net(4, seed=9, regularizer=keras.regularizers.L2(0.01), batch_norm=spec.get("batch_norm", False))
            distribute.synchronize_batch_norm(student, strategy)
            distiller = Distiller(student=student, teacher=teacher, features=spec.get("features", list)() or None)
            distiller.compile(
                optimizer=keras.optimizers.SGD(0.5, momentum=0.5),
                metrics=["accuracy"],
                distillation_loss_fn=spec["loss"]() if "loss" in spec else None,
                alpha=0.3,
                temperature=2.0,
            )
        inputs = {"inputs": x, "teacher_logits": teacher(x).numpy()} if spec.get("cached") else x
        history = distiller.fit(
            inputs, y, sample_weight=weights, batch_size=12, epochs=2, shuffle=False,
            validation_data=(inputs, y, weights), verbose=0,
        )
        results[variant] = {
            "history": history.history,
            "weights": [w.tolist() for w in student.get_weights()],  # BatchNorm's moving statistics included
            "moving_mean": [layer.moving_mean.numpy().tolist() for layer in student.layers if hasattr(layer, "moving_mean")],
        }
    task = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": ""}}'))["task"]["index"]
    with open(sys.argv[2].replace(".json", f"{task}.json"), "w") as f:
        json.dump(results, f)
    """
)

TEACHER_SCRIPT = textwrap.dedent(
    """
    import sys

    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inputs, keras.layers.Dense(2)(h)).save(sys.argv[1])
    """
)


def _config(epochs, limit=64):
    # squeezenet1_1 without dropout: the zoo's student without BatchNorm or randomness, so a
    # worker's half batch computes exactly what the whole batch does in one process. (cnn_small,
    # whose six BatchNorm layers kdkeras synchronises, ended 2 epochs about 2e-3 away from one
    # process in its history: too far for these tolerances; test_batch_norm_statistics_... checks
    # synchronised BatchNorm on one layer.)
    return textwrap.dedent(
        f"""
        name = "cluster"
        seed = 3
        [data]
        loader = "medmnist"
        flag = "pneumoniamnist"
        root = "@bundled"
        batch_size = 16
        limit = {limit}
        [teacher]
        model = "cnn_small"
        [student]
        model = "cnn_small"
        [distill]
        model = "squeezenet1_1"
        options = {{ dropout = 0.0 }}
        epochs = {epochs}
        optimizer = "sgd"
        learning_rate = 0.05
        monitor = "val_loss"
        alpha = 0.3
        temperature = 2.0
        """
    )


def _env(tmp, **extra):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([REPO, os.environ["PYTHONPATH"]]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "TMPDIR": str(tmp),  # the other workers' scratch folders
    }
    for variable in ("TPU_NAME", "COLAB_TPU_ADDR", "TF_CONFIG", "SLURM_PROCID"):
        env.pop(variable, None)
    return {**env, **extra}


def _start_workers(command, tmp, count=2, tag="worker", **extra):
    """Starts `count` workers of one local cluster; returns them and their log paths."""
    processes, logs = [], []
    with launch.reserve_ports(count) as ports:
        for index, tf_config in enumerate(launch.local_tf_configs(ports)):
            logs.append(tmp / f"{tag}{index}.log")
            with open(logs[-1], "w") as log:
                processes.append(subprocess.Popen(
                    command, cwd=tmp, env=_env(tmp, TF_CONFIG=json.dumps(tf_config), **extra),
                    stdout=log, stderr=subprocess.STDOUT,
                ))
        launch.wait_listening(ports, processes, timeout=TIMEOUT)
    return processes, logs


def _finish(processes, logs, timeout=TIMEOUT):
    try:
        status = launch.wait_all(processes, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the workers ran past the time limit:\n" + "\n".join(p.read_text()[-2000:] for p in logs))
    assert status == 0, "\n".join(p.read_text()[-3000:] for p in logs)


def _one_process(command, tmp, log_name):
    log = open(tmp / log_name, "w")
    return subprocess.Popen(command, cwd=tmp, env=_env(tmp), stdout=log, stderr=subprocess.STDOUT), log


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Each worker's and the one process's history and final student weights, per variant.

    The one process, the 2-worker and the 3-worker job run at the same time.
    """
    tmp = tmp_path_factory.mktemp("variants")
    (tmp / "variants.py").write_text(VARIANT_SCRIPT)
    single, log = _one_process([sys.executable, "variants.py", "none", "single.json", ",".join(VARIANTS)], tmp, "single.log")
    jobs = {}
    try:
        for count, names in ((2, VARIANTS), (3, THREE_WORKER_VARIANTS)):
            jobs[count] = _start_workers(
                [sys.executable, "variants.py", "multiworker", f"workers{count}_.json", ",".join(names)],
                tmp, count=count, tag=f"workers{count}_",
            )
        for processes, logs in jobs.values():
            _finish(processes, logs)
        assert single.wait(timeout=TIMEOUT) == 0, (tmp / "single.log").read_text()[-3000:]
    finally:  # a failed job leaves no process behind
        for process in [single, *(p for processes, _ in jobs.values() for p in processes)]:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.close()
    return {
        "single": json.loads((tmp / "single.json").read_text()),
        **{
            count: [json.loads((tmp / f"workers{count}_{index}.json").read_text()) for index in range(count)]
            for count in jobs
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers, variant", [(2, variant) for variant in VARIANTS] + [(3, variant) for variant in THREE_WORKER_VARIANTS]
)
def test_workers_train_as_one_process(variants, workers, variant):
    chief, *others = (worker[variant] for worker in variants[workers])
    # Every worker ends with the same student and the same logs, bit for bit.
    for other in others:
        assert other == chief
    worker, single = chief, variants["single"][variant]
    assert set(worker["history"]) == set(single["history"]) >= {
        "loss", "student_loss", "distillation_loss", "accuracy", "val_loss", "val_accuracy",
    }
    for key, values in single["history"].items():
        assert len(worker["history"][key]) == 2
        assert worker["history"][key] == pytest.approx(values, rel=1e-4, abs=1e-5), key
    # Two epochs of SGD moved the student, and moved it as one process did.
    assert single["history"]["loss"][1] != single["history"]["loss"][0]
    for got, want in zip(worker["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_batch_norm_statistics_are_the_global_batch_s_on_every_worker(variants, workers):
    single = variants["single"]["synchronized_batch_norm"]["moving_mean"]
    # Two epochs moved the moving mean away from its initial zeros...
    assert len(single) == 1 and np.abs(single[0]).max() > 0.01
    for worker in variants[workers]:
        # ...and every worker holds the one process's, not the mean of its own share of each batch.
        np.testing.assert_allclose(worker["synchronized_batch_norm"]["moving_mean"][0], single[0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def phase_runs(tmp_path_factory):
    """`kdkeras launch --workers 2 distill` and a one-process `kdkeras distill` of one config."""
    tmp = tmp_path_factory.mktemp("phase")
    (tmp / "cluster.toml").write_text(_config(epochs=2))
    (tmp / "teacher.py").write_text(TEACHER_SCRIPT)
    for runs in ("runs", "single"):
        os.makedirs(tmp / runs / "cluster")
    subprocess.run(
        [sys.executable, "teacher.py", "runs/cluster/teacher.keras"], cwd=tmp, env=_env(tmp), check=True, timeout=120
    )
    (tmp / "single" / "cluster" / "teacher.keras").write_bytes((tmp / "runs" / "cluster" / "teacher.keras").read_bytes())
    phase = ["distill", "--config", "cluster.toml", "--quiet"]
    single, log = _one_process(
        [sys.executable, "-m", "kdkeras", *phase, "--runs-dir", "single", "--strategy", "none"], tmp, "single.log"
    )
    with open(tmp / "launch.log", "w") as out:
        launched = subprocess.run(
            [sys.executable, "-m", "kdkeras", "launch", "--workers", "2", "--logs", "runs/workers", *phase],
            cwd=tmp, env=_env(tmp), stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT,
        )
    assert launched.returncode == 0, (tmp / "launch.log").read_text()[-3000:]
    assert single.wait(timeout=TIMEOUT) == 0, (tmp / "single.log").read_text()[-3000:]
    log.close()
    return tmp


def _history(path):
    header, *rows = path.read_text().strip().splitlines()
    return [dict(zip(header.split(","), map(float, row.split(",")))) for row in rows]


@pytest.mark.slow
def test_launch_runs_a_distillation_phase_as_one_process_would(phase_runs):
    log = (phase_runs / "launch.log").read_text()
    assert "MultiWorkerMirroredStrategy: 2 replicas on 2 machines; this is worker 0, on CPU:0; global batch 16 = 8" in log
    assert "this is worker 1" in (phase_runs / "runs" / "workers" / "worker1.log").read_text()
    got = _history(phase_runs / "runs" / "cluster" / "distilled_history.csv")
    want = _history(phase_runs / "single" / "cluster" / "distilled_history.csv")
    assert [row["epoch"] for row in got] == [1.0, 2.0]
    for got_row, want_row in zip(got, want):
        assert set(got_row) == set(want_row)
        for key, value in want_row.items():
            assert got_row[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_launch_writes_the_metrics_once_and_like_one_process(phase_runs):
    from kdkeras.files import load_model

    got = json.loads((phase_runs / "runs" / "cluster" / "distilled_metrics.json").read_text())
    want = json.loads((phase_runs / "single" / "cluster" / "distilled_metrics.json").read_text())
    for key in ("acc", "auc", "balanced_acc", "loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    budget = ("epochs_run", "best_epoch")
    assert [got["run"][key] for key in budget] == [want["run"][key] for key in budget]
    students = [load_model(str(phase_runs / runs / "cluster" / "distilled.keras")) for runs in ("runs", "single")]
    for a, b in zip(*(model.get_weights() for model in students)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Only the chief wrote: no checkpoints left, no worker scratch folder left behind.
    assert sorted(os.listdir(phase_runs / "runs" / "cluster")) == sorted(os.listdir(phase_runs / "single" / "cluster"))
    assert not [name for name in os.listdir(phase_runs) if name.startswith("kdkeras-worker")]


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_epoch_on_every_worker(tmp_path):
    (tmp_path / "cluster.toml").write_text(_config(epochs=4))
    (tmp_path / "teacher.py").write_text(TEACHER_SCRIPT)
    os.makedirs(tmp_path / "runs" / "cluster")
    subprocess.run(
        [sys.executable, "teacher.py", "runs/cluster/teacher.keras"], cwd=tmp_path, env=_env(tmp_path),
        check=True, timeout=120,
    )
    command = [sys.executable, "-m", "kdkeras", "distill", "--config", "cluster.toml", "--quiet", "--strategy", "multiworker"]
    first = tmp_path / "runs" / "cluster" / "state" / "distilled" / "epoch_0001.json"
    processes, logs = _start_workers(command, tmp_path, tag="first")
    deadline = time.monotonic() + TIMEOUT
    while not first.exists() and time.monotonic() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.05)
    assert first.exists(), "\n".join(p.read_text()[-2000:] for p in logs)
    os.kill(processes[1].pid, signal.SIGKILL)  # worker 1 dies in epoch 2
    launch.wait_all(processes, timeout=TIMEOUT)  # the job ends: the chief is stopped with it
    history_before = _history(tmp_path / "runs" / "cluster" / "distilled_history.csv")
    assert 1 <= len(history_before) < 4

    processes, logs = _start_workers(command, tmp_path, tag="restart")
    _finish(processes, logs)
    resumed = len(history_before)
    for log in logs:
        assert f"resuming after epoch {resumed} of 4" in log.read_text()
    history = _history(tmp_path / "runs" / "cluster" / "distilled_history.csv")
    assert [row["epoch"] for row in history] == [1.0, 2.0, 3.0, 4.0]
    assert history[:resumed] == history_before
    assert json.loads((tmp_path / "runs" / "cluster" / "distilled_metrics.json").read_text())["run"]["epochs_run"] == 4
    assert not (tmp_path / "runs" / "cluster" / "state").exists()


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_over_three_workers_stops_every_worker(tmp_path):
    # batch_size = 16 over 3 replicas: every worker stops before reading data, naming the fix.
    (tmp_path / "cluster.toml").write_text(_config(epochs=1))
    with open(tmp_path / "launch.log", "w") as out:
        launched = subprocess.run(
            [sys.executable, "-m", "kdkeras", "launch", "--workers", "3", "--logs", "runs/workers",
             "student", "--config", "cluster.toml", "--quiet"],
            cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT,
        )
    message = (
        "data.batch_size = 16 is the global batch, split over the 3 replicas of "
        "MultiWorkerMirroredStrategy: it must be a multiple of 3. Use 15 or 18."
    )
    assert launched.returncode == 2  # a config error, reported by the chief (worker 0)
    assert message in (tmp_path / "launch.log").read_text()
    assert not os.path.exists(tmp_path / "runs" / "cluster" / "student.keras")


@pytest.mark.slow
def test_a_worker_that_never_starts_is_named_within_the_timeout(tmp_path):
    with launch.reserve_ports(2) as (port, silent_port):  # the second stays bound, never listening
        tf_config = launch.local_tf_configs([port, silent_port])[0]
        result = subprocess.run(
            [sys.executable, "-m", "kdkeras", "student", "--config", "quickstart", "--strategy", "multiworker"],
            cwd=tmp_path, env=_env(tmp_path, TF_CONFIG=json.dumps(tf_config), KDKERAS_CLUSTER_TIMEOUT="3"),
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]  # the watchdog ended the blocked start
    assert (
        f"strategy = 'multiworker': worker 0 waited 3 s for the cluster and nothing answers at "
        f"worker 1 (127.0.0.1:{silent_port})"
    ) in result.stderr


def test_a_slurm_job_step_is_a_cluster(monkeypatch):
    from kdkeras.distribute import multiworker
    from kdkeras.distribute import strategy as distribute

    for name, value in {
        "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "node[07-08]",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "CUDA_VISIBLE_DEVICES": "", "PATH": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    tf_config = distribute.check_tf_config(multiworker.tf_config_from_slurm(port=2222))
    assert tf_config == {"cluster": {"worker": ["node07:2222", "node08:2222"]}, "task": {"type": "worker", "index": 1}}


# A stand-in for `python -m kdkeras <phase> --strategy multiworker`: listens on its TF_CONFIG
# port, records its pid and a scratch folder, then acts out `mode` (issue 26 defects 13, 14, 19).
FAKE_WORKER = """\
import json, os, signal, socket, sys, tempfile, time
mode, out = sys.argv[3], sys.argv[4]
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
port = int(config["cluster"]["worker"][index].rsplit(":", 1)[1])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
server.bind(("127.0.0.1", port))
server.listen()
scratch = tempfile.mkdtemp(prefix=f"kdkeras-worker{index}-")
def stopped(signum, frame):
    open(os.path.join(out, f"signal{index}"), "w").write(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, stopped)
with open(os.path.join(out, f"pid{index}.tmp"), "w") as f:
    f.write(f"{os.getpid()} {scratch}")
os.replace(os.path.join(out, f"pid{index}.tmp"), os.path.join(out, f"pid{index}"))
if mode == "kill_worker_1" and index == 1:
    time.sleep(1)
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "fail_worker_1" and index == 1:
    time.sleep(1)
    print("kdkeras: DataError: the reason", file=sys.stderr)
    sys.exit(3)
time.sleep(120)
"""


def _fake_python(tmp_path):
    path = tmp_path / "fake-python"
    path.write_text(f"#!{sys.executable}\n" + FAKE_WORKER)
    path.chmod(0o755)
    return str(path)


def _launcher(tmp_path, mode, workers=2):
    """`launch` in its own process (so it can be signalled or killed), with fake workers."""
    code = (
        "import sys; from kdkeras.distribute.launch import launch; "
        f"sys.exit(launch([{mode!r}, {str(tmp_path)!r}], {workers}, {str(tmp_path / 'logs')!r}, "
        f"python={_fake_python(tmp_path)!r}))"
    )
    env = {**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)


def _workers(tmp_path, count, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all((tmp_path / f"pid{i}").exists() for i in range(count)):
        time.sleep(0.05)
    found = [(tmp_path / f"pid{i}").read_text().split() for i in range(count)]
    return [int(pid) for pid, _ in found], [scratch for _, scratch in found]


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie nobody reaped is gone too
    except FileNotFoundError:
        return True


def _wait_gone(pids, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.05)
    return all(_gone(pid) for pid in pids)


def test_launch_names_the_killed_worker_stops_the_others_and_removes_their_scratch(tmp_path):
    launcher = _launcher(tmp_path, "kill_worker_1")
    pids, scratch = _workers(tmp_path, 2)
    _, err = launcher.communicate(timeout=60)
    # Worker 1 was polled while the chief ran (the chief's status used to be reported, after its timeout).
    assert launcher.returncode == 128 + signal.SIGKILL
    assert f"kdkeras launch: worker 1 (pid {pids[1]}) was killed by signal 9 (SIGKILL); the other workers were stopped" in err
    assert _wait_gone(pids)
    assert not any(os.path.exists(path) for path in scratch)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("kdkeras-")]


def test_launch_names_a_failed_worker_and_its_log(tmp_path):
    launcher = _launcher(tmp_path, "fail_worker_1")
    pids, _ = _workers(tmp_path, 2)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 3
    log = tmp_path / "logs" / "worker1.log"
    assert (f"kdkeras launch: worker 1 (pid {pids[1]}) exited with status 3; the other workers were stopped. "
            f"Its messages are in {log}.") in err
    assert "kdkeras: DataError: the reason" in log.read_text() and _wait_gone(pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_launch_forwards_sigterm_and_sigint_to_every_worker(tmp_path, sig):
    launcher = _launcher(tmp_path, "sleep")
    pids, scratch = _workers(tmp_path, 2)
    launcher.send_signal(sig)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 128 + sig
    assert f"kdkeras launch: {signal.Signals(sig).name} forwarded to the 2 workers" in err
    if sig == signal.SIGTERM:  # SIGINT ends the fake workers with KeyboardInterrupt, before any handler
        assert [(tmp_path / f"signal{i}").read_text() for i in range(2)] == [str(int(sig))] * 2
    assert _wait_gone(pids) and not any(os.path.exists(path) for path in scratch)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_launcher_and_the_next_launch_removes_their_scratch(tmp_path):
    launcher = _launcher(tmp_path, "sleep")
    pids, scratch = _workers(tmp_path, 2)
    launcher.kill()
    launcher.wait()
    assert _wait_gone(pids), "the workers ran on without their launcher"
    assert all(os.path.exists(path) for path in scratch)  # nobody was left to clean up
    launch.remove_stale_scratch(str(tmp_path))  # what the next launch does first
    assert not any(os.path.exists(path) for path in scratch)


def test_launch_refuses_more_workers_than_cores_or_memory(tmp_path):
    with pytest.raises(launch.LaunchError, match=r"--workers 64 is more than this machine holds: it has 2 CPU core\(s\) "
                                                  r"\(2 workers per core\), room for 4 worker\(s\).*Use --workers 4 or fewer"):
        launch.check_worker_count(64, cores=2, available_gb=24.0)
    with pytest.raises(launch.LaunchError, match=r"it has 2.5 GB of available memory \(1 GB per worker\), room for 2"):
        launch.check_worker_count(3, cores=16, available_gb=2.5)
    launch.check_worker_count(4, cores=2, available_gb=24.0)
    with pytest.raises(launch.LaunchError):
        launch.launch(["student"], 100_000, str(tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()  # refused before anything started


def test_a_worker_whose_port_is_taken_names_it_before_starting(tmp_path):
    from kdkeras.config import ConfigError
    from kdkeras.distribute import multiworker

    with launch.reserve_ports(2) as ports:
        tf_config = launch.local_tf_configs(ports)[0]
        assert not launch.port_in_use(ports[0])  # held for a worker by the launcher: free for it
        multiworker.check_own_port(tf_config)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        assert launch.port_in_use(port)
        tf_config = launch.local_tf_configs([port, ports[1]])[0]
        taken = rf"worker 0 is to listen at 127.0.0.1:{port} \(TF_CONFIG\), but another program already holds port {port}"
        with pytest.raises(ConfigError, match=taken), multiworker.watch_cluster_start(tf_config, timeout=5):
            pytest.fail("the strategy would have started")
    finally:
        squatter.close()
