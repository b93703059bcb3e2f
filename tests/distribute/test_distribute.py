"""tf.distribute: strategy choice, the mirrored Distiller against one device, config and CLI.

TensorFlow splits a CPU into logical devices only before it initialises them,
so the mirrored checks run once, in a subprocess whose CPU is split in two, and
the tests below read its results.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kdkeras import cli, registry
from kdkeras.config import ConfigError, load_config
from kdkeras.distribute import launch
from kdkeras.distribute import strategy as distribute

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NPZ = os.path.join(REPO, "kdkeras", "data", "bundled", "pneumoniamnist.npz")

# The Distiller's ways to distil, each checked under mirrored against one device: every
# registered distillation term (read from the registry, so a new one is checked the moment
# it is registered), and the Distiller's other inputs: a function loss, every registered
# feature loss, several teachers, cached logits, a student at its own input.
TERM_VARIANTS = registry.DISTILLATION_TERMS.names()
VARIANTS = TERM_VARIANTS + (
    "function_loss", "feature_matches", "two_teachers", "cached_teacher_logits", "different_views",
)

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    from kdkeras.distribute import strategy as distribute
    from kdkeras import registry
    from kdkeras.distillation import losses as kd_losses
    from kdkeras.workflow import training
    from kdkeras.config import ConfigError, from_dict
    from kdkeras.distillation.distiller import Distiller
    from kdkeras.files import load_model
    from kdkeras.distillation.features import FeatureMatch
    from kdkeras.workflow.fit_metrics import fit_metrics

    npz_path, runs_dir, out_path, variants = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    npz = np.load(npz_path)
    x = npz["train_images"][:16, ..., None].astype("float32")
    y = npz["train_labels"][:16, 0].astype("int32")
    multi_hot = np.random.default_rng(0).integers(0, 2, (16, 3)).astype("float32")
    weights = np.linspace(0.5, 1.5, 16).astype("float32")


    @keras.saving.register_keras_serializable(package="test_distribute")
    def logit_mse(teacher_logits, student_logits):
        return keras.ops.mean(keras.ops.square(teacher_logits - student_logits), axis=-1)


    # Each registered term at its own defaults; a sigmoid term distils multi-hot labels.
    VARIANTS = {
        name: {"loss": lambda name=name: registry.DISTILLATION_TERMS.get(name),
               "multi_label": registry.DISTILLATION_TERMS.get(name).activation == "sigmoid"}
        for name in registry.DISTILLATION_TERMS.names()
    }
    VARIANTS.update({
        "function_loss": {"loss": lambda: kd_losses.FunctionLoss(logit_mse)},
        "feature_matches": {
            "features": lambda: [FeatureMatch("conv", "conv", kind) for kind in registry.FEATURE_LOSSES.names()]
        },
        "two_teachers": {"teachers": 2},
        "cached_teacher_logits": {"cached": True},
        # A 28-px teacher and a 16-px RGB student, each reading its own view of the batch.
        "different_views": {"student_shape": (16, 16, 3)},
        # Not a way to distil: the student with BatchNorm, whose statistics stay per replica.
        "batchnorm_student": {"batchnorm": True},
    })


    def net(width, seed, num_classes, regularizer=None, batchnorm=False, shape=(28, 28, 1)):
        # No BatchNorm or dropout: a replica's half batch must give the same logits as the whole.
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(shape)
        h = keras.layers.Rescaling(1 / 255)(inputs)
        h = keras.layers.Conv2D(width, 3, activation="relu", kernel_regularizer=regularizer, name="conv")(h)
        if batchnorm:
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(num_classes, kernel_regularizer=regularizer)(h))


    def replica_shares(term, replicas):
        # A batch-level term (DIST's intra-class relation) is computed on each replica's share of the
        # batch, as documented; on one device this subclass computes it the same way, share by share.
        base = type(term)

        class Shares(base):
            def call(self, y_true, y_pred):
                size = keras.ops.shape(y_pred)[0] // replicas
                share = lambda t, i: tf.nest.map_structure(lambda a: a[i * size:(i + 1) * size], t)
                return keras.ops.concatenate(
                    [base.call(self, share(y_true, i), share(y_pred, i)) for i in range(replicas)], axis=0
                )

        return Shares.from_config(term.get_config())


    def distil(strategy, variant, num_classes, metrics, evaluate):
        spec = VARIANTS[variant]
        loss = spec["loss"]() if "loss" in spec else None
        if getattr(loss, "batch_level", False) and strategy.num_replicas_in_sync == 1:
            loss = replica_shares(loss, 2)
        labels = multi_hot if spec.get("multi_label") else y
        with strategy.scope():
            teachers = [net(8, seed=1 + i, num_classes=num_classes) for i in range(spec.get("teachers", 1))]
            student = net(4, seed=9, num_classes=num_classes, regularizer=keras.regularizers.L2(0.01),
                          batchnorm=spec.get("batchnorm", False), shape=spec.get("student_shape", (28, 28, 1)))
            distiller = Distiller(
                student=student,
                teacher=teachers if len(teachers) > 1 else teachers[0],
                features=spec["features"]() if "features" in spec else None,
            )
            distiller.compile(
                optimizer=keras.optimizers.SGD(0.5),
                metrics=metrics,
                student_loss_fn=keras.losses.BinaryCrossentropy(from_logits=True) if spec.get("multi_label") else None,
                distillation_loss_fn=loss,
                alpha=0.3,
                # A registered term trains at its own temperature; the shortcut's KD at 2.
                temperature=None if "loss" in spec else 2.0,
            )
        inputs = {"inputs": x, "teacher_logits": teachers[0](x).numpy()} if spec.get("cached") else x
        initial = [v.numpy() for v in distiller.trainable_variables]
        evaluated = distiller.evaluate(
            inputs, labels, sample_weight=weights, batch_size=16, verbose=0, return_dict=True
        ) if evaluate else {}
        history = distiller.fit(
            inputs, labels, sample_weight=weights, batch_size=16, epochs=1, shuffle=False, verbose=0
        )
        final = [v.numpy() for v in distiller.trainable_variables]
        return {
            "evaluate": evaluated,
            "fit": {key: values[-1] for key, values in history.history.items()},
            "replicas": distiller.distribute_strategy.num_replicas_in_sync,
            "variables": len(final),
            "step": [float(np.abs(a - b).max()) for a, b in zip(final, initial)],
            "weights": final,
        }


    def compare(variant, num_classes=3, metrics=None, evaluate=False):
        one, two = (
            distil(strategy, variant, num_classes, metrics, evaluate)
            for strategy in (distribute.get_strategy("none"), distribute.get_strategy("mirrored"))
        )
        weight_gap = max(float(np.abs(a - b).max()) for a, b in zip(one.pop("weights"), two.pop("weights")))
        return {"single": one, "mirrored": two, "weight_gap": weight_gap}


    mirrored = distribute.get_strategy("mirrored")
    results = {
        "describe": {name: distribute.describe(distribute.get_strategy(name)) for name in ("mirrored", "auto", "none")},
        "same_object": distribute.get_strategy("mirrored") is mirrored,
        "variants": {
            name: compare(name)
            if name != "knowledge_distillation"
            else compare(name, num_classes=2, metrics=fit_metrics(2, "binary-class"), evaluate=True)
            for name in variants
        },
        "batchnorm_student": compare("batchnorm_student"),
    }

    config = {
        "name": "mirrored",
        "strategy": "mirrored",
        "data": {"loader": "medmnist", "flag": "pneumoniamnist", "root": "@bundled", "batch_size": 33, "limit": 64},
        "teacher": {"model": "cnn_small"},
        "student": {"model": "cnn_small", "options": {"filters": [4, 8, 8]}},
        "distill": {"epochs": 1},
    }
    try:
        training.run_phase(from_dict(config), "distill", runs_dir, verbose=0)
    except ConfigError as e:
        results["odd_batch_error"] = str(e)
    config["data"]["batch_size"] = 32


    def run_phase(strategy, student):
        # The same phase, teacher and global batch on one device and on two replicas.
        name = f"{strategy}_{student['model']}"
        os.makedirs(os.path.join(runs_dir, name))
        net(8, seed=1, num_classes=2).save(os.path.join(runs_dir, name, "teacher.keras"))
        lines = []
        # Unshuffled: tf.distribute rebuilds the input pipeline, so a seeded shuffle orders the same
        # images differently than on one device (repeatable per strategy, not across strategies).
        phase = {**config, "name": name, "strategy": strategy, "student": student,
                 "data": {**config["data"], "shuffle": False}}
        metrics = training.run_phase(from_dict(phase), "distill", runs_dir, verbose=0, log=lines.append)
        with open(os.path.join(runs_dir, name, "distilled_history.csv")) as f:
            header, *rows = f.read().strip().splitlines()
        history = {key: [float(row.split(",")[i]) for row in rows] for i, key in enumerate(header.split(","))}
        weights = load_model(os.path.join(runs_dir, name, "distilled.keras")).get_weights()
        return {"log": lines, "acc": metrics["acc"], "auc": metrics["auc"], "epochs_run": metrics["epochs_run"],
                "history": history}, weights


    (one, one_weights), (two, two_weights) = (
        run_phase(strategy, {"model": "dsnet", "options": {"dropout": 0.0}}) for strategy in ("none", "mirrored")
    )
    results["run_phase"] = {
        "single": one, "mirrored": two,
        "weight_gap": max(float(np.abs(a - b).max()) for a, b in zip(one_weights, two_weights)),
        "weight_scale": max(float(np.abs(a).max()) for a in one_weights),
    }
    with open(out_path, "w") as f:
        json.dump(results, f)
    """
)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Results of the mirrored checks, run once on a CPU split into 2 logical devices."""
    tmp = tmp_path_factory.mktemp("mirrored")
    script = tmp / "mirrored_checks.py"
    script.write_text(MIRRORED_SCRIPT)
    out = tmp / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ["PYTHONPATH"]]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    for variable in ("TPU_NAME", "COLAB_TPU_ADDR", "TF_CONFIG"):
        env.pop(variable, None)
    result = subprocess.run(
        [sys.executable, str(script), NPZ, str(tmp / "runs"), str(out), ",".join(VARIANTS)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_mirrored_strategy_uses_both_logical_devices(mirrored):
    assert mirrored["describe"]["mirrored"] == "MirroredStrategy: 2 replicas on CPU:0, CPU:1"
    # No TPU and no GPU here: "auto" is TensorFlow's default strategy.
    assert mirrored["describe"]["auto"] == "default strategy: 1 replica on CPU:0"
    assert mirrored["describe"]["none"] == "default strategy: 1 replica on CPU:0"
    assert mirrored["same_object"]


@pytest.mark.slow
def test_mirrored_losses_and_metrics_match_one_device(mirrored):
    run = mirrored["variants"]["knowledge_distillation"]
    assert (run["single"]["replicas"], run["mirrored"]["replicas"]) == (1, 2)
    for mode in ("evaluate", "fit"):
        single, split = run["single"][mode], run["mirrored"][mode]
        assert set(single) == {"loss", "student_loss", "distillation_loss", "accuracy", "auc"}
        for key in single:
            assert split[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), (mode, key)
    single = run["single"]["evaluate"]
    assert single["distillation_loss"] > 1e-3 and 0.0 < single["auc"] < 1.0
    # The total holds the student's L2 term once, not once per replica.
    assert single["loss"] > 0.3 * single["student_loss"] + 0.7 * single["distillation_loss"] + 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_mirrored_distillation_matches_one_device(mirrored, variant):
    run = mirrored["variants"][variant]
    assert (run["single"]["replicas"], run["mirrored"]["replicas"]) == (1, 2)
    single, split = run["single"]["fit"], run["mirrored"]["fit"]
    assert {"loss", "student_loss", "distillation_loss"} <= set(single)
    assert set(split) == set(single)
    for key in single:
        assert split[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    assert single["distillation_loss"] > 1e-4
    # One SGD step on the 16 images: the split step moves every variable as the whole one.
    assert run["single"]["variables"] == run["mirrored"]["variables"]
    if variant == "feature_matches":
        assert single["feature_loss"] > 1e-3
        assert run["single"]["variables"] == 8  # the student's 4 and two 1x1 adapters (hint, cosine)
    else:
        assert run["single"]["variables"] == 4
    assert min(run["single"]["step"]) > 1e-5
    # Standardized logits and DIST's Pearson correlations divide by a standard deviation, which scales
    # the float32 rounding of the replicas' summed gradients up (3.5e-5 and 2.2e-5 seen); statistics
    # of the wrong share of the batch would be off by far more.
    term = registry.DISTILLATION_TERMS.get(variant) if variant in TERM_VARIANTS else None
    divides = term is not None and (term.standardize or term.batch_level)
    assert run["weight_gap"] < (1e-4 if divides else 1e-5)


def test_every_kd_loss_is_checked_under_mirrored():
    # The variants come from the registries; a Loss class of kdkeras.distillation that no registry
    # builds would escape them. Only the function wrapper has no entry (the function_loss variant).
    import importlib
    import pkgutil

    import keras

    import kdkeras.distillation as package
    from kdkeras.distillation.term import DistillationTerm

    defined = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        defined |= {
            obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, keras.losses.Loss) and obj.__module__ == module.__name__
        }
    built = {type(kind.get(name)) for kind in (registry.DISTILLATION_TERMS, registry.FEATURE_LOSSES) for name in kind.names()}
    unchecked = sorted(c.__name__ for c in defined - built - {DistillationTerm} if c.__name__ != "FunctionLoss")
    assert not unchecked, f"register {unchecked} (kdkeras.registry), so the mirrored check and the conformance suite see them"
    assert {"DIST", "LogitStandardizedKD", "DecoupledKD", "HintLoss"} <= {c.__name__ for c in built}


@pytest.mark.slow
def test_run_phase_distils_under_mirrored_strategy(mirrored):
    run = mirrored["run_phase"]
    assert "[distilled] MirroredStrategy: 2 replicas on CPU:0, CPU:1; global batch 32 = 16 per replica" in run["mirrored"]["log"]
    assert "[distilled] default strategy: 1 replica on CPU:0; global batch 32 = 32 per replica" in run["single"]["log"]
    assert run["single"]["epochs_run"] == run["mirrored"]["epochs_run"] == 1
    single, split = run["single"]["history"], run["mirrored"]["history"]
    assert set(split) == set(single) >= {"loss", "student_loss", "distillation_loss", "val_loss", "val_auc"}
    assert all(np.isfinite(values).all() for values in split.values())
    assert split["epoch"] == [1.0] and split["distillation_loss"][0] > 1e-4


@pytest.mark.slow
def test_run_phase_under_mirrored_strategy_equals_one_device(mirrored):
    # dsnet without dropout has no per-replica state: two replicas of 16 images make the epoch,
    # the saved student and the test metrics of one device on the batch of 32.
    run = mirrored["run_phase"]
    single, split = run["single"]["history"], run["mirrored"]["history"]
    assert split == {key: pytest.approx(values, rel=1e-5, abs=1e-6) for key, values in single.items()}
    assert (run["mirrored"]["acc"], run["mirrored"]["auc"]) == pytest.approx(
        (run["single"]["acc"], run["single"]["auc"]), abs=1e-6)
    assert run["weight_gap"] < 1e-5 * run["weight_scale"]


@pytest.mark.slow
def test_batchnorm_statistics_stay_per_replica(mirrored):
    # The documented difference: a BatchNorm student normalises each replica's 8 images by
    # their own mean and variance, so its loss and step differ from one device's 16.
    run = mirrored["batchnorm_student"]
    single, split = run["single"]["fit"], run["mirrored"]["fit"]
    assert set(split) == set(single)
    assert abs(split["student_loss"] - single["student_loss"]) > 1e-4
    assert abs(split["distillation_loss"] - single["distillation_loss"]) > 1e-4
    assert run["weight_gap"] > 1e-4


@pytest.mark.slow
def test_run_phase_rejects_a_batch_that_does_not_split(mirrored):
    assert mirrored["odd_batch_error"] == (
        "data.batch_size = 33 is the global batch, split over the 2 replicas of MirroredStrategy: "
        "it must be a multiple of 2. Use 32 or 34."
    )


MULTIWORKER_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import tensorflow as tf

    # Keras's own trainer first: the strategy straight from TensorFlow, kdkeras's patch not applied.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    import keras
    import numpy as np

    from kdkeras.distribute import strategy as distribute
    from kdkeras.distribute import multiworker

    result = {"describe": distribute.describe(strategy), "chief": multiworker.is_chief(strategy)}
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.ones((32, 4), "float32"), np.zeros(32, "int32"))
    ).batch(16)
    prepared = distribute.prepare_dataset(dataset, strategy, 16)
    result["shard_policy"] = prepared.options().experimental_distribute.auto_shard_policy.name


    def fit():
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        try:
            return f"trained, loss {model.fit(prepared, epochs=1, verbose=0).history['loss'][0]:.4f}"
        except Exception as e:
            return f"{type(e).__name__}: {e}"[:200]


    result["keras_fit"] = fit()
    multiworker.patch_keras()
    result["patched_fit"] = fit()
    with open(sys.argv[1], "w") as f:
        json.dump(result, f)
    """
)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """What each of two local MultiWorkerMirroredStrategy workers reports."""
    tmp = tmp_path_factory.mktemp("multiworker")
    script = tmp / "worker.py"
    script.write_text(MULTIWORKER_SCRIPT)
    processes = []
    with launch.reserve_ports(2) as ports:
        for index, tf_config in enumerate(launch.local_tf_configs(ports)):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ["PYTHONPATH"]]), "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(tf_config)}
            processes.append(subprocess.Popen(
                [sys.executable, str(script), str(tmp / f"worker{index}.json")],
                cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            ))
        launch.wait_listening(ports, processes, timeout=180)
    try:
        errors = [p.communicate(timeout=180)[1] for p in processes]
    finally:
        launch.wait_all(processes, timeout=1)
    for process, error in zip(processes, errors):
        assert process.returncode == 0, error[-3000:]
    return [json.loads((tmp / f"worker{index}.json").read_text()) for index in range(2)]


