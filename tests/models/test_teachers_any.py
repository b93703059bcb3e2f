"""Bring the teacher you have: keras:<Application>, hub:<preset> and a model file of your own."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from kdkeras import cli
from kdkeras.config import ConfigError, load_config
from kdkeras.models import WeightsUnavailableError, applications, get_model, get_spec
from kdkeras.models import files as model_files
from kdkeras.workflow.callbacks import UnfreezeBase

TINY = """
name = "own"
seed = 0

[data]
loader = "medmnist"
flag = "pneumoniamnist"
root = "@bundled"
batch_size = 32
limit = 64

[teacher]
model = "{teacher}"
epochs = {epochs}
{extra}

[student]
model = "cnn_small"
options = {{ filters = [4, 8] }}
epochs = 1

[distill]
temperature = 2.0
"""


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def test_every_keras_application_is_a_model_name():
    expected = {
        name for name, value in vars(keras.applications).items()
        if name[0].isupper() and callable(value)
    }
    assert set(applications.application_names()) == expected
    assert {"DenseNet121", "ConvNeXtTiny", "EfficientNetV2B0", "MobileNetV3Small", "Xception"} <= expected
    assert applications.family("DenseNet121") == "densenet"
    assert applications.family("MobileNetV3Large") == "mobilenet_v3"
    # The application's own arguments become options of the spec.
    options = get_spec("keras:MobileNetV3Small").options
    assert options["alpha"] == 1.0 and options["minimalistic"] is False
    assert options["trainable"] == "all" and options["unfreeze_after"] == 0
    # Every application is a spec, each option named once (MobileNet's own top `dropout` once collided).
    for name in applications.application_names():
        assert get_spec(f"keras:{name}").options["dropout"] == 0.2
    with pytest.raises(ValueError, match="Unknown Keras application keras:DenseNet12. Did you mean keras:DenseNet121"):
        get_spec("keras:DenseNet12")


def test_application_preprocessing_is_the_familys_own_function():
    images = _pixels((2, 8, 8, 1))
    rgb = np.repeat(images, 3, axis=-1)
    for family in ("densenet", "resnet50", "inception_v3", "mobilenet_v3"):
        layer = applications.ApplicationPreprocessing(family)
        expected = getattr(keras.applications, family).preprocess_input(rgb.copy())
        np.testing.assert_allclose(np.asarray(layer(images)), expected, rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="not a keras.applications module"):
        applications.ApplicationPreprocessing("vgg17")


def test_keras_application_is_a_logits_model_that_saves_and_loads(tmp_path):
    model = get_model("keras:MobileNetV3Small", (32, 32, 1), num_classes=3, minimalistic=True, alpha=0.75)
    assert model.output_shape == (None, 3)
    assert model.get_layer("preprocessing").family == "mobilenet_v3"
    assert model.layers[-1].name == "logits" and model.get_layer("classifier").activation.__name__ == "linear"
    images = _pixels((2, 32, 32, 1))
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-6)


def test_trainable_option_freezes_the_base():
    head = get_model("keras:MobileNetV3Small", (32, 32, 3), 2, minimalistic=True, trainable="head")
    assert [v.path for v in head.trainable_variables] == ["classifier/kernel", "classifier/bias"]
    last = get_model("keras:MobileNetV3Small", (32, 32, 3), 2, minimalistic=True, trainable="last:3")
    base = last.get_layer("base")
    assert [layer.trainable for layer in base.layers[-3:]] == [True] * 3
    assert not any(layer.trainable for layer in base.layers[:-3])
    with pytest.raises(ValueError, match="trainable must be 'all', 'head' or 'last:N'"):
        get_model("keras:MobileNetV3Small", (32, 32, 3), 2, trainable="some")
    with pytest.raises(ValueError, match="trainable = 'all' freezes nothing"):
        get_model("keras:MobileNetV3Small", (32, 32, 3), 2, unfreeze_after=2)


def test_imagenet_weights_offline_say_where_to_put_the_file():
    # tests/offline refuses every connection: the download fails as on an air-gapped machine.
    with pytest.raises(WeightsUnavailableError) as error:
        get_model("keras:DenseNet121", (32, 32, 3), 2, weights="imagenet")
    message = str(error.value)
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "~/.keras/models/" in message and "keras.utils.get_file's cache" in message
    assert "weights = '/path/to/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5'" in message


@pytest.mark.slow
def test_unfreeze_after_unfreezes_and_recompiles():
    model = get_model("keras:MobileNetV3Small", (32, 32, 1), 2, minimalistic=True, alpha=0.5, trainable="head")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    base = model.get_layer("base")
    start = [np.array(v) for v in base.weights]
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            moved = max(float(np.abs(a - np.array(v)).max()) for a, v in zip(start, base.weights))
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            seen.append((len(self.model.trainable_variables), moved, rate, "accuracy" in logs))

    lines = []
    images, labels = _pixels((16, 32, 32, 1)), np.arange(16) % 2
    model.fit(images, labels, epochs=3, batch_size=8, verbose=0, callbacks=[UnfreezeBase(base, 1, log=lines.append), Record()])
    (frozen, moved0, rate0, _), (thawed, moved1, rate1, metrics), (_, moved2, rate2, _) = seen
    assert frozen == 2 and moved0 == 0.0 and rate0 == pytest.approx(1e-3)
    assert thawed == len(model.trainable_variables) > 2 and moved1 > 0 and moved2 > moved1
    assert rate1 == rate2 == pytest.approx(1e-4) and metrics
    assert len(lines) == 1 and lines[0].startswith("epoch 2: unfroze base (2 -> ")


def test_mobile_students_at_their_stated_parameter_counts():
    counts = {
        ("mobilenetv3_small", 0.5): 131_618,
        ("mobilenetv3_small", 0.75): 274_666,
        ("mobilenetv3_small", 1.0): 442_154,
        ("mobilenetv2", 0.35): 412_770,
    }
    for (name, alpha), count in counts.items():
        assert get_model(name, (64, 64, 1), 2, alpha=alpha).count_params() == count, (name, alpha)
        assert f"{count:,}" in get_spec(name).builder.__doc__, (name, alpha)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv3_small", "mobilenetv2"])
def test_mobile_students_export_to_int8_tflite(tmp_path, name):
    from kdkeras import export

    model = get_model(name, (32, 32, 1), 2)
    path = str(tmp_path / "student.keras")
    model.save(path)
    images = _pixels((16, 32, 32, 1))
    export.export_student(path, tmp_path / "out", representative_data=images, formats=("tflite_int8",))
    lite = export.TFLiteModel(str(tmp_path / "out" / "model_int8.tflite"))
    assert lite.input_dtype == np.int8
    probabilities = lite(images)
    expected = keras.ops.softmax(model(images)).numpy()
    assert probabilities.shape == (16, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.05)
    assert np.abs(probabilities - expected).max() < 0.1


def _save_teacher(path, input_shape=(28, 28, 1), classes=2, activation=None):
    model = get_model("cnn_small", input_shape, classes, filters=[4, 8])
    if activation:
        outputs = keras.layers.Activation(activation, name="probabilities")(model.output)
        model = keras.Model(model.input, outputs)
    if str(path).endswith(".h5") or str(path).endswith(".keras"):
        model.save(path)
    else:
        model.export(str(path))
    return model


@pytest.mark.parametrize("suffix", [".keras", ".h5", "saved_model"])
def test_model_files_load_as_teachers(tmp_path, suffix):
    path = str(tmp_path / f"teacher{suffix}")
    model = _save_teacher(path)
    assert model_files.is_model_path(path)
    loaded = model_files.load_model_file(path)
    images = _pixels((3, 28, 28, 1))
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), atol=1e-5)


def test_model_file_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"teacher.keras' does not exist"):
        model_files.load_model_file(str(tmp_path / "teacher.keras"))
    path = str(tmp_path / "soft.keras")
    _save_teacher(path, activation="softmax")
    with pytest.raises(ValueError, match="ends in a softmax .* returns probabilities"):
        model_files.load_model_file(path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="folder without saved_model.pb"):
        model_files.load_model_file(str(tmp_path / "folder"))


def _config(tmp_path, teacher, epochs, extra=""):
    path = tmp_path / "own.toml"
    path.write_text(TINY.format(teacher=teacher, epochs=epochs, extra=extra))
    return str(path)


def test_config_checks_a_teacher_file_before_loading_data(tmp_path):
    with pytest.raises(ConfigError, match=r"\[teacher\] model = '.*missing.keras': '.*missing.keras' does not exist"):
        load_config(_config(tmp_path, tmp_path / "missing.keras", 0))
    _save_teacher(str(tmp_path / "t.keras"))
    assert load_config(_config(tmp_path, tmp_path / "t.keras", 0)).teacher.epochs == 0
    with pytest.raises(ConfigError, match=r"\[teacher\] epochs = 0 must be >= 1 \(>= 0 for a teacher read from a file"):
        load_config(_config(tmp_path, "cnn_small", 0))
    with pytest.raises(ConfigError, match="keras:DenseNet12. Did you mean keras:DenseNet121"):
        load_config(_config(tmp_path, "keras:DenseNet12", 1))


@pytest.mark.slow
def test_own_teacher_is_evaluated_then_distilled_through_the_cli(tmp_path):
    # At 32 px on 28 px data: the teacher reads its own resized view (item 1).
    teacher = str(tmp_path / "mine.keras")
    _save_teacher(teacher, (32, 32, 1))
    config = _config(tmp_path, teacher, 0)
    runs = str(tmp_path / "runs")
    assert cli.main(["teacher", "--config", config, "--runs-dir", runs]) == 0
    metrics = json.load(open(os.path.join(runs, "own", "teacher_metrics.json")))
    assert metrics["architecture"] == teacher and metrics["run"]["epochs_run"] == 0
    assert metrics["n"] == 64 and 0.0 <= metrics["auc"] <= 1.0
    saved = keras.models.load_model(os.path.join(runs, "own", "teacher.keras"))
    images = _pixels((2, 32, 32, 1))
    np.testing.assert_allclose(np.asarray(saved(images)), np.asarray(keras.models.load_model(teacher)(images)), atol=1e-6)
    assert cli.main(["distill", "--config", config, "--runs-dir", runs]) == 0
    assert os.path.exists(os.path.join(runs, "own", "distilled_metrics.json"))


def test_own_teacher_of_the_wrong_shape_or_classes_is_refused(tmp_path, capsys):
    for shape, classes, extra, expected in (
        ((32, 32, 1), 2, "image_size = 28",
         "takes inputs of shape (32, 32, 1) but [teacher] asks for image_size = 28, channels = 0: "
         "set image_size = [32, 32] and channels = 1, or leave both out"),
        ((28, 28, 1), 3, "",
         "predicts 3 classes but pneumoniamnist has 2 (normal, pneumonia): use a model trained on these classes"),
    ):
        teacher = str(tmp_path / f"t{shape[0]}_{classes}.keras")
        _save_teacher(teacher, shape, classes)
        config = _config(tmp_path, teacher, 0, extra)
        assert cli.main(["teacher", "--config", config, "--runs-dir", str(tmp_path)]) != 0
        assert expected in capsys.readouterr().err


def _write_kermany(root, per_class=12):
    """A Kermany-layout tree of gray JPEGs, one patient per pneumonia image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 4), ("test", 4)):
        for label, name in (("NORMAL", "IM-{:04d}-0001.jpeg"), ("PNEUMONIA", "person{}_bacteria_1.jpeg")):
            folder = os.path.join(root, split, label)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                # Brighter pneumonia images: the classes can be told apart.
                pixels = rng.integers(30, 150, (40, 40)) + (60 if label == "PNEUMONIA" else 0)
                index = i + {"train": 0, "val": 1000, "test": 2000}[split]
                Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, name.format(index)))
    return str(root)


