"""DKD, feature distillation, several teachers and cached logits from experiment configs."""

import json
import os
import re
import tomllib

import keras
import pytest

from kdkeras import cli
from kdkeras import config as config_lib
from kdkeras.config import ConfigError
from kdkeras.models import get_model

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "name": "methods",
    "seed": 5,
    "teacher": {"options": {"filters": [8, 16]}},
    "distill": {"epochs": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_experiment):
    root = tmp_path_factory.mktemp("methods")
    path = tiny_experiment(root, **TINY)
    runs = str(root / "runs")
    assert cli.main(["teacher", "--config", str(path), "--runs-dir", runs, "--quiet"]) == 0
    return path, runs


@pytest.fixture
def fit_calls(monkeypatch):
    """What each `keras.Model.fit` call received: (model, train dataset, keyword arguments).

    Keras's `fit` is wrapped, not replaced: training runs as usual.
    """
    calls = []
    original = keras.Model.fit

    def recording_fit(self, x=None, *args, **kwargs):
        calls.append((self, x, kwargs))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    return calls


def distill(trained, capsys, *settings):
    path, runs = trained
    args = ["distill", "--config", str(path), "--runs-dir", runs]
    for setting in settings:
        args += ["--set", setting]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    with open(os.path.join(runs, "methods", "distilled_metrics.json")) as f:
        return out, json.load(f)


@pytest.mark.slow
def test_dkd_with_warmup_and_cached_teacher(trained, capsys, fit_calls):
    out, metrics = distill(
        trained, capsys,
        'distill.loss="decoupled_kd"', "distill.loss_options={tckd_weight=1.0, nckd_weight=2.0}",
        "distill.warmup_epochs=1.0", "distill.cache_teacher=true",
    )  # fmt: skip
    assert "loss decoupled_kd" in out and "warm-up 2 steps" in out  # 64 images / 32 per batch
    assert "caching the teacher's logits" in out
    assert metrics["run"]["epochs_run"] == 1 and 0.0 <= metrics["auc"] <= 1.0
    # What fit trained with, not only what the log says.
    ((distiller, train, _),) = fit_calls
    loss = distiller.distillation_loss_fn
    assert type(loss).__name__ == "DecoupledKD" and (loss.tckd_weight, loss.nckd_weight) == (1.0, 2.0)
    assert distiller.warmup_steps == 2
    images, _ = train.element_spec
    assert set(images) == {"inputs", "teacher_logits"} and images["teacher_logits"].shape[-1] == 2


@pytest.mark.slow
def test_feature_distillation_from_config_exports_a_plain_student(trained, capsys):
    out, metrics = distill(
        trained, capsys,
        'distill.features=[{student_layer="stage2_relu2", teacher_layer="stage2_relu2", loss="hint", weight=0.5}]',
    )  # fmt: skip
    assert "FeatureMatch('stage2_relu2', 'stage2_relu2', loss='hint', weight=0.5)" in out
    student = get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[4, 8])
    assert metrics["params"] == student.count_params()  # the adapter stayed in the Distiller


@pytest.mark.slow
def test_two_teachers_from_config(trained, capsys, fit_calls):
    path, runs = trained
    teacher = os.path.join(runs, "methods", "teacher.keras")
    out, _ = distill(trained, capsys, f'distill.teachers=["{teacher}", "{teacher}"]', "distill.teacher_weights=[3, 1]")
    assert "teacher weights [0.75, 0.25]" in out
    ((distiller, _, _),) = fit_calls
    assert len(distiller.teachers) == 2 and list(distiller.teacher_weights) == pytest.approx([0.75, 0.25])