@pytest.mark.slow
def test_two_local_workers_form_one_cluster(two_workers):
    for index, worker in enumerate(two_workers):
        assert worker["describe"] == (
            f"MultiWorkerMirroredStrategy: 2 replicas on 2 machines; this is worker {index}, on CPU:0"
        )
        assert worker["shard_policy"] == "DATA"
        assert worker["chief"] == (index == 0)


@pytest.mark.slow
def test_keras_cannot_fit_across_workers_without_kdkeras_patch(two_workers):
    for worker in two_workers:
        # The canary of keras-team/keras#20585: once Keras's own fit trains here, remove
        # kdkeras.distribute.multiworker.patch_keras (and this test's expectation).
        assert worker["keras_fit"].startswith("ValueError: Attempt to convert a value (PerReplica")
        assert worker["patched_fit"].startswith("trained, loss ")
    assert two_workers[0]["patched_fit"] == two_workers[1]["patched_fit"]


class TPUStrategyFake:
    """Stands in for a TPUStrategy (`is_tpu_strategy` goes by class name, as Keras does)."""

    num_replicas_in_sync = 8


def test_tpu_batches_are_static_and_drop_the_remainder():
    import tensorflow as tf

    dataset = tf.data.Dataset.range(10).batch(4)
    prepared = distribute.prepare_dataset(dataset, TPUStrategyFake(), 4)
    assert prepared.element_spec.shape.as_list() == [4]
    assert [b.tolist() for b in prepared.as_numpy_iterator()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert distribute.prepare_dataset(dataset, tf.distribute.get_strategy(), 4) is dataset
    assert distribute.is_tpu_strategy(TPUStrategyFake())
    assert not distribute.is_tpu_strategy(tf.distribute.get_strategy())


@pytest.mark.parametrize(
    "batch_size, message",
    [
        (100, "data.batch_size = 100 is the global batch, split over the 8 replicas of TPUStrategyFake: "
              "it must be a multiple of 8. Use 96 or 104."),
        (4, "must be a multiple of 8. Use 8."),
    ],
)
def test_global_batch_must_split_evenly(batch_size, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        distribute.replica_batch_size(batch_size, TPUStrategyFake())


def test_global_batch_is_split_over_the_replicas():
    import tensorflow as tf

    assert distribute.replica_batch_size(128, TPUStrategyFake()) == 16
    assert distribute.replica_batch_size(33, tf.distribute.get_strategy()) == 33


def test_one_replica_keeps_batch_norm_per_batch():
    import keras
    import tensorflow as tf

    inputs = keras.Input((4, 4, 1))
    inner = keras.Sequential([keras.layers.BatchNormalization()])
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inner(inputs)))
    # One replica: nothing to synchronise, and the one-process numerics stay Keras's own.
    assert distribute.synchronize_batch_norm(model, tf.distribute.get_strategy()) == 0
    assert [layer.synchronized for layer in distribute._batch_norms(model)] == [False, False]


