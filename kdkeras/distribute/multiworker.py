"""Training across machines: Keras 3 `fit` under `MultiWorkerMirroredStrategy`.

Keras 3 (3.15 included) cannot `fit` or `evaluate` under a
`MultiWorkerMirroredStrategy` of several workers (keras-team/keras#20585,
TensorFlow #72388). Its TensorFlow trainer fails in two places:

1. `TensorFlowTrainer._maybe_symbolic_build` averages a whole input batch
   across the workers, eagerly, only to learn its shapes; the cross-device op
   rejects the `PerReplica` batch.
2. `reduce_per_replica` averages every scalar log of a step across the workers
   with `strategy.reduce("MEAN", value, axis=0)`; a scalar has no axis 0
   ("Invalid reduction dimension 0 for input with 0 dimensions").

`patch_keras` fixes both, and only where Keras fails: under a multi-worker
strategy the model is built from zeros of the data's shapes, and the scalar
logs of a step are averaged over the replicas with `axis=None`, in one
all-reduce; every other strategy runs Keras's code unchanged. The epoch logs are unaffected: Keras reads them from the
metrics' variables, which sum over all workers, so losses and metrics cover
the global batch and the whole validation split, and are the same on every
worker. `kdkeras.distribute.get_strategy("multiworker")` applies the patch.
Remove this patch when `tests/distribute/test_distribute.py`'s canary says that Keras's
own `fit` trains across workers.

The rest of the module is what a cluster job needs around `fit`: a bounded
wait for the other workers (`watch_cluster_start`), which worker writes the
run's files (`is_chief`, `write_dir`; `kdkeras.workflow.callbacks.WorkerRunState`
resumes every worker from the chief's checkpoints), the cluster of a
Slurm job step (`tf_config_from_slurm`), and loopback ports for trying a
cluster on one machine (`kdkeras.distribute.launch`).
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as keras_trainer

from kdkeras.config import ConfigError
from kdkeras.distribute import launch
from kdkeras.distribute.launch import DEFAULT_START_TIMEOUT, START_TIMEOUT_VARIABLE

DEFAULT_SLURM_PORT = 12345  # the first port of each node of a Slurm job step

_KERAS = {}  # Keras's own functions, kept by `patch_keras`


def patch_keras():
    """Lets Keras 3's `fit`, `evaluate` and `predict` run across several workers.

    Idempotent; see the module docstring for what it changes and why.

    Raises:
        ConfigError: this Keras no longer has the functions the patch
            replaces (a Keras newer than kdkeras knows): the message says to
            check whether Keras fixed keras-team/keras#20585.
    """
    if _KERAS:
        return
    trainer_class = keras_trainer.TensorFlowTrainer
    for owner, name in ((keras_trainer, "reduce_per_replica"), (trainer_class, "_maybe_symbolic_build")):
        if not hasattr(owner, name):
            raise ConfigError(
                f"strategy = 'multiworker': Keras {_keras_version()} has no {name}, which kdkeras "
                "patches to train across workers (keras-team/keras#20585). If that Keras fixed "
                "#20585, remove kdkeras/multiworker.py's patch_keras; else pin keras<3.16."
            )
    _KERAS["reduce_per_replica"] = keras_trainer.reduce_per_replica
    _KERAS["maybe_symbolic_build"] = trainer_class._maybe_symbolic_build
    keras_trainer.reduce_per_replica = _reduce_per_replica
    trainer_class._maybe_symbolic_build = _maybe_symbolic_build


def _keras_version():
    import keras

    return keras.__version__


def _across_workers(strategy):
    # The very condition under which Keras's trainer takes its failing branch.
    return keras_trainer._collective_all_reduce_multi_worker(strategy)


def _reduce_per_replica(values, strategy, reduction):
    keras_reduce = _KERAS["reduce_per_replica"]
    if reduction not in ("auto", "mean") or not _across_workers(strategy):
        return keras_reduce(values, strategy, reduction)
    flat = tree.flatten(values)
    scalars = [i for i, value in enumerate(flat) if value.shape.rank == 0]
    reduced = [keras_reduce(value, strategy, reduction) if i not in scalars else None for i, value in enumerate(flat)]
    if scalars:
        # One all-reduce for all the logs of a step: each is a round trip between machines.
        stacked = tf.stack([tf.cast(flat[i], tf.float32) for i in scalars])
        means = tf.unstack(strategy.reduce("MEAN", stacked, axis=None))
        for i, mean in zip(scalars, means):
            reduced[i] = tf.cast(mean, flat[i].dtype)
    return tree.pack_sequence_as(values, reduced)


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    if iterator is not None and self._distribute_strategy is not None and _across_workers(self.distribute_strategy):
        # The build needs shapes only: zeros of the data's spec. Drawing a real batch, as Keras
        # does, would start one more pass over the data and advance a reshuffling pipeline by an
        # epoch, so the run would no longer see the batches of a one-process run.
        data_batch = tree.map_structure(_zeros_like_spec, iterator.data_adapter.get_tf_dataset().element_spec)
        iterator = None
    return _KERAS["maybe_symbolic_build"](self, iterator=iterator, data_batch=data_batch)


def _zeros_like_spec(spec):
    if spec is None:
        return None
    return tf.zeros([1 if size is None else size for size in spec.shape], spec.dtype)


def is_chief(strategy):
    """Whether this process writes the run's files: the chief, worker 0 without one, or a lone process.

    Args:
        strategy: A `tf.distribute.Strategy`.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().jobs
    if "chief" in jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def write_dir(run_dir, strategy):
    """The folder this process writes a run's files to.

    Every worker runs the whole program, saves included, but only the chief's
    files are the run's: the others write theirs to a scratch folder that
    `remove_write_dir` deletes (TensorFlow's convention for multi-worker
    checkpoints), so that workers sharing a file system never write the same
    file and a worker's BatchNorm statistics never overwrite the chief's model.

    Args:
        run_dir: The run folder, `runs/<experiment>`.
        strategy: The `tf.distribute.Strategy` of the run.

    Returns:
        `run_dir` on the chief (and in a one-process run), else a new
        temporary folder named after the worker.
    """
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"kdkeras-{resolver.task_type}{resolver.task_id}-")