@pytest.mark.parametrize(
    "setting, message",
    [
        ('distill.loss="fitnets"', "loss = 'fitnets' is unknown. Allowed: knowledge_distillation, decoupled_kd"),
        ("distill.loss_options={gamma=1}", "Bad options"),
        ("distill.warmup_epochs=-1.0", "warmup_epochs = -1.0 must be >= 0"),
        ('distill.features=[{student_layer="a"}]', "features\\[0\\] .* must be a table with student_layer"),
        ('distill.features=[{student_layer="a", teacher_layer="b", loss="l1"}]', "Unknown feature loss 'l1'"),
        ('distill.features=[{student_layer="a", teacher_layer="b", size=3}]', "unknown key\\(s\\) \\['size'\\]"),
        ('distill.teachers=["t.h5"]', "must list .keras teacher files"),
        ("distill.teacher_weights=[1, 2]", "one number >= 0 per teacher \\(1\\)"),
        ('data.augment="light"', None),
    ],
)
def test_new_distill_keys_are_validated(setting, message, tiny_experiment):
    base = config_lib.from_dict(tiny_experiment.raw(**TINY))
    key, value = setting.split("=", 1)
    overrides = {key: tomllib.loads(f"v = {value}")["v"]}
    if message is None:  # augmentation alone is fine; with cache_teacher it is not
        overrides["distill.cache_teacher"] = True
        message = "cache_teacher = true needs a train pipeline that shows the teacher the same images"
    with pytest.raises(ConfigError, match=message):
        config_lib.apply_overrides(base, overrides)


@pytest.mark.slow
def test_missing_extra_teacher_is_a_clear_error(trained, capsys):
    path, runs = trained
    args = ["distill", "--config", str(path), "--runs-dir", runs, "--set", 'distill.teachers=["nowhere/t.keras"]']
    assert cli.main(args) == 1
    assert "nowhere/t.keras not found" in capsys.readouterr().err


def test_multilabel_data_need_per_label_sigmoid_kd(tiny_experiment):
    import types

    from kdkeras.distillation import losses
    from kdkeras.workflow import phases

    info = types.SimpleNamespace(task="multi-label", num_classes=4, name="chestmnist")
    student = get_model("cnn_small", input_shape=(28, 28, 1), num_classes=4, filters=[4, 8])
    teacher = get_model("cnn_small", input_shape=(28, 28, 1), num_classes=4, filters=[4, 8])
    distill = config_lib.from_dict(tiny_experiment.raw(**TINY)).distill
    distill.loss = "multilabel_kd"
    distiller = phases.build_distiller(student, [teacher], distill, info, steps_per_epoch=10)
    assert type(distiller.distillation_loss_fn) is losses.MultiLabelKD
    assert type(distiller.student_loss_fn).__name__ == "BinaryCrossentropy"
    for loss in ("knowledge_distillation", "decoupled_kd", "dist"):  # no silent swap to sigmoids
        distill.loss = loss
        with pytest.raises(ConfigError, match=f"loss = '{loss}' softens .* chestmnist is multi-label. Use loss = 'multilabel_kd'"):
            phases.build_distiller(student, [teacher], distill, info, steps_per_epoch=10)


@pytest.mark.slow
def test_balanced_class_weights_reach_fit(trained, capsys, fit_calls, tiny_experiment):
    path, runs = trained
    args = ["student", "--config", str(path), "--runs-dir", runs, "--set", 'student.class_weight="balanced"']
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    weights = dict(re.findall(r"(normal|pneumonia) (\d\.\d{3})", out.split("class weights")[1].splitlines()[0]))
    assert float(weights["normal"]) > 1.0 > float(weights["pneumonia"])  # the rarer class weighs more
    # fit received them: n / (2 * n_class) for the 64 train images of the run.
    ((_, train, kwargs),) = fit_calls
    labels = [int(y) for _, batch in train for y in batch.numpy().ravel()]
    counts = [labels.count(0), labels.count(1)]
    expected = {k: len(labels) / (2 * c) for k, c in enumerate(counts)}
    assert kwargs["class_weight"] == pytest.approx(expected)
    assert kwargs["class_weight"][0] == pytest.approx(float(weights["normal"]), abs=5e-4)
    base = config_lib.from_dict(tiny_experiment.raw(**TINY))
    with pytest.raises(ConfigError, match="class_weight = 'inverse' is unknown"):
        config_lib.apply_overrides(base, {"teacher.class_weight": "inverse"})
