"""The registry mechanism, and `kdkeras list` printing every registry."""

import tomllib

import pytest

from kdkeras import cli, registry
from kdkeras import config as config_lib
from kdkeras.data import augmentation
from kdkeras.models import get_spec


@pytest.fixture
def colours():
    created = registry.Registry("test_colour", packages=("kdkeras.distillation",))
    yield created
    registry._REGISTRIES.pop("test_colour")


def test_register_get_names_and_errors(colours):
    @colours.register("red")
    def red(shade=1):
        """A red, in one line."""
        return ("red", shade)

    @colours.register("blue")
    class Blue:
        pass

    assert colours.names() == ("red", "blue")  # registration order
    assert colours.get("red", shade=3) == ("red", 3) and colours.lookup("blue") is Blue
    assert "red" in colours and "green" not in colours
    assert registry.summary(red) == "A red, in one line."
    assert registry.registries()["test_colour"] is colours
    with pytest.raises(ValueError, match="Unknown test_colour 'green'. Registered: red, blue."):
        colours.get("green")
    with pytest.raises(ValueError, match="name 'red' is taken by .*red; register .*lambda.* under another name"):
        colours.register("red")(lambda: None)
    with pytest.raises(ValueError, match="A registry of 'test_colour' already exists"):
        registry.Registry("test_colour")


def test_metadata_is_declared_by_the_registry_and_given_by_every_entry(colours):
    sized = registry.Registry("test_sized", metadata=("size",))
    try:

        @sized.register("small", size=1)
        def small():
            """Small."""

        assert sized.metadata("small") == {"size": 1}
        sized.metadata("small")["size"] = 2  # a copy: the registry keeps its own
        assert sized.metadata("small") == {"size": 1}
        with pytest.raises(TypeError, match="register\\(\\) takes the metadata size; missing: size, unknown: none"):
            sized.register("big")
        with pytest.raises(TypeError, match="missing: none, unknown: colour"):
            sized.register("big", size=3, colour="red")
        with pytest.raises(TypeError, match="takes the metadata none; missing: none, unknown: size"):
            colours.register("pink", size=1)
        with pytest.raises(ValueError, match="Unknown test_sized 'big'"):
            sized.metadata("big")
    finally:
        registry._REGISTRIES.pop("test_sized")


def test_models_and_augmentations_are_registered_with_their_metadata():
    assert registry.MODELS.metadata("dsnet") == {
        "role": "student", "default_input_shape": (224, 224, 3), "min_input_size": 18, "pretrained": False,
    }
    spec = get_spec("vgg16_transfer")
    assert spec.builder is registry.MODELS.lookup("vgg16_transfer") and spec.pretrained and spec.role == "teacher"
    assert spec.description == registry.summary(spec.builder)
    assert registry.AUGMENTATIONS.names() == ("light", "xray", "dermoscopy")
    layer = augmentation("xray", seed=5)
    assert layer.name == "augment_xray" and layer.seed == 5 and layer.vertical_flip and layer.brightness == (0.7, 1.3)


@pytest.fixture
def sepia():
    @registry.AUGMENTATIONS.register("test_sepia")
    def build(seed=0):
        """A test augmentation."""
        return augmentation("light", seed=seed)

    yield build
    registry.AUGMENTATIONS._entries.pop("test_sepia")
    registry.AUGMENTATIONS._metadata.pop("test_sepia")


def test_config_validation_reads_the_registries(sepia):
    with open(config_lib.resolve_path("quickstart"), "rb") as f:
        raw = tomllib.load(f)
    raw["data"]["augment"] = "sepia"
    with pytest.raises(config_lib.ConfigError, match=r"q.toml: \[data\] augment = 'sepia' is unknown. Allowed: light, xray, dermoscopy"):
        config_lib.from_dict(raw, source="q.toml")
    raw["data"]["augment"] = "test_sepia"
    assert config_lib.from_dict(raw, source="q.toml").data["augment"] == "test_sepia"
    raw["teacher"]["model"] = "vgg19"
    with pytest.raises(config_lib.ConfigError, match=r"\[teacher\] model = 'vgg19' is unknown. Allowed: cnn296k, .*vgg16_transfer"):
        config_lib.from_dict(raw, source="q.toml")


def test_optional_metadata_takes_its_default_and_an_unlisted_registry_stays_out_of_the_list():
    hidden = registry.Registry("test_hidden", metadata={"size": 1}, listed=False)
    try:
        hidden.register("plain")(lambda: None)
        hidden.register("big", size=3)(lambda: None)
        assert hidden.metadata("plain") == {"size": 1} and hidden.metadata("big") == {"size": 3}
        assert "test_hidden" not in registry.registries()
        assert registry.registries(listed=False)["test_hidden"] is hidden
    finally:
        registry._REGISTRIES.pop("test_hidden")


def test_loaders_declare_their_local_paths_and_aliases(tmp_path):
    assert registry.LOADERS.metadata("ham10000")["local_paths"] == ("metadata_csv", "image_dirs")
    assert registry.LOADERS.metadata("xray_folder")["local_paths"] == ("root",)
    assert registry.LOADERS.metadata("tfds") == {"local_paths": (), "resolve": None}
    resolve = registry.LOADERS.metadata("medmnist")["resolve"]
    assert resolve({"flag": "pneumoniamnist", "root": "@bundled"})["root"].endswith("kdkeras/data/bundled")
    assert resolve({"root": str(tmp_path)}) == {"root": str(tmp_path)}


def test_validation_reads_requires_not_the_loss_name():
    with open(config_lib.resolve_path("quickstart"), "rb") as f:
        raw = tomllib.load(f)
    raw["labeled_fraction"] = 0.5
    raw["distill"].update(transfer_set="train", loss="knowledge_distillation")
    assert config_lib.from_dict(raw, source="q.toml").distill.transfer_set == "train"

    @registry.DISTILLATION_TERMS.register("test_label_reader")
    class LabelReader(registry.DISTILLATION_TERMS.lookup("knowledge_distillation")):
        """Reads the labels, like decoupled_kd, under another name."""

        requires = ("teacher_logits", "labels")

    try:
        raw["distill"]["loss"] = "test_label_reader"
        with pytest.raises(config_lib.ConfigError, match="transfer_set needs a loss that does not read labels; "
                                                         "'test_label_reader' does"):
            config_lib.from_dict(raw, source="q.toml")
    finally:
        registry.DISTILLATION_TERMS._entries.pop("test_label_reader")
        registry.DISTILLATION_TERMS._metadata.pop("test_label_reader")


def test_registries_fill_themselves_on_first_lookup():
    assert registry.DISTILLATION_TERMS.names()[:3] == ("knowledge_distillation", "decoupled_kd", "multilabel_kd")
    assert "dist" in registry.DISTILLATION_TERMS
    assert registry.FEATURE_LOSSES.names() == ("hint", "attention", "cosine")


def test_kdkeras_list_prints_every_registry(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("distillation_term:", "feature_loss:", "optimizer:", "loader:", "model:", "augmentation:"):
        assert kind in out
    assert "check:" not in out
    assert "  dist " in out and "Huang et al., NeurIPS 2022" in out
    assert "  attention " in out and "  cnn_small " in out
    assert "  xray                     Seed 002's chest X-ray set" in out
