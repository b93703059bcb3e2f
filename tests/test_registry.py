"""The registry mechanism, and `kdkeras list` printing every registry."""

import pytest

from kdkeras import cli, registry


@pytest.fixture
def colours():
    created = registry.Registry("test_colour", modules=("kdkeras.losses",))
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


def test_registries_fill_themselves_on_first_lookup():
    assert registry.DISTILLATION_TERMS.names()[:3] == ("knowledge_distillation", "decoupled_kd", "multilabel_kd")
    assert "dist" in registry.DISTILLATION_TERMS
    assert registry.FEATURE_LOSSES.names() == ("hint", "attention", "cosine")


def test_kdkeras_list_prints_every_registry(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("distillation_term:", "feature_loss:", "model:"):
        assert kind in out
    assert "  dist " in out and "Huang et al., NeurIPS 2022" in out
    assert "  attention " in out and "  cnn_small " in out