def remove_write_dir(path, run_dir):
    """Deletes the scratch folder of `write_dir`; the run folder itself stays."""
    if os.path.abspath(path) != os.path.abspath(run_dir):
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def watch_cluster_start(tf_config, timeout=None):
    """Bounds the wait for the other workers while the strategy starts.

    `MultiWorkerMirroredStrategy()` blocks in TensorFlow's C++ runtime, deaf
    to SIGTERM and holding Python's lock, until every worker of `TF_CONFIG`
    has joined: a mistyped address or a machine that never started would hang
    the job forever. Inside this block a small watchdog process
    (`kdkeras.distribute.launch.watch_start`) gives the cluster `timeout` seconds; then
    it prints which workers never answered on their port and kills this
    process, the only way to end the blocked call.

    Args:
        tf_config: The parsed `TF_CONFIG` (see `kdkeras.distribute.check_tf_config`).
        timeout: Seconds to wait; defaults to `$KDKERAS_CLUSTER_TIMEOUT`, else 300.

    Example:

    ```python
    with watch_cluster_start(check_tf_config(os.environ["TF_CONFIG"])):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ```
    """
    if timeout is None:
        timeout = float(os.environ.get(START_TIMEOUT_VARIABLE, DEFAULT_START_TIMEOUT))
    check_own_port(tf_config)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, (package_parent, os.environ.get("PYTHONPATH"))))
    watchdog = subprocess.Popen(
        [
            sys.executable, "-c", "import sys; from kdkeras.distribute.launch import watch_start; watch_start(*sys.argv[1:])",
            str(os.getpid()), json.dumps(tf_config), str(timeout),
        ],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        yield
    finally:
        watchdog.stdin.close()  # started (or failed): the watchdog exits
        watchdog.wait()


def check_own_port(tf_config):
    """Refuses to start a worker whose own `TF_CONFIG` port another program holds.

    TensorFlow would fail with a gRPC traceback that names no port, and the
    other workers would wait out their timeout: this names the port first.

    Args:
        tf_config: The parsed `TF_CONFIG`.

    Raises:
        ConfigError: naming the task, its address and the fix.
    """
    task = tf_config["task"]
    address = tf_config["cluster"][task["type"]][task["index"]]
    host, _, port = address.rpartition(":")
    if launch.port_in_use(int(port), host.strip("[]")):
        raise ConfigError(
            f"strategy = 'multiworker': {task['type']} {task['index']} is to listen at {address} (TF_CONFIG), "
            f"but another program already holds port {port}: stop it (`ss -ltnp` names it) or give this "
            "worker a free port in every worker's TF_CONFIG (`kdkeras launch` picks free ports itself)."
        )


def tf_config_from_slurm(port=DEFAULT_SLURM_PORT):
    """The `TF_CONFIG` of this task of a Slurm job step, from `SlurmClusterResolver`.

    Inside `srun`, every task becomes a worker listening on `port` (plus its
    rank on the node, for several tasks per node); task 0 is the chief. GPUs,
    where the nodes have any, are split evenly among a node's tasks.

    Args:
        port: The first port of each node.

    Returns:
        The `TF_CONFIG` JSON text.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi"):
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=port)
    else:
        # CPU nodes: the resolver cannot place zero GPUs per task (nor probe them without
        # nvidia-smi), so it gets one notional GPU per task and leaves CUDA_VISIBLE_DEVICES alone.
        tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
        )
    cluster = resolver.cluster_spec().as_dict()
    return json.dumps({"cluster": cluster, "task": {"type": resolver.task_type, "index": resolver.task_id}})
