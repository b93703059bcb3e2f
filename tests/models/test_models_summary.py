"""model_table: the rows and the text `kdkeras models` prints."""

import pytest

from kdkeras.models import ModelRow, model_table

DSNET_224_MACS = 222 * 222 * 128 * 9 * 3 + 109 * 109 * 64 * 9 * 128 + 52 * 52 * 32 * 9 * 64 + 52 * 52 * 32 * 2
# cnn_small at 28x28x1: two 3x3 'same' convs per stage (24, 48, 96 filters at 28, 14, 7 px), then Dense(2).
CNN_SMALL_28_MACS = (
    28 * 28 * 9 * (1 * 24 + 24 * 24) + 14 * 14 * 9 * (24 * 48 + 48 * 48) + 7 * 7 * 9 * (48 * 96 + 96 * 96) + 96 * 2
)


@pytest.fixture(scope="module")
def table():
    return model_table(["dsnet", "cnn_small"], num_classes=2)


def test_rows(table):
    assert list(table) == [
        ModelRow("dsnet", "student", 268_898, (224, 224, 3), 2 * DSNET_224_MACS),
        ModelRow("cnn_small", "student", 162_458, (28, 28, 1), 2 * CNN_SMALL_28_MACS),
    ]
    assert len(table) == 2 and table.num_classes == 2


def test_format(table):
    assert str(table).splitlines() == [
        "name       role      params  input       FLOPs",
        "---------  -------  -------  ---------  ------",
        "dsnet      student  268,898  224x224x3  2.19 G",
        "cnn_small  student  162,458  28x28x1    32.9 M",
        "2 classes; FLOPs of one image = 2 x multiply-accumulates of conv and dense layers.",
    ]


def test_role_filter_and_class_count():
    table = model_table(["dsnet", "resnet18", "cnn_small"], num_classes=5, role="teacher")
    assert [row.name for row in table] == ["resnet18"]
    assert table.rows[0].params == 11_178_306 + 3 * 513
    with pytest.raises(ValueError, match="role must be None, 'teacher' or 'student', got 'any'"):
        model_table(["dsnet"], role="any")


def test_unknown_name():
    with pytest.raises(ValueError, match="Unknown model 'cnn'; available models: "):
        model_table(["cnn"])
