"""`tf.distribute` strategies: several GPUs, several machines or a Colab TPU.

`get_strategy` turns the config's `strategy` name into a strategy; build the
models and `compile` inside its `scope()`, and `fit` shards every batch over
the replicas. A batch size is always global (the Keras convention): each of
`R` replicas computes on `batch_size / R` examples, and Keras losses, the
Distiller's loss terms and metrics are reduced over the whole global batch.

| name | strategy |
| --- | --- |
| `"auto"` | TPU when one is attached, else mirrored over the GPUs when there are several, else the default |
| `"mirrored"` | `MirroredStrategy` over all local GPUs (all logical CPUs when there is no GPU) |
| `"multiworker"` | `MultiWorkerMirroredStrategy` over the machines listed in `TF_CONFIG` (see `kdkeras.distribute.multiworker`) |
| `"tpu"` | `TPUStrategy` on the attached TPU (Colab, Kaggle, Cloud TPU VM or node) |
| `"none"` | the default strategy: one device, TensorFlow's placement |
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from kdkeras.config import STRATEGIES, ConfigError
from kdkeras.distribute import multiworker

# One strategy of each kind per process: re-initialising a TPU drops the
# variables already on it, a cluster's collective ops are configured once, and
# two MirroredStrategy objects over the same devices reuse collective keys, so
# their all-reduces can mix tensors of different models (shape mismatch).
_CREATED = {}

_TF_CONFIG_JOBS = ("chief", "worker", "evaluator")

_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


class StrategyError(ConfigError):
    """A strategy this machine cannot provide; the message says what to change."""


def get_strategy(name="auto"):
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: One of `"auto"`, `"mirrored"`, `"multiworker"`, `"tpu"`, `"none"`
            (see the module docstring).

    Returns:
        A `tf.distribute.Strategy`. Each strategy is created once per process
        and returned again on later calls.

    Raises:
        StrategyError: an unknown name, `"tpu"` without a TPU, `"multiworker"`
            without a valid `TF_CONFIG`, or a multi-worker strategy requested
            after TensorFlow has started running.

    Example:

    ```python
    strategy = get_strategy("auto")
    with strategy.scope():
        distiller = kdkeras.Distiller(student=student, teacher=teacher)
        distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(train, epochs=10)  # batches are split over the replicas
    ```
    """
    if name not in STRATEGIES:
        raise StrategyError(f"strategy = {name!r} is unknown. Allowed: {', '.join(STRATEGIES)}.")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        return _multi_worker_strategy()
    address = tpu_address()
    if name == "tpu":
        if address is None:
            raise StrategyError(
                "strategy = 'tpu' but no TPU is attached. On Colab pick Runtime > Change runtime "
                "type > TPU (v2-8 or v5e) and run again; on a Cloud TPU node set TPU_NAME to the "
                "TPU's name or grpc://address. To run without one, set strategy = 'auto'."
            )
        return _tpu_strategy(address)
    if name == "mirrored":
        return _mirrored_strategy(_mirrored_devices())
    if address is not None:
        return _tpu_strategy(address)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return _mirrored_strategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


def tpu_address():
    """Where the attached TPU is, without touching the network.

    Returns:
        `"local"` when this machine has TPU devices (TPU VMs: Colab's and
        Kaggle's TPU runtimes, Cloud TPU VMs), else the `TPU_NAME` environment
        variable (a Cloud TPU node's name or `grpc://` address), else
        `grpc://$COLAB_TPU_ADDR` (Colab's legacy TPU nodes), else None.
    """
    if tf.config.list_physical_devices("TPU") or tf.config.list_physical_devices("TPU_SYSTEM"):
        return "local"
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    if os.environ.get("COLAB_TPU_ADDR"):
        return f"grpc://{os.environ['COLAB_TPU_ADDR']}"
    return None


