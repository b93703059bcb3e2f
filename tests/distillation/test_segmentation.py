"""Dense (per-pixel) distillation and the segmentation example of experiments/."""

import importlib.util
import json
import os
import re

import keras
import numpy as np
import pytest

import kdkeras

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_example():
    spec = importlib.util.spec_from_file_location("segmentation_kd", os.path.join(ROOT, "experiments", "segmentation_kd.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_pixel_reference(z_teacher, z_student, temperature):
    t, s = z_teacher.astype("float64") / temperature, z_student.astype("float64") / temperature
    p_t = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    log_p_s = s - np.log(np.exp(s).sum(-1, keepdims=True))
    return temperature**2 * (p_t * (np.log(p_t) - log_p_s)).sum(-1)


def conv1x1(side, kernel, bias, name):
    inputs = keras.Input((side, side, 1))
    layer = keras.layers.Conv2D(len(bias), 1, name="logits")
    model = keras.Model(inputs, layer(inputs), name=name)
    layer.set_weights([np.reshape(kernel, (1, 1, 1, -1)).astype("float32"), np.asarray(bias, "float32")])
    return model


@pytest.mark.parametrize("side", [2, 4])
def test_dense_distillation_loss_is_the_mean_over_pixels(side):
    """The value does not grow with the image: averaged per pixel, not summed (seed 001's bug)."""
    rng = np.random.default_rng(0)
    base_t, base_s = rng.normal(size=(2, 2, 2, 3)), rng.normal(size=(2, 2, 2, 3))
    reps = side // 2
    z_t = np.tile(base_t, (1, reps, reps, 1)).astype("float32")
    z_s = np.tile(base_s, (1, reps, reps, 1)).astype("float32")
    teacher = conv1x1(side, [1.5, -2.0, 0.5], [0.3, 0.0, -0.4], "teacher")
    student = conv1x1(side, [-0.5, 1.0, 2.0], [0.0, 0.2, 0.1], "student")
    distiller = kdkeras.Distiller(student, teacher)
    distiller.compile(alpha=0.0, temperature=2.0)
    value = float(distiller.distillation_loss_fn(z_t, z_s))
    assert value == pytest.approx(per_pixel_reference(base_t, base_s, 2.0).mean(), rel=1e-5)
    # Through evaluate, on pixels whose two models' logits differ.
    x = rng.normal(size=(2, side, side, 1)).astype("float32")
    logits = {
        m.name: x * m.get_layer("logits").kernel.numpy().reshape(-1) + m.get_layer("logits").bias.numpy()
        for m in (teacher, student)
    }
    expected = per_pixel_reference(logits["teacher"], logits["student"], 2.0).mean()
    assert expected > 0.1
    logs = distiller.evaluate(x, np.zeros((2, side, side), "int32"), batch_size=2, return_dict=True, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-5)


def tiled(array, reps=3):
    return np.tile(array, (1, reps, reps, 1)).astype("float32")


DENSE_LOSSES = {
    "decoupled_kd": (
        lambda: kdkeras.distillation.losses.DecoupledKD(tckd_weight=1.0, nckd_weight=8.0, temperature=4.0),
        lambda z_t, labels: {"teacher_logits": z_t, "labels": labels},
    ),
    "multilabel_kd": (lambda: kdkeras.distillation.losses.MultiLabelKD(temperature=4.0), lambda z_t, labels: z_t),
    "hint": (lambda: kdkeras.distillation.features.HintLoss(), lambda f_t, labels: f_t),
    "attention": (lambda: kdkeras.distillation.features.AttentionTransfer(), lambda f_t, labels: f_t),
    "cosine": (lambda: kdkeras.distillation.features.CosineFeatureLoss(), lambda f_t, labels: f_t),
}


@pytest.mark.parametrize("name", sorted(DENSE_LOSSES))
def test_every_dense_loss_averages_per_pixel(name):
    """The same maps at 3x the size (each pixel repeated 3x3 times) give the same loss."""
    make_loss, y_true = DENSE_LOSSES[name]
    rng = np.random.default_rng(1)
    z_t, z_s = rng.normal(size=(2, 2, 2, 4)) * 3, rng.normal(size=(2, 2, 2, 4)) * 3
    labels = rng.integers(0, 4, (2, 2, 2))
    small = float(make_loss()(y_true(tiled(z_t, 1), labels), tiled(z_s, 1)))
    large = float(make_loss()(y_true(tiled(z_t), np.tile(labels, (1, 3, 3))), tiled(z_s)))
    assert small > 1e-3
    if name == "attention":
        # The distance of unit-norm maps is the same at both sizes; the paper
        # divides it by the H * W elements of the map, so 9x the pixels, 1/9 the loss.
        assert large == pytest.approx(small / 9, rel=1e-5)
    else:
        assert large == pytest.approx(small, rel=1e-5)
    if name in ("decoupled_kd", "multilabel_kd"):
        # Per-pixel values of the per-example function, averaged: the same number.
        per_pixel = {
            "decoupled_kd": lambda: sum(
                w * t for w, t in zip((1.0, 8.0), kdkeras.distillation.losses.decoupled_kd_terms(z_t, z_s, labels, 4.0))
            ),
            "multilabel_kd": lambda: kdkeras.distillation.losses.multilabel_kd(z_t, z_s, 4.0),
        }[name]()
        assert small == pytest.approx(float(np.mean(per_pixel)), rel=1e-5)


def test_synthetic_shapes_masks_match_images():
    example = load_example()
    images, masks = example.synthetic_shapes(20, size=32, seed=1)
    assert images.shape == (20, 32, 32, 1) and masks.shape == (20, 32, 32)
    assert set(np.unique(masks)) <= {0, 1, 2} and (masks > 0).any(axis=(1, 2)).all()
    assert images[masks > 0].mean() > images[masks == 0].mean() + 60


@pytest.mark.slow
def test_segmentation_example_runs_and_writes_its_table(tmp_path, capsys):
    example = load_example()
    rows = example.run(epochs=1, count=16, size=8, batch_size=16, out=str(tmp_path))
    assert [r["model"] for r in rows] == ["teacher", "student alone", "response KD", "response + feature KD"]
    assert rows[1]["params"] == rows[2]["params"] == rows[3]["params"] < rows[0]["params"] / 10
    assert all(0.0 <= r["miou"] <= 1.0 for r in rows)
    with open(os.path.join(tmp_path, "results.json")) as f:
        assert json.load(f) == rows
    assert "| response + feature KD | 14,803 |" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--size", "30"])
    assert exit_info.value.code == 2
    assert "--size a multiple of 4" in capsys.readouterr().err


def test_segmentation_example_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        load_example().main(["--help"])
    text = capsys.readouterr().out
    entries = re.split(r"\n  (?=-)", text.split("options:")[1])[1:]  # one entry per option
    described = {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries}
    for option in ("--data", "--epochs", "--count", "--size", "--batch-size", "--seed", "--out"):
        assert "default" in described[option], f"{option} has no help text: {described[option]!r}"
