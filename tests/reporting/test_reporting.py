"""Tests of kdkeras.reporting: figures, table, saved files and report.md."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from kdkeras import reporting, runs, stats
from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores
from kdkeras.reporting import figures, roc
from kdkeras.reporting.history import load_history

# The conftest `pneumonia_npz` fixture is per test; the report is built once.
PNEUMONIA_NPZ = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "kdkeras",
    "data",
    "bundled",
    "pneumoniamnist.npz",
)
MODELS = ["teacher", "student", "distilled"]
CLASSES = ["normal", "pneumonia"]
PARAMS = {"teacher": 1_147_458, "student": 5_954, "distilled": 5_954}
PLOTS = [f"{name}_{kind}.png" for name in MODELS for kind in ("curves", "confusion", "predictions")]
PLOTS += ["val_overlay.png", "roc.png"]


def _assert_png(path, min_width=400, min_height=300):
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert min_width <= width <= 5000 and min_height <= height <= 5000, (width, height)
    return width, height


def _write_history(path, rows, distiller=False):
    columns = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    if distiller:
        columns += ["student_loss", "val_student_loss"]
    lines = [",".join(columns)]
    for epoch in range(rows):
        values = [epoch, 0.7 + 0.02 * epoch, 0.6 - 0.04 * epoch]
        values += [0.68 + 0.02 * epoch, 0.62 - 0.03 * epoch]
        if distiller:
            values += [0.5 - 0.03 * epoch, 0.55 - 0.03 * epoch]
        lines.append(",".join(str(value) for value in values))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _make_run(run_dir, pneumonia_npz):
    """A run folder as the CLI leaves it, with real test images and labels."""
    with np.load(pneumonia_npz) as data:
        labels = data["test_labels"]
        images = data["test_images"][:16, :, :, np.newaxis].astype(np.float32)
    rng = np.random.default_rng(0)
    for index, name in enumerate(MODELS):
        logits = rng.normal(size=(len(labels), 2))
        logits[np.arange(len(labels)), labels[:, 0]] += 1.0 + 0.5 * index
        y_score = logits_to_scores(logits, "binary-class")
        metrics = classification_metrics(labels, y_score, "binary-class", CLASSES)
        metrics.update(
            params=PARAMS[name],
            trainable_params=PARAMS[name],
            size_bytes=13_800_000 if name == "teacher" else 96_712,
            latency={
                1: {"ms_per_image": 3.1, "ms_per_batch": 3.1, "images_per_s": 322.6},
                32: {"ms_per_image": 0.21, "ms_per_batch": 6.7, "images_per_s": 4776.1},
            },
        )
        runs.save_metrics(os.path.join(run_dir, f"{name}_metrics.json"), metrics)
        runs.save_predictions(
            os.path.join(run_dir, f"{name}_predictions.npz"), labels, y_score, images=images
        )
        _write_history(
            os.path.join(run_dir, f"{name}_history.csv"), 6, distiller=name == "distilled"
        )


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run"))
    _make_run(run_dir, PNEUMONIA_NPZ)
    reporting.write_report(
        run_dir,
        MODELS,
        "PneumoniaMNIST quickstart",
        {"dataset": "pneumoniamnist", "epochs": 6},
        published=[{"source": "MedMNIST v2", "model": "ResNet-18 (28)", "ACC": 0.854}],
    )
    return run_dir


@pytest.fixture
def run_copy(report_dir, tmp_path):
    """A fresh copy of the run inputs, for tests that damage them."""
    target = tmp_path / "run"
    shutil.copytree(report_dir, target)
    return str(target)


def _table_rows(markdown):
    header = "| Model | Params | Size | Latency | Loss | ACC | AUC | Balanced ACC |"
    lines = markdown.splitlines()
    start = lines.index(header) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_comparison_table_units():
    rows = [
        {
            "name": "teacher",
            "params": 1_147_458,
            "size_bytes": 4_400_000,
            "latency": {"1": {"ms_per_image": 0.8234}, "32": {"ms_per_image": 0.1}},
            "cross_entropy": 0.41234,
            "loss": 9.0,
            "acc": 0.8541,
            "auc": 0.94449,
            "balanced_acc": 0.8,
        },
        {
            "name": "student|small",
            "params": 999_999,
            "size_bytes": 96_712,
            "latency": {32: {"ms_per_image": 0.004}},
            "loss": 0.5,
            "acc": 0.9,
            "auc": None,
        },
        {"name": "bare", "params": 812, "size_bytes": 950, "latency": {1: {"ms_per_image": 1234}}},
    ]
    assert reporting.comparison_table(rows) == (
        "| Model | Params | Size | Latency | Loss | ACC | AUC | Balanced ACC |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| teacher | 1.15 M | 4.4 MB | 0.823 ms/img | 0.412 | 0.854 | 0.944 | 0.800 |\n"
        "| student\\|small | 1 M | 96.7 kB | 4 µs/img (batch 32) | 0.500 | 0.900 | n/a | n/a |\n"
        "| bare | 812 | 950 B | 1.23 s/img | n/a | n/a | n/a | n/a |\n"
    )


def test_comparison_table_needs_names():
    with pytest.raises(ValueError, match="Each row needs a 'name' key; got keys \\['acc'\\]"):
        reporting.comparison_table([{"acc": 0.5}])


def test_report_writes_every_plot(report_dir):
    for name in PLOTS:
        _assert_png(os.path.join(report_dir, name))


def test_report_links_resolve(report_dir):
    with open(os.path.join(report_dir, "report.md"), encoding="utf-8") as f:
        markdown = f.read()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(links) == sorted(PLOTS)
    assert all(os.path.isfile(os.path.join(report_dir, link)) for link in links)
    assert markdown.startswith("# PneumoniaMNIST quickstart\n")
    assert "| MedMNIST v2 | ResNet-18 (28) | 0.854 |" in markdown
    assert '"epochs": 6' in markdown
    assert "student has 193x fewer parameters" in markdown


def test_report_values_equal_recomputation(report_dir):
    with open(os.path.join(report_dir, "report.md"), encoding="utf-8") as f:
        rows = _table_rows(f.read())
    assert list(rows) == MODELS
    for name in MODELS:
        saved = runs.load_predictions(os.path.join(report_dir, f"{name}_predictions.npz"))
        metrics = classification_metrics(saved["y_true"], saved["y_score"], "binary-class")
        expected = [
            f"{metrics[key]:.3f}" for key in ("cross_entropy", "acc", "auc", "balanced_acc")
        ]
        assert rows[name][3:] == expected
    assert rows["teacher"][:3] == ["1.15 M", "13.8 MB", "3.1 ms/img"]
    assert rows["student"][:3] == ["5.95 k", "96.7 kB", "3.1 ms/img"]


def test_report_missing_files(run_copy):
    os.remove(os.path.join(run_copy, "distilled_history.csv"))
    os.remove(os.path.join(run_copy, "distilled_predictions.npz"))
    with pytest.raises(FileNotFoundError) as error:
        reporting.write_report(run_copy, MODELS, "x", None)
    message = str(error.value)
    assert "distilled_history.csv" in message and "distilled_predictions.npz" in message
    assert "run `kdkeras distill` for this experiment first" in message
    assert "teacher_" not in message


def test_report_rejects_stale_metrics(run_copy):
    path = os.path.join(run_copy, "student_metrics.json")
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    metrics["acc"] += 0.01
    runs.save_metrics(path, metrics)
    with pytest.raises(ValueError, match=r"student_metrics.json says acc = .* stale"):
        reporting.write_report(run_copy, MODELS, "x", None)


def test_report_rejects_different_test_labels(run_copy):
    path = os.path.join(run_copy, "teacher_predictions.npz")
    saved = runs.load_predictions(path)
    runs.save_predictions(path, saved["y_true"][::-1], saved["y_score"][::-1])
    with pytest.raises(ValueError, match="not evaluated on the same test split"):
        reporting.write_report(run_copy, ["student", "teacher"], "x", None)


def test_report_published_markdown_and_bad_type(run_copy):
    reporting.write_report(run_copy, ["student"], "Student only", None, published="Seed 002: 74%.")
    with open(os.path.join(run_copy, "report.md"), encoding="utf-8") as f:
        markdown = f.read()
    assert "## Published results\n\nSeed 002: 74%.\n" in markdown
    assert "## Configuration" not in markdown
    with pytest.raises(TypeError, match="`published` must be a markdown string or a list"):
        reporting.write_report(run_copy, ["student"], "x", None, published=0.74)


def test_plot_history_panels(tmp_path):
    history = {"loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.8, 0.7]}
    two = _assert_png(
        reporting.plot_history(
            {**history, "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.5, 0.6]},
            str(tmp_path / "two.png"),
            "Student",
        )
    )
    three = _assert_png(
        reporting.plot_history(
            {**history, "accuracy": [0.5, 0.6, 0.7], "auc": [0.6, 0.7, 0.8]},
            str(tmp_path / "three.png"),
            "Student",
        )
    )
    assert three[0] > two[0] * 1.3 and three[1] == two[1]


@pytest.mark.parametrize("first_epoch", [0, 1])
def test_history_epochs_count_from_one(tmp_path, first_epoch):
    # CSVLogger writes epochs from 0, kdkeras' RunState from 1.
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,loss,val_loss\n" + f"{first_epoch},0.9,1.0\n{first_epoch + 1},0.6,0.8\n"
    )
    curves, epochs, source = load_history(str(path))
    assert epochs.tolist() == [1.0, 2.0]
    assert sorted(curves) == ["loss", "val_loss"] and source == str(path)


def test_plot_history_errors(tmp_path):
    with pytest.raises(ValueError, match=r"has no 'loss' column \(columns: accuracy\)"):
        reporting.plot_history({"accuracy": [0.5]}, str(tmp_path / "x.png"), "x")
    with pytest.raises(FileNotFoundError, match="missing.csv' not found"):
        reporting.plot_history(str(tmp_path / "missing.csv"), str(tmp_path / "x.png"), "x")
    assert not os.path.exists(tmp_path / "x.png")


def test_validation_overlay_needs_validation_columns(tmp_path):
    histories = {
        "teacher": {"loss": [0.5, 0.4], "val_loss": [0.6, 0.5], "val_acc": [0.7, 0.8]},
        "student": {"loss": [0.5, 0.4], "val_loss": [0.6, 0.5]},
    }
    with pytest.raises(ValueError, match="model 'student' has no 'val_accuracy' column"):
        reporting.plot_validation_overlay(histories, str(tmp_path / "overlay.png"))


def test_prediction_grid_rgb_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(5, 16, 16, 3)).astype(np.float32)
    path = str(tmp_path / "grid.png")
    _assert_png(
        reporting.plot_prediction_grid(images, [0, 1, 2, 0, 1], [0, 1, 1, 0, 2], list("abc"), path),
        min_width=300,
    )
    with pytest.raises(ValueError, match=r"pixel values in \[0, 255\].*got \[300, 300\]"):
        reporting.plot_prediction_grid(np.full_like(images, 300.0), [0] * 5, [0] * 5, ["a"], path)
    with pytest.raises(ValueError, match=r"`y_pred` holds class indices outside \[0, 1\]"):
        reporting.plot_prediction_grid(images, [0] * 5, [2] * 5, ["a", "b"], path)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\), got \(5, 16, 16, 2\)"):
        reporting.plot_prediction_grid(images[..., :2], [0] * 5, [0] * 5, ["a"], path)


def test_confusion_matrix_multi_label_and_errors(tmp_path):
    stacked = [[[5, 1], [2, 7]], [[8, 0], [3, 4]], [[6, 2], [1, 6]]]
    _assert_png(
        reporting.plot_confusion_matrix(stacked, ["a", "b", "c"], str(tmp_path / "ml.png"), "t")
    )
    with pytest.raises(ValueError, match=r"got shape \(2, 2\) and 3 names"):
        reporting.plot_confusion_matrix([[1, 2], [3, 4]], "abc", str(tmp_path / "x.png"), "t")


def test_roc_multi_class(tmp_path):
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 4, 120)
    y_score = logits_to_scores(rng.normal(size=(120, 4)) + 2 * np.eye(4)[y_true], "multi-class")
    sharper = y_score**2 / (y_score**2).sum(axis=1, keepdims=True)
    path = reporting.plot_roc_curves(
        {"teacher": (y_true, y_score), "student": (y_true, sharper)},
        "multi-class",
        str(tmp_path / "roc.png"),
        ["akiec", "bcc", "bkl", "df"],
    )
    width, height = _assert_png(path)
    assert width > 1.5 * height  # one panel per model


def test_save_predictions_and_metrics_round_trip(tmp_path):
    path = str(tmp_path / "p.npz")
    runs.save_predictions(path, np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]))
    saved = runs.load_predictions(path)
    assert sorted(saved) == ["y_score", "y_true"]
    np.testing.assert_array_equal(saved["y_score"], [[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(ValueError, match=r"`images` has 3 rows but there are only 2 labels"):
        runs.save_predictions(path, [0, 1], [[1, 0], [0, 1]], images=np.zeros((3, 4, 4)))

    metrics_path = str(tmp_path / "m.json")
    runs.save_metrics(
        metrics_path,
        {"acc": np.float32(0.5), "auc": np.nan, "cm": np.eye(2, dtype=int), "latency": {1: {}}},
    )
    with open(metrics_path, encoding="utf-8") as f:
        saved = json.load(f)
    assert saved == {"acc": 0.5, "auc": None, "cm": [[1, 0], [0, 1]], "latency": {"1": {}}}
    assert sorted(os.listdir(tmp_path)) == ["m.json", "p.npz"]


def test_report_gives_intervals_and_a_verdict_on_the_same_test_images(report_dir):
    with open(os.path.join(report_dir, "report.md"), encoding="utf-8") as f:
        text = f.read()
    assert "| Model | ACC | AUC | Balanced ACC | Sensitivity (pneumonia) | Specificity (normal) |" in text
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if re.match(r"\| (teacher|student|distilled) \| 0\.\d{3} \(", line)}
    assert sorted(rows) == sorted(MODELS)
    metrics = runs.read_metrics(os.path.join(report_dir, "distilled_metrics.json"))
    acc = metrics["intervals"]["acc"]
    assert f"| distilled | {metrics['acc']:.3f} ({acc['low']:.3f}-{acc['high']:.3f}) |" in rows["distilled"]
    predictions = {name: runs.load_predictions(os.path.join(report_dir, f"{name}_predictions.npz")) for name in MODELS}
    expected = stats.compare_models(
        predictions["student"]["y_true"], predictions["distilled"]["y_score"], predictions["student"]["y_score"],
        "binary-class", "the distilled student", "the student alone", CLASSES,
    )
    assert f"- {expected['verdict']}" in text
    # The fixture's distilled logits separate the classes by 0.5 more than the student's.
    assert expected["verdict"].startswith("The distilled student is better than the student alone by +")
    assert "| the distilled student vs the teacher |" in text


def test_a_limited_run_is_flagged_and_unequal_budgets_are_named(run_copy):
    for name, steps in (("teacher", 7), ("student", 4), ("distilled", 7)):
        path = os.path.join(run_copy, f"{name}_metrics.json")
        metrics = runs.read_metrics(path)
        metrics["run"] = runs.RunRecord(
            phase=runs.PHASE_OF[name], overrides={"data.limit": 200}, limit=200, epochs=3, epochs_run=2,
            best_epoch=2, stopped_early=True, steps_per_epoch=steps, train_images={"labeled": 200, "unlabeled": 0},
        )
        runs.save_metrics(path, metrics)
    text = open(reporting.write_report(run_copy, MODELS, "Smoke", None, published=[{"model": "R18", "ACC": 0.854}]),
                encoding="utf-8").read()
    assert text.splitlines()[2].startswith("> **Limited run**: at most 200 images per split")
    assert "## Published results (not comparable with this limited run)" in text
    assert "| student | 200 + 0 | 4 | 2 (3) | 2 | yes | `data.limit = 200` |" in text
    assert "**Unequal budgets**: the student alone could train at most 3 epochs of 4 steps" in text


def test_a_one_epoch_history_gets_whole_epoch_ticks(tmp_path):
    from matplotlib.figure import Figure

    from kdkeras.reporting.figures import epoch_axis

    ax = Figure().subplots()
    ax.plot([1.0], [0.5])
    epoch_axis(ax, np.array([1.0]))
    assert list(ax.get_xticks()) == [1]
    ax = Figure().subplots()
    ax.plot(np.arange(1, 31), np.zeros(30))
    epoch_axis(ax, np.arange(1, 31))
    assert all(float(t).is_integer() for t in ax.get_xticks())
    path = reporting.plot_history({"loss": [0.5], "val_loss": [0.6]}, str(tmp_path / "one.png"), "One epoch")
    assert os.path.getsize(path) > 0


# --- What each figure shows: built unsaved, read back from its artists. ---


def _lines(ax):
    """(x, y, label) of each plotted line of `ax`, in drawing order."""
    return [(np.asarray(l.get_xdata(), float), np.asarray(l.get_ydata(), float), l.get_label()) for l in ax.get_lines()]


def _legend(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_history_figure_draws_each_logged_curve_against_its_epoch():
    history = {
        "epoch": [0, 1, 2],  # CSVLogger counts from 0; the figure from 1
        "loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.8, 0.7],
        "student_loss": [0.7, 0.5, 0.4], "val_student_loss": [0.8, 0.6, 0.55],
        "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.5, 0.6],
        "auc_1": [0.6, 0.7, 0.8],
    }
    fig = figures.history_figure(history, "Distilled")
    assert fig.get_suptitle() == "Distilled: training curves"
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["Loss", "Student loss (vs labels)", "Accuracy", "AUC"]
    for ax, key in zip(axes, ["loss", "student_loss", "accuracy", "auc_1"]):
        assert ax.get_xlabel() == "Epoch" and ax.get_ylabel() == ax.get_title()
        lines = _lines(ax)
        np.testing.assert_array_equal(lines[0][0], [1, 2, 3])
        np.testing.assert_array_equal(lines[0][1], history[key])
        if f"val_{key}" in history:
            np.testing.assert_array_equal(lines[1][1], history[f"val_{key}"])
            assert _legend(ax) == ["train", "validation"]
        else:
            assert len(lines) == 1 and _legend(ax) == ["train"]
        assert list(ax.get_xticks()) == [1, 2, 3]


def test_validation_overlay_compares_the_students_loss_not_the_distillers():
    plain = {"loss": [0.5, 0.4], "val_loss": [0.6, 0.5], "val_acc": [0.7, 0.8]}
    # A distiller's val_loss adds the distillation term; its student's own loss is val_student_loss.
    distilled = {"loss": [2.0, 1.5], "val_loss": [2.2, 1.9], "val_student_loss": [0.55, 0.45],
                 "val_sparse_categorical_accuracy": [0.75, 0.85]}
    fig = figures.validation_overlay_figure({"student": plain, "distilled": distilled})
    loss_ax, accuracy_ax = fig.get_axes()
    assert loss_ax.get_title() == "Validation loss (cross-entropy)"
    assert accuracy_ax.get_title() == "Validation accuracy"
    assert [(y.tolist(), label) for _, y, label in _lines(loss_ax)] == [
        ([0.6, 0.5], "student"), ([0.55, 0.45], "distilled")]
    assert [(y.tolist(), label) for _, y, label in _lines(accuracy_ax)] == [
        ([0.7, 0.8], "student"), ([0.75, 0.85], "distilled")]
    assert _legend(loss_ax) == _legend(accuracy_ax) == ["student", "distilled"]


def test_confusion_matrix_figure_writes_counts_and_row_shares():
    fig = figures.confusion_matrix_figure([[5, 1], [2, 6]], ["normal", "pneumonia"], "Student")
    ax = fig.get_axes()[0]
    assert fig.get_suptitle() == "Student"
    cells = {(t.get_position()[1], t.get_position()[0]): t.get_text() for t in ax.texts}
    assert cells == {(0, 0): "5\n83%", (0, 1): "1\n17%", (1, 0): "2\n25%", (1, 1): "6\n75%"}
    np.testing.assert_allclose(ax.get_images()[0].get_array(), [[5 / 6, 1 / 6], [0.25, 0.75]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["normal", "pneumonia"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted class", "True class")
    stacked = figures.confusion_matrix_figure([[[5, 1], [2, 7]], [[8, 0], [3, 4]]], ["a", "b"], "t")
    assert [ax.get_title() for ax in stacked.get_axes()[:2]] == ["a", "b"]
    assert "0\n0%" in [t.get_text() for t in stacked.get_axes()[1].texts]


def test_roc_figure_draws_sklearns_curve_with_the_reported_auc():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 80)
    p = np.clip(0.35 * y + 0.65 * rng.random(80), 0, 1)
    scores = np.stack([1 - p, p], axis=1)
    fig = roc.roc_curves_figure({"teacher": (y, scores), "student": (y, p**2)}, "binary-class")
    (ax,) = fig.get_axes()
    (fpr_t, tpr_t, label_t), (fpr_s, tpr_s, label_s), (chance_x, chance_y, chance) = _lines(ax)
    fpr, tpr, _ = roc_curve(y, p)
    np.testing.assert_array_equal(fpr_t, fpr)
    np.testing.assert_array_equal(tpr_t, tpr)
    assert label_t == f"teacher (AUC = {roc_auc_score(y, p):.3f})"
    assert label_s == f"student (AUC = {roc_auc_score(y, p**2):.3f})"  # same ranking, same AUC
    assert chance == "chance" and chance_x.tolist() == chance_y.tolist() == [0, 1]
    assert ax.get_xlabel() == "False positive rate (1 - specificity)"


def test_roc_figure_of_a_multi_class_model_has_one_vs_rest_curves_and_their_mean():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    scores = logits_to_scores(rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[y], "multi-class")
    fig = roc.roc_curves_figure({"teacher": (y, scores)}, "multi-class", class_names=["a", "b", "c"])
    (ax,) = fig.get_axes()
    aucs = [roc_auc_score(y == k, scores[:, k]) for k in range(3)]
    assert ax.get_title() == f"teacher: mean one-vs-rest AUC = {np.mean(aucs):.3f}"
    for k, (fpr, tpr, label) in enumerate(_lines(ax)[:3]):
        np.testing.assert_array_equal(fpr, roc_curve(y == k, scores[:, k])[0])
        assert label == f"{'abc'[k]} (AUC = {aucs[k]:.3f})"


def test_prediction_grid_titles_say_predicted_true_in_green_or_red():
    from matplotlib.colors import to_hex

    images = np.stack([np.full((4, 4), 40.0 * i) for i in range(5)])
    fig = figures.prediction_grid_figure(images, [0, 1, 1, 0, 1], [0, 1, 0, 0, 0], ["normal", "pneumonia"], n=4)
    axes = fig.get_axes()
    assert len(axes) == 4  # n=4 of 5 images, 2x2
    assert [ax.get_title() for ax in axes] == [
        "normal\n(normal)", "pneumonia\n(pneumonia)", "normal\n(pneumonia)", "normal\n(normal)"]
    colors = [to_hex(ax.title.get_color()) for ax in axes]
    assert colors == [figures.CORRECT, figures.CORRECT, figures.WRONG, figures.CORRECT]
    np.testing.assert_array_equal(axes[2].get_images()[0].get_array(), images[2])
    assert "3 of 4 correct" in fig.get_suptitle()


def test_saved_figure_is_the_built_figure_rendered(tmp_path):
    history = {"loss": [0.9, 0.5], "val_loss": [1.0, 0.7]}
    path = reporting.plot_history(history, str(tmp_path / "h.png"), "T")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    # Not blank: the ink of axes, curves and text covers a few percent of a white canvas.
    assert 0.01 < np.mean(pixels < 128) < 0.3
    fig = figures.history_figure(history, "T")
    width, height = fig.get_size_inches() * figures.DPI
    assert pixels.shape == (round(height), round(width))