def check_tf_config(text):
    """Parses and validates a `TF_CONFIG` value for `MultiWorkerMirroredStrategy`.

    Every machine of the cluster runs the same program with the same `cluster`
    and its own `task`.

    Args:
        text: The JSON text of the `TF_CONFIG` environment variable, or None.

    Returns:
        The parsed dict.

    Raises:
        StrategyError: missing or invalid JSON, no `cluster` jobs, an address
            that is not `host:port`, or a `task` that is not in the cluster.

    Example:

    >>> check_tf_config('{"cluster": {"worker": ["localhost:12345"]}, '
    ...                 '"task": {"type": "worker", "index": 0}}')["task"]
    {'type': 'worker', 'index': 0}
    """
    def fail(message):
        raise StrategyError(f"TF_CONFIG {message} Example for the first of two machines: {_TF_CONFIG_EXAMPLE}")

    if not text:
        fail(
            "is not set: strategy = 'multiworker' reads the cluster from it (or, inside `srun`, "
            "from Slurm). Set it on every machine (on one machine, use strategy = 'mirrored' or "
            "`kdkeras launch`)."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"is not valid JSON ({e}).")
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        fail("needs a 'cluster' object mapping 'worker' (and optionally 'chief') to 'host:port' lists.")
    cluster = config["cluster"]
    unknown = sorted(set(cluster) - set(_TF_CONFIG_JOBS))
    if unknown:
        fail(f"cluster has unknown job(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_TF_CONFIG_JOBS)}.")
    if not cluster.get("worker") and not cluster.get("chief"):
        fail("cluster lists no 'worker' (or 'chief') addresses.")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            fail(f"cluster.{job} must be a non-empty list of 'host:port' strings, got {addresses!r}.")
        for address in addresses:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit():
                fail(f"cluster.{job} has {address!r}, which is not a 'host:port' address.")
    if len(cluster.get("chief", [])) > 1:
        fail(f"cluster.chief must list one address, got {len(cluster['chief'])}.")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        fail(f"task must be {{'type': one of {sorted(cluster)}, 'index': i}} naming this machine, got {task!r}.")
    index = task.get("index")
    size = len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        fail(
            f"task.index must be an int in [0, {size - 1}] (this machine's place in "
            f"cluster.{task['type']}), got {index!r}."
        )
    return config


def describe(strategy):
    """One log line about a strategy: its kind, replicas and devices.

    Args:
        strategy: A `tf.distribute.Strategy`.

    Returns:
        A string such as `"MirroredStrategy: 2 replicas on GPU:0, GPU:1"`, or
        for a cluster `"MultiWorkerMirroredStrategy: 4 replicas on 2 machines;
        this is worker 0, on GPU:0, GPU:1"`.
    """
    replicas = strategy.num_replicas_in_sync
    kind = _kind(strategy)
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no device list of its own
        kind = "default strategy"
        devices = [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]
    names = ", ".join(device.split("device:")[-1] for device in devices)
    text = f"{kind}: {replicas} replica{'s' if replicas != 1 else ''}"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        machines = _machines(strategy)
        where = f"{machines} machine{'s' if machines != 1 else ''}; this is {resolver.task_type} {resolver.task_id}"
        return f"{text} on {where}, on {names}"
    return f"{text} on {names}"