def _run_phases(config, runs, overrides, phases=("teacher", "student", "distill")):
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    for phase in phases:
        assert cli.main([phase, "--config", config, "--runs-dir", runs, *sets]) == 0, phase


EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "experiments")


XRAY_RECIPE = os.path.join(EXPERIMENTS, "xray_densenet121_to_mobilenetv3.toml")


def test_xray_densenet_recipe_builds_its_teacher():
    config = load_config(XRAY_RECIPE)
    teacher = get_model(config.teacher.model, (32, 32, config.teacher.channels), 2, **config.teacher.options)
    assert teacher.count_params() == 7_039_554 and teacher.get_layer("base").name == "base"
    # trainable = "head": the ImageNet base stays frozen until unfreeze_after.
    assert [v.path for v in teacher.trainable_variables] == ["classifier/kernel", "classifier/bias"]


@pytest.mark.slow
def test_xray_densenet_recipe_runs_offline_at_a_tiny_size(tmp_path):
    # Every setting of the recipe but the teacher's size: DenseNet-121's 121 layers take minutes to
    # trace on 2 cores (the test above builds it); keras:MobileNet at width 0.25 runs the same
    # keras: path (frozen head, unfreeze at a tenth of the rate, RGB teacher beside a gray student).
    runs = str(tmp_path / "runs")
    _run_phases(XRAY_RECIPE, runs, {
        "data.root": f'"{_write_kermany(tmp_path / "chest_xray")}"', "data.min_val": 1, "data.batch_size": 8,
        "data.image_size": 48, "teacher.weights": '""', "teacher.image_size": 48, "student.image_size": 32,
        "teacher.model": '"keras:MobileNet"', "teacher.options.alpha": 0.25,
        "distill.image_size": 32,
        "teacher.epochs": 2, "teacher.options.unfreeze_after": 1, "distill.epochs": 1,
    }, phases=("teacher", "distill"))  # the student alone adds nothing the distilled student does not show
    folder = os.path.join(runs, "xray_densenet121_to_mobilenetv3")
    teacher = keras.models.load_model(os.path.join(folder, "teacher.keras"))
    distilled = keras.models.load_model(os.path.join(folder, "distilled.keras"))
    assert teacher.input_shape == (None, 48, 48, 3) and teacher.get_layer("base").name == "base"
    assert distilled.input_shape == (None, 32, 32, 1) and distilled.count_params() < 300_000
    with open(os.path.join(folder, "teacher_history.csv")) as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    assert rates == pytest.approx([1e-3, 1e-4])  # the base unfroze after 1 epoch, at a tenth of the rate