def test_unknown_strategy_is_rejected():
    message = "strategy = 'gpu' is unknown. Allowed: auto, mirrored, multiworker, tpu, none."
    with pytest.raises(distribute.StrategyError, match=re.escape(message)):
        distribute.get_strategy("gpu")


def test_tpu_without_a_tpu_says_what_to_do(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    assert distribute.tpu_address() is None
    message = "no TPU is attached. On Colab pick Runtime > Change runtime type > TPU"
    with pytest.raises(distribute.StrategyError, match=re.escape(message)):
        distribute.get_strategy("tpu")
    # A StrategyError is a ConfigError: the CLI prints it and exits with status 2.
    assert issubclass(distribute.StrategyError, ConfigError)


def test_tpu_address_from_the_environment(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert distribute.tpu_address() == "grpc://10.0.0.2:8470"
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert distribute.tpu_address() == "my-tpu"


def test_multiworker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    message = "TF_CONFIG is not set: strategy = 'multiworker' reads the cluster"
    with pytest.raises(distribute.StrategyError, match=re.escape(message)):
        distribute.get_strategy("multiworker")


def test_valid_tf_config_is_parsed():
    text = json.dumps({
        "cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"]},
        "task": {"type": "worker", "index": 1},
    })
    assert distribute.check_tf_config(text)["task"] == {"type": "worker", "index": 1}


