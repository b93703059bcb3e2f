"""The guard rails of issue 25.4: swapped models, deprecated names, a merged val/ folder, TensorFlow's start-up lines."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.distillation.losses import DecoupledKD, MultiLabelKD


def _dense(units, name):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(units)(inputs)), name=name)


@pytest.mark.parametrize("keras_arguments", [{}, {"student_loss_weight": 0.5, "distillation_losses": None}])
def test_a_teacher_smaller_than_its_student_warns_whatever_the_arguments(keras_arguments):
    big, small = _dense(64, "big"), _dense(2, "small")
    if keras_arguments:
        keras_arguments["distillation_losses"] = keras.distillation.LogitsDistillation(
            temperature=2.0, loss=keras.losses.KLDivergence()
        )
    with pytest.warns(UserWarning, match=r"teacher 'small' has 16 parameters and the student 'big' 450"):
        kdkeras.Distiller(big, small, **keras_arguments)  # keras.distillation's (teacher, student) order
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kdkeras.Distiller(small, big)
        kdkeras.Distiller(student=small, teacher=big)


def test_dkd_old_argument_names_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"DecoupledKD\(alpha=...\) is deprecated: use tckd_weight="):
        loss = DecoupledKD(alpha=2.0)
    assert (loss.tckd_weight, loss.nckd_weight) == (2.0, 8.0)
    with pytest.warns(DeprecationWarning, match="use nckd_weight="):
        loss = DecoupledKD(beta=4.0, temperature=2.0)
    assert (loss.tckd_weight, loss.nckd_weight, loss.temperature) == (1.0, 4.0, 2.0)
    with pytest.raises(ValueError, match="nckd_weight"), pytest.warns(DeprecationWarning):
        DecoupledKD(beta=-1.0)
    assert "alpha" not in DecoupledKD(alpha=3.0).get_config()  # a saved copy uses the new names


def test_multilabel_kd_round_trips_through_its_config():
    loss = MultiLabelKD(temperature=2.0)
    again = MultiLabelKD.from_config(loss.get_config())
    assert again.temperature == 2.0
    y_t, y_s = np.array([[2.0, -1.0]], "float32"), np.array([[0.5, 0.5]], "float32")
    assert float(again(y_t, y_s)) == pytest.approx(float(loss(y_t, y_s)))


@pytest.mark.slow
@pytest.mark.parametrize("level, shown", [(None, False), ("0", True)])
def test_tensorflow_start_up_lines_are_hidden_after_import_kdkeras_unless_asked(tmp_path, level, shown):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(kdkeras.__file__))
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    code = "import kdkeras\nimport kdkeras.models\nimport tensorflow as tf\nprint(int(tf.constant(1) + 1))"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "2"
    assert ("absl::InitializeLog" in done.stderr or "I0000" in done.stderr) == shown, done.stderr