@pytest.mark.slow
def test_foundation_recipe_distils_from_a_hub_preset_folder(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        image_shape=(28, 28, 3), position_embedding_shape=(28, 28, 3),
    )
    backbone.save_to_preset(str(tmp_path / "dino"))
    config = os.path.join(EXPERIMENTS, "pneumonia_dinov2_linear_to_cnn.toml")
    runs = str(tmp_path / "runs")
    _run_phases(config, runs, {
        "teacher.model": f'"hub:{tmp_path / "dino"}"', "teacher.image_size": 28, "data.limit": 64,
        "teacher.epochs": 1, "student.epochs": 1, "distill.epochs": 1,
    })
    folder = os.path.join(runs, "pneumonia_dinov2_linear_to_cnn")
    teacher = keras.models.load_model(os.path.join(folder, "teacher.keras"))
    assert teacher.input_shape == (None, 28, 28, 3)
    assert json.load(open(os.path.join(folder, "distilled_metrics.json")))["n"] == 64


def test_hub_preset_folder_as_a_frozen_backbone_with_a_linear_head(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        image_shape=(28, 28, 3), position_embedding_shape=(28, 28, 3),
    )
    backbone.save_to_preset(str(tmp_path / "dino"))
    model = get_model(f"hub:{tmp_path / 'dino'}", (28, 28, 1), 3, head="linear")
    assert [v.path for v in model.trainable_variables] == ["classifier/kernel", "classifier/bias"]
    images = _pixels((2, 28, 28, 1))
    # The linear probe reads the class token of the backbone, on pixels scaled to [0, 1].
    tokens = backbone(np.repeat(images, 3, axis=-1) / 255.0)
    dense = model.get_layer("classifier")
    expected = np.asarray(tokens[:, 0, :]) @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    np.testing.assert_allclose(np.asarray(model(images)), expected, atol=1e-4)
    model.save(tmp_path / "hub.keras")
    reloaded = keras.models.load_model(tmp_path / "hub.keras")
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-5)
    finetune = get_model(f"hub:{tmp_path / 'dino'}", (28, 28, 1), 3, head="finetune")
    assert len(finetune.trainable_variables) > 2
    with pytest.raises(ValueError, match="head must be one of linear, finetune, classifier"):
        get_model(f"hub:{tmp_path / 'dino'}", (28, 28, 1), 3, head="mlp")
    with pytest.raises(ValueError, match="Backbone.from_preset failed: .*folder must hold a preset written by"):
        get_model(f"hub:{tmp_path}", (28, 28, 1), 3)