def _tf_config(cluster, task_type="worker", index=0):
    return {"cluster": cluster, "task": {"type": task_type, "index": index}}


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{cluster: }", "is not valid JSON"),
        ({"task": {"type": "worker", "index": 0}}, "needs a 'cluster' object"),
        (_tf_config({"ps": ["h:1"]}, "ps"), "cluster has unknown job(s) 'ps'"),
        (_tf_config({"worker": []}), "cluster lists no 'worker'"),
        (_tf_config({"worker": "h:1"}), "cluster.worker must be a non-empty list"),
        (_tf_config({"worker": ["h1:1", "h2"]}), "cluster.worker has 'h2', which is not a 'host:port'"),
        (_tf_config({"chief": ["a:1", "b:1"]}, "chief"), "cluster.chief must list one address, got 2"),
        ({"cluster": {"worker": ["h:1"]}}, "task must be {'type': one of ['worker'], 'index': i}"),
        (_tf_config({"worker": ["h:1"]}, "chief"), "task must be {'type'"),
        (_tf_config({"worker": ["h:1", "h:2"]}, index=2), "task.index must be an int in [0, 1]"),
        (_tf_config({"worker": ["h:1"]}, index=True), "task.index must be an int in [0, 0]"),
    ],
)
def test_bad_tf_config_names_the_field(tf_config, message):
    text = tf_config if isinstance(tf_config, str) else json.dumps(tf_config)
    with pytest.raises(distribute.StrategyError, match=re.escape(message)) as raised:
        distribute.check_tf_config(text)
    assert "Example for the first of two machines" in str(raised.value)


@pytest.mark.slow
def test_cli_strategy_override_is_validated(capsys):
    args = cli.build_parser().parse_args(["distill", "--strategy", "mirrored"])
    assert cli.overrides_from_args(args) == {"strategy": "mirrored"}
    assert cli.main(["student", "--config", "quickstart", "--strategy", "gpu"]) == 2
    assert "strategy = 'gpu' is unknown. Allowed: auto, mirrored, multiworker, tpu, none." in capsys.readouterr().err


def test_shipped_configs_keep_the_default_strategy():
    assert load_config("quickstart").strategy == "auto"
