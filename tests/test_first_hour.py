"""The small cuts a new user meets in the first hour, each guarded."""

import io
import json
import os
import warnings

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import cli
from kdkeras.workflow.progress import fit_verbosity

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "data_source": "the hospital's PACS export",
    "data": {"limit": None},
    "teacher": {"epochs": None},
    "student": {"epochs": None},
}


@pytest.fixture
def tiny_config(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path, **TINY)
    return str(path)


def test_evaluate_takes_limit(tmp_path, tiny_config):
    model = kdkeras.models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[4, 8])
    model.save(tmp_path / "m.keras")
    args = ["evaluate", "--config", tiny_config, "--model", str(tmp_path / "m.keras"), "--runs-dir", str(tmp_path)]
    assert cli.main([*args, "--limit", "40"]) == 0
    assert json.load(open(tmp_path / "tiny" / "m_metrics.json"))["n"] == 40


@pytest.mark.slow
def test_missing_data_folder_names_the_key_and_where_to_get_the_data(tmp_path, capsys, tiny_experiment):
    folders = {"loader": "image_folder", "flag": None, "root": "no/such/folder"}
    path = tiny_experiment(tmp_path, **{**TINY, "name": "folders", "data": {**TINY["data"], **folders}})
    assert cli.main(["teacher", "--config", str(path), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "folders.toml: [data] root = 'no/such/folder' does not exist" in err, err
    assert "Get the data from the hospital's PACS export" in err and "--set data.root=" in err
    assert not os.path.exists(tmp_path / "tiny")


@pytest.mark.slow
def test_absurd_temperature_is_refused(tmp_path, tiny_config, capsys):
    assert cli.main(["distill", "--config", tiny_config, "--runs-dir", str(tmp_path), "--temperature", "1e9"]) == 2
    err = capsys.readouterr().err
    assert "[distill] temperature = 1e+09 is above 1000" in err and "distillation loss becomes 0" in err


def test_progress_is_one_line_per_epoch_unless_someone_watches():
    assert fit_verbosity(io.StringIO()) == 2  # a log file, a pipe, CI
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        assert fit_verbosity(terminal) == 1
    os.close(primary)

    class OutStream(io.StringIO):  # where ipykernel (Jupyter, Colab) sends a notebook's stdout
        pass

    OutStream.__module__ = "ipykernel.iostream"
    assert fit_verbosity(OutStream()) == 1


@pytest.mark.slow
def test_reloading_a_distiller_of_a_compiled_teacher_does_not_warn(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.arange(32) % 3

    def model(name):
        inputs = keras.Input((6,))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8)(inputs)), name=name)

    teacher = model("teacher")
    teacher.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, verbose=0)  # the teacher's own Adam now has variables
    distiller = kdkeras.Distiller(student=model("student"), teacher=teacher)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=2, verbose=0)
    distiller.save(tmp_path / "d.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = keras.models.load_model(tmp_path / "d.keras")
    for ours, saved in zip(again.optimizer.variables, distiller.optimizer.variables):
        np.testing.assert_array_equal(ours, saved)
    assert int(again.optimizer.iterations) == 2