def test_list_shows_the_model_families(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "keras:<Application>" in out and "DenseNet121, DenseNet169" in out
    assert f"any of the {len(applications.application_names())} keras.applications networks" in out
    assert "hub:<preset>" in out and 'head = "linear"' in out
    assert "path/to/model.keras" in out and "epochs = 0 evaluates it" in out
    assert "mobilenetv3_small" in out and "274,666 parameters" in out


@pytest.mark.slow
def test_own_teacher_with_epochs_is_fine_tuned(tmp_path):
    teacher = str(tmp_path / "mine.keras")
    original = _save_teacher(teacher)
    runs = str(tmp_path / "runs")
    assert cli.main(["teacher", "--config", _config(tmp_path, teacher, 1), "--runs-dir", runs]) == 0
    assert json.load(open(os.path.join(runs, "own", "teacher_metrics.json")))["run"]["epochs_run"] == 1
    tuned = keras.models.load_model(os.path.join(runs, "own", "teacher.keras"))
    kernel = tuned.get_layer("classifier").kernel
    assert np.abs(np.asarray(kernel) - np.asarray(original.get_layer("classifier").kernel)).max() > 0


def test_hub_classifier_head_uses_the_presets_image_classifier(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
    )
    backbone.save_to_preset(str(tmp_path / "resnet"))
    model = get_model(f"hub:{tmp_path / 'resnet'}", (32, 32, 1), 3, head="classifier")
    task = next(layer for layer in model.layers if isinstance(layer, keras_hub.models.ResNetImageClassifier))
    assert task.output_shape == (None, 3) and model.output_shape == (None, 3)
    images = _pixels((2, 32, 32, 1))
    # No softmax: the task's logits, on pixels scaled to [0, 1] (a bare backbone has no converter).
    expected = task(np.repeat(images, 3, axis=-1) / 255.0)
    np.testing.assert_allclose(np.asarray(model(images)), np.asarray(expected), atol=1e-5)


def test_hub_preset_offline_says_how_to_fetch_it():
    pytest.importorskip("keras_hub")
    with pytest.raises(WeightsUnavailableError) as error:
        get_model("hub:dinov2_small", (28, 28, 1), 2)
    message = str(error.value)
    assert message.startswith("hub:dinov2_small: the preset could not be downloaded")
    assert "(e.g. Colab)" in message and "model = 'hub:/path/to/preset'" in message
    assert "MedSigLIP" in message and "docs/teachers.md" in message
