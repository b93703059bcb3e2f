"""Experiment configs are validated before any training, naming the key and the fix."""

import glob
import os
import tomllib

import pytest

from kdkeras import config as config_lib
from kdkeras.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quickstart_raw():
    with open(os.path.join(REPO, "experiments", "quickstart.toml"), "rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "experiments", "*.toml"))))
def test_every_shipped_experiment_is_valid(path):
    config = config_lib.load_config(path)
    assert config.name == os.path.basename(path)[:-5]
    assert config.teacher.model and config.student.model


def test_quickstart_by_name_and_round_trip_through_toml(tmp_path):
    config = config_lib.load_config("quickstart")
    assert config.data["loader"] == "medmnist" and config.distill.temperature == 4.0
    path = tmp_path / "resolved.toml"
    config_lib.save_config(config, path)
    again = config_lib.load_config(str(path))
    assert again.to_dict() == config.to_dict()


def test_overrides_apply_and_are_validated():
    config = config_lib.load_config("quickstart")
    updated = config_lib.apply_overrides(config, {"distill.temperature": 6, "data.batch_size": 32})
    assert updated.distill.temperature == 6.0 and updated.data["batch_size"] == 32
    assert config.distill.temperature == 4.0  # the original is untouched
    with pytest.raises(ConfigError, match=r"\[distill\] alpha = 1.5 must be in \[0, 1\]"):
        config_lib.apply_overrides(config, {"distill.alpha": 1.5})
    with pytest.raises(ConfigError, match="'nope' is not a config table"):
        config_lib.apply_overrides(config, {"nope.x": 1})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["teacher"].update(epoch=3), r"\[teacher\]: unknown key\(s\) 'epoch'. Allowed keys: .*epochs"),
        (lambda r: r.update(sead=1), r"unknown key\(s\) 'sead'. Allowed keys: .*seed"),
        (lambda r: r["teacher"].update(epochs="10"), r"\[teacher\]: epochs must be of type int, got '10'"),
        (lambda r: r["distill"].update(temperature=True), r"temperature must be of type float, got True"),
        (lambda r: r["distill"].update(temperature=0), r"\[distill\] temperature = 0.0 must be > 0"),
        (lambda r: r["teacher"].update(model="vgg19"), r"\[teacher\] model = 'vgg19' is unknown. Allowed: .*resnet18"),
        (lambda r: r["student"].update(optimizer="adamx"), r"optimizer = 'adamx' is unknown. Allowed: adam, adamw"),
        (lambda r: r["student"].update(monitor="auc"), r"monitor = 'auc' is unknown. Allowed: val_loss"),
        (lambda r: r["data"].update(loader="kaggle"), r"loader = 'kaggle' is unknown. Allowed: .*medmnist"),
        (lambda r: r["data"].update(batchsize=3), r"\[data\] key\(s\) 'batchsize' are not arguments of .*batch_size"),
        (lambda r: r.update(strategy="gpu"), r"strategy = 'gpu' is unknown. Allowed: auto, mirrored"),
        (lambda r: r.update(name="../x"), r"name = '../x' must be a plain folder name"),
        (lambda r: r["teacher"].update(epochs=0), r"\[teacher\] epochs = 0 must be >= 1"),
    ],
)
def test_bad_configs_are_rejected_with_the_key(mutate, message):
    raw = quickstart_raw()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        config_lib.from_dict(raw, source="q.toml")


def test_missing_file_lists_shipped_experiments(tmp_path):
    with pytest.raises(ConfigError, match="'nothere' not found.*quickstart"):
        config_lib.load_config("nothere")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        config_lib.load_config(str(bad))


def test_extends_lays_a_config_over_another(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(
        'name = "base"\nseed = 3\n[data]\nloader = "medmnist"\nflag = "pneumoniamnist"\nbatch_size = 64\n'
        '[teacher]\nmodel = "cnn_small"\nepochs = 7\n[student]\nmodel = "cnn_small"\nepochs = 9\n'
        'learning_rate = 0.003\nclass_weight = "balanced"\n[distill]\nalpha = 0.2\n'
    )
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\nname = "child"\n[data]\nbatch_size = 32\n[distill]\nepochs = 4\n')
    config = config_lib.load_config(str(child))
    assert (config.name, config.seed) == ("child", 3)
    assert config.data == {"loader": "medmnist", "flag": "pneumoniamnist", "batch_size": 32}
    assert (config.teacher.epochs, config.distill.alpha) == (7, 0.2)
    # [distill] takes [student]'s budget unless it sets a key itself.
    assert (config.distill.epochs, config.distill.learning_rate, config.distill.class_weight) == (4, 0.003, "balanced")
    assert config.path == str(child)


def test_extends_refuses_a_loop(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\nname = "b"\n')
    with pytest.raises(ConfigError, match=r"`extends` loops: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        config_lib.load_config(str(tmp_path / "a.toml"))


def test_shipped_features_experiment_differs_from_the_quickstart_by_its_features_only():
    quickstart = config_lib.load_config("quickstart").to_dict()
    features = config_lib.load_config("quickstart_features").to_dict()
    assert features["distill"].pop("features") and not quickstart["distill"].pop("features")
    changed = {key for key in quickstart if quickstart[key] != features[key]}
    assert changed == {"name", "description"}
