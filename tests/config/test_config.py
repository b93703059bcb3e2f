"""Experiment configs are validated before any training, naming the key and the fix."""

import glob
import os
import tomllib

import pytest

from kdkeras import config as config_lib
from kdkeras.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return str(path)


def test_extends_with_another_loader_replaces_the_data_table_and_the_name_is_the_file_stem(tmp_path):
    # The user's own chest X-ray folder on top of the quickstart (docs/workflow.md's example):
    # its medmnist keys must not leak in.
    with open(os.path.join(REPO, "docs", "workflow.md"), encoding="utf-8") as f:
        example = f.read().split("## Configs that compose")[1].split("```toml\n")[1].split("```")[0]
    path = _write(tmp_path, "my_xrays.toml", example)
    config = config_lib.load_config(path)
    assert config.data == {"loader": "xray_folder", "root": "data/chest_xray"}
    assert config.name == "my_xrays"  # not "quickstart": its runs would land in runs/quickstart/
    assert config.teacher.model == "resnet18"


def test_replace_true_drops_the_inherited_keys_of_one_table(tmp_path):
    path = _write(tmp_path, "c.toml", 'extends = "quickstart"\nname = "c"\n[student]\nreplace = true\nmodel = "cnn_small"\n')
    config = config_lib.load_config(path)
    assert (config.student.epochs, config.student.class_weight) == (10, "")  # the dataclass defaults
    assert config.teacher.epochs == 12  # other tables still merge
    with pytest.raises(ConfigError, match=r"c2.toml: \[student\] replace = 'yes' must be true or false"):
        config_lib.load_config(_write(tmp_path, "c2.toml", 'extends = "quickstart"\n[student]\nreplace = "yes"\n'))


def test_an_error_names_the_file_the_key_came_from(tmp_path):
    _write(tmp_path, "base.toml", 'extends = "quickstart"\n[distill]\ntemperature = 0\n[data]\nbatch_size = 0\n')
    child = _write(tmp_path, "child.toml", 'extends = "base.toml"\n[data]\nbatch_size = 8\n')
    with pytest.raises(ConfigError, match=r"child.toml \(inherited via extends from .*base.toml\): \[distill\] temperature"):
        config_lib.load_config(child)
    with pytest.raises(ConfigError, match=r"base.toml: \[data\] batch_size = 0"):
        config_lib.load_config(str(tmp_path / "base.toml"))
    with pytest.raises(ConfigError, match=r"child.toml \(set by an override\): \[data\] batch_size = -1"):
        config_lib.load_config(child, {"distill.temperature": 2.0, "data.batch_size": -1})


@pytest.mark.parametrize("spelling", ["./a.toml", "../{folder}/a.toml"])
def test_extends_refuses_a_loop_however_the_path_is_spelled(tmp_path, spelling):
    _write(tmp_path, "a.toml", f'extends = "{spelling.format(folder=tmp_path.name)}"\nname = "a"\n')
    with pytest.raises(ConfigError, match=r"`extends` loops: .*a\.toml -> .*a\.toml"):
        config_lib.load_config(str(tmp_path / "a.toml"))


def test_extends_refuses_a_chain_longer_than_the_limit(tmp_path):
    _write(tmp_path, "c0.toml", 'extends = "quickstart"\n')
    for i in range(1, 1200):
        _write(tmp_path, f"c{i}.toml", f'extends = "c{i - 1}.toml"\n')
    with pytest.raises(ConfigError, match=rf"chains more than {config_lib.MAX_EXTENDS_DEPTH} files"):
        config_lib.load_config(str(tmp_path / "c1199.toml"))
    assert config_lib.load_config(str(tmp_path / "c20.toml")).name == "c20"


def test_overrides_resolve_before_distill_inherits_the_student_budget(tmp_path):
    quickstart = config_lib.load_config("quickstart")
    updated = config_lib.apply_overrides(quickstart, {"student.epochs": 3})
    assert (updated.student.epochs, updated.distill.epochs) == (3, 3)
    assert updated.overrides == {"student.epochs": 3}
    again = config_lib.apply_overrides(updated, {"distill.alpha": 0.5})
    assert again.overrides == {"student.epochs": 3, "distill.alpha": 0.5} and again.distill.epochs == 3
    own = _write(tmp_path, "own.toml", 'extends = "quickstart"\n[distill]\nepochs = 7\n')
    assert config_lib.apply_overrides(config_lib.load_config(own), {"student.epochs": 3}).distill.epochs == 7
    assert config_lib.load_config(own, {"student.epochs": 3}).distill.epochs == 7


def test_checks_without_the_registries_catch_keys_types_and_ranges():
    raw = quickstart_raw()
    raw["teacher"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"\[teacher\] epochs = 0 must be >= 1"):
        config_lib.from_dict(raw, source="q.toml", registries=False)
    raw = quickstart_raw()
    raw["teacher"]["model"] = "vgg19"  # a name: checked with the registries only
    assert config_lib.from_dict(raw, source="q.toml", registries=False).teacher.model == "vgg19"


def test_a_run_records_the_overrides_it_was_given():
    from kdkeras.workflow.training import config_overrides

    config = config_lib.apply_overrides(config_lib.load_config("quickstart"), {"student.epochs": 3, "data.limit": 9})
    # distill.epochs follows by inheritance: it was not given, so it is not recorded.
    assert config_overrides(config) == {"data.limit": 9, "student.epochs": 3}
    assert config_overrides(config_lib.load_config("quickstart")) == {}
    # Given, though equal to the file's value: a record of what was asked, not a diff against the file.
    assert config_overrides(config_lib.apply_overrides(config, {"seed": 0})) == {
        "data.limit": 9, "seed": 0, "student.epochs": 3,
    }


def test_the_committed_references_match_the_schema_and_the_parser():
    reference = pytest.importorskip("kdkeras.reference")  # needs docstring_parser (the dev extra)
    for name, text in (("config.md", reference.config_markdown()), ("cli.md", reference.cli_markdown())):
        with open(os.path.join(REPO, "docs", "reference", name), encoding="utf-8") as f:
            assert f.read() == text, f"docs/reference/{name} is stale: run `python -m kdkeras.reference`"


def test_the_references_name_every_key_loader_argument_and_flag():
    from kdkeras import cli, reference
    from kdkeras.registry import LOADERS

    config_text, cli_text = reference.config_markdown(), reference.cli_markdown()
    for table in ("teacher", "distill", "sweep", "evaluate"):
        for key in config_lib.ExperimentConfig().to_dict()[table]:
            assert f"| `{key}` |" in config_text
    assert "| `val_fraction` | `0.1` |" in config_text.split('loader = "xray_folder"')[1]
    assert all(f'### `loader = "{name}"`' in config_text for name in LOADERS.names())
    assert "| `image_size` | unset |" in config_text and "| `min_val` | `100` |" in config_text
    distill = cli_text.split("## `kdkeras distill`")[1].split("## ")[0]
    teacher = cli_text.split("## `kdkeras teacher`")[1].split("## ")[0]
    assert "`--temperature`" in distill and "`--temperature`" not in teacher and "`--version`" in cli_text
    parser = cli.build_parser()
    parser.add_argument("--brand-new")
    assert "`--brand-new`" in reference.cli_markdown(parser)