def replica_batch_size(batch_size, strategy):
    """The per-replica batch size of a global batch, which must split evenly.

    Keras losses average over each replica's share and sum the shares divided
    by the number of replicas: with equal shares that is the mean over the
    global batch. (The last, partial batch of an epoch may split unevenly on
    GPUs; TPUs drop it, see `prepare_dataset`.)

    Args:
        batch_size: The global batch size (`[data] batch_size`).
        strategy: A `tf.distribute.Strategy`.

    Returns:
        `batch_size // strategy.num_replicas_in_sync`.

    Raises:
        ConfigError: `batch_size` is not a positive multiple of the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas or batch_size % replicas:
        lower = batch_size // replicas * replicas
        choices = f"{lower} or {lower + replicas}" if lower else str(replicas)
        raise ConfigError(
            f"data.batch_size = {batch_size} is the global batch, split over the {replicas} "
            f"replicas of {_kind(strategy)}: it must be a multiple of {replicas}. Use {choices}."
        )
    return batch_size // replicas


@dataclasses.dataclass(frozen=True)
class Batching:
    """How a phase batches under a strategy (see `batching`).

    Attributes:
        size: The global batch, over all replicas together.
        per_replica: Each replica's share of it.
        drop_remainder: Whether `fit` sees only full batches (the last,
            partial batch of an epoch is dropped).
    """

    size: int
    per_replica: int
    drop_remainder: bool

    def steps(self, num_examples):
        """Batches, hence training steps, in one pass over `num_examples` examples."""
        if self.drop_remainder:
            return num_examples // self.size
        return -(-num_examples // self.size)


def batching(batch_size, strategy):
    """The one rule of the global batch: its size, its per-replica share and its last batch.

    The config's batch size is global (the Keras convention): each of the
    strategy's replicas computes on an equal share, and the partial last batch
    of an epoch is kept unless the strategy needs static shapes
    (`drops_remainder`).

    Args:
        batch_size: The global batch size (`[data] batch_size`).
        strategy: A `tf.distribute.Strategy`.

    Returns:
        A `Batching`.

    Raises:
        ConfigError: `batch_size` is not a positive multiple of the replicas.
    """
    return Batching(batch_size, replica_batch_size(batch_size, strategy), drops_remainder(strategy))


def drops_remainder(strategy):
    """Whether `fit` under `strategy` needs every batch full: TPUs compile one program per shape."""
    return is_tpu_strategy(strategy)


def _kind(strategy):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    return type(strategy).__name__


def prepare_dataset(dataset, strategy, batch_size):
    """Adapts a batched dataset to what a strategy needs before `fit`.

    TPUs compile one program per batch shape, so the batches are re-cut to a
    static `batch_size` and the last, partial batch of each epoch is dropped.
    Multi-worker training shards in-memory pipelines by batch (`DATA`),
    since they have no files to shard; every worker must then use the same
    seed, which kdkeras configs do. Other strategies get `dataset` unchanged.

    Args:
        dataset: A `tf.data.Dataset` of global batches.
        strategy: The `tf.distribute.Strategy` that will `fit` on it.
        batch_size: The global batch size of `dataset`.

    Returns:
        A `tf.data.Dataset`.
    """
    if drops_remainder(strategy):
        return dataset.rebatch(batch_size, drop_remainder=True)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)
    return dataset


def synchronize_batch_norm(model, strategy):
    """Makes a model's BatchNorm layers use the statistics of the global batch.

    Under `MirroredStrategy` or `MultiWorkerMirroredStrategy` with several
    replicas, each `BatchNormalization` layer of `model` (nested models
    included) is set to `synchronized=True`: in training, its batch mean and
    variance are all-reduced over every replica (3 all-reduces per layer and
    step, and their gradients), so each replica normalises with the global
    batch's statistics, as one process on that batch would, and the moving
    statistics are the same on every replica and every worker. Without it, a
    replica normalises with the statistics of its own share of the batch
    (noisy at small shares) and each worker keeps its own moving averages, so
    the trained model depends on the number of replicas. One replica and other
    strategies leave `model` unchanged. Call it before the first training step
    (the flag is read when the step is traced).

    Args:
        model: A Keras model.
        strategy: The `tf.distribute.Strategy` that will train it.

    Returns:
        The number of layers set to synchronise.
    """
    mirrored = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    if not isinstance(strategy, mirrored) or strategy.num_replicas_in_sync == 1:
        return 0
    layers = list(_batch_norms(model))
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def _batch_norms(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer
    for inner in getattr(layer, "layers", ()):  # a model's layers, nested models' included
        yield from _batch_norms(inner)


def is_tpu_strategy(strategy):
    """Whether `strategy` is a TPU strategy (any of TensorFlow's TPUStrategy classes)."""
    return any(cls.__name__.startswith("TPUStrategy") for cls in type(strategy).__mro__)


def _machines(strategy):
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)


def _mirrored_devices():
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def _mirrored_strategy(devices):
    key = ("mirrored", tuple(devices))
    if key not in _CREATED:
        _CREATED[key] = tf.distribute.MirroredStrategy(devices)
    return _CREATED[key]


def _tpu_strategy(address):
    key = ("tpu", address)
    if key not in _CREATED:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver.connect(tpu=address)
        _CREATED[key] = tf.distribute.TPUStrategy(resolver)
    return _CREATED[key]


def _multi_worker_strategy():
    if "multiworker" not in _CREATED:
        if not os.environ.get("TF_CONFIG") and "SLURM_PROCID" in os.environ:
            # A task of `srun`: the cluster is the job step's (SlurmClusterResolver).
            os.environ["TF_CONFIG"] = multiworker.tf_config_from_slurm()
        tf_config = check_tf_config(os.environ.get("TF_CONFIG"))
        multiworker.patch_keras()  # Keras 3 cannot `fit` across workers without it (keras-team/keras#20585)
        try:
            with multiworker.watch_cluster_start(tf_config):
                _CREATED["multiworker"] = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise StrategyError(
                f"strategy = 'multiworker' could not start ({e}). It must be created before "
                "TensorFlow runs anything: call kdkeras.distribute.get_strategy('multiworker') "
                "first thing in the program (the kdkeras command does)."
            ) from None
    return _CREATED["multiworker"]
