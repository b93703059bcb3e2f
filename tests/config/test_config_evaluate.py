"""The [evaluate] table: operating point and Grad-CAM layers, validated and round-tripped."""

import os
import tomllib

import pytest

from kdkeras import config as config_lib
from kdkeras.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _raw(**evaluate):
    with open(os.path.join(REPO, "experiments", "quickstart.toml"), "rb") as f:
        raw = tomllib.load(f)
    raw["evaluate"] = evaluate
    return raw


def test_default_is_the_plain_half_threshold():
    config = config_lib.from_dict(_raw())
    assert config.evaluate.operating_point == {} and config.evaluate.gradcam_layers == {}
    # The quickstart asks for a screening threshold.
    assert config_lib.load_config("quickstart").evaluate.operating_point == {"sensitivity": 0.95}


@pytest.mark.parametrize("point", [{"sensitivity": 0.95}, {"specificity": 0.9}, {"youden": True}])
def test_valid_operating_points_round_trip_through_toml(point, tmp_path):
    config = config_lib.from_dict(_raw(operating_point=point, gradcam_layers={"teacher": "stage3_relu2"}))
    path = tmp_path / "resolved.toml"
    config_lib.save_config(config, path)
    again = config_lib.load_config(str(path))
    assert again.evaluate.operating_point == point
    assert again.evaluate.gradcam_layers == {"teacher": "stage3_relu2"}


@pytest.mark.parametrize("evaluate, message", [
    ({"operating_point": {"sensitivity": 95}}, r"\[evaluate\] .*must be a number in \(0, 1\]"),
    ({"operating_point": {"recall": 0.9}}, r"\[evaluate\] .*one of \{sensitivity = 0.95\}"),
    ({"operating_point": 0.95}, r"\[evaluate\]: operating_point must be of type dict"),
    ({"gradcam_layers": {"teacher_model": "conv"}}, r"\[evaluate\] gradcam_layers .*teacher, student or distilled"),
    ({"threshold": 0.3}, r"\[evaluate\]: unknown key\(s\) 'threshold'"),
])
def test_bad_evaluate_tables_are_rejected_with_the_key(evaluate, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.from_dict(_raw(**evaluate), source="q.toml")


def test_override_from_the_command_line():
    config = config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                        {"evaluate.operating_point": {"specificity": 0.8}})
    assert config.evaluate.operating_point == {"specificity": 0.8}
