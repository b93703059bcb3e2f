"""Any KerasHub preset as a teacher: `model = "hub:dinov2_base"` (needs `pip install kdkeras[hub]`).

The preset is a KerasHub preset name, a `kaggle://` or `hf://` handle, or a
local preset folder (one written by `backbone.save_to_preset(folder)`). The
model is built as

    raw pixels [0, 255] -> gray -> RGB -> the preset's ImageConverter (resize,
    scale; 1/255 when the preset has none) -> head -> "logits"

with three heads: `"linear"` (the backbone frozen, a Dense layer on its
pooled features: the linear probe of MedMNIST+), `"finetune"` (the same,
the backbone training too) and `"classifier"` (the preset's own
`ImageClassifier` task with `num_classes` logits, for backbones that have one).
"""

import importlib
import os

import keras

from kdkeras.models import weights as weights_lib
from kdkeras.models.outputs import logits_output
from kdkeras.models.preprocessing import InputPreprocessing

PREFIX = "hub:"
HEADS = ("linear", "finetune", "classifier")
INSTALL_HINT = "pip install 'kdkeras[hub]' (keras-hub, which pulls tensorflow-text; no torch)"


def keras_hub():
    """Imports keras_hub, or fails with the command that installs it."""
    try:
        return importlib.import_module("keras_hub")
    except ImportError as error:
        raise ImportError(f"hub: models need KerasHub: {INSTALL_HINT}. ({error})") from error


@keras.saving.register_keras_serializable(package="kdkeras")
class FeaturePooling(keras.layers.Layer):
    """One feature vector per image from a backbone's output.

    A convolutional feature map `(batch, height, width, channels)` is
    averaged over its positions; a transformer's token sequence
    `(batch, tokens, dim)` gives its first (class) token, the feature a
    DINOv2 or ViT linear probe reads.
    """

    def call(self, inputs):
        if len(inputs.shape) == 4:
            return keras.ops.mean(inputs, axis=(1, 2))
        if len(inputs.shape) == 3:
            return inputs[:, 0, :]
        return inputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def spec_arguments(name):
    """The `ModelSpec` fields of `"hub:<preset>"` (see `kdkeras.models.registry.get_spec`)."""
    if len(name) <= len(PREFIX):
        raise ValueError(
            "hub: needs a preset after the colon: a KerasHub preset name (hub:dinov2_small), "
            "hub:kaggle://<owner>/<model>/keras/<variant>, hub:hf://<user>/<repo> or hub:/path/to/preset/folder."
        )

    def builder(input_shape, num_classes, source=weights_lib.WeightsSource(None), head="linear", dropout=0.0):
        return build_hub_model(name[len(PREFIX):], input_shape, num_classes, source, head, dropout)

    builder.__doc__ = build_hub_model.__doc__
    return dict(
        role="teacher", builder=builder, default_input_shape=(224, 224, 3), min_input_size=1, pretrained=True,
        description=f"KerasHub preset {name[len(PREFIX):]} with a linear, fine-tuned or classifier head.",
    )


def build_hub_model(preset, input_shape, num_classes, source=weights_lib.WeightsSource(None), head="linear", dropout=0.0):
    """Builds a logits model from a KerasHub preset.

    Args:
        preset: A preset name, `kaggle://` or `hf://` handle, or local preset folder.
        input_shape: `(height, width, channels)` of the raw images, channels 1 or 3.
        num_classes: Number of logits.
        source: `WeightsSource(None)` keeps the preset's weights (a preset
            always carries weights); `"imagenet"` is the same; a whole-model
            `.keras` / `.weights.h5` file is loaded by `get_model` afterwards.
        head: `"linear"`, `"finetune"` or `"classifier"` (see the module).
        dropout: Dropout rate before the Dense layer (linear and finetune heads).

    Returns:
        A functional `keras.Model` named `"hub_model"`.
    """
    if head not in HEADS:
        raise ValueError(f"hub:{preset}: head must be one of {', '.join(HEADS)}, got {head!r}.")
    if source.kind == "base":
        raise ValueError(
            f"hub:{preset}: a preset carries its own weights; pass weights = '' (the preset's), or a "
            f".keras / .weights.h5 file saved from this same model, not {source.path!r}."
        )
    hub = keras_hub()
    inputs = keras.Input(shape=input_shape, name="image")
    x = InputPreprocessing("none", channels=3, name="to_rgb")(inputs)
    if head == "classifier":
        # The preprocessor resizes and scales outside the model; its converter goes inside instead.
        task = _from_preset(
            preset, hub.models.ImageClassifier, num_classes=num_classes, activation=None, preprocessor=None
        )
        x = _convert(x, _image_converter(hub, preset), task.backbone)
        x = task(x)
    else:
        backbone = _from_preset(preset, hub.models.Backbone)
        backbone.trainable = head == "finetune"
        x = _convert(x, _image_converter(hub, preset), backbone)
        # Some backbones (DINOv2) name their input in a dict: call them with the same structure.
        x = {"images": x} if isinstance(backbone.input, dict) else x
        x = FeaturePooling(name="head_pool")(backbone(x, training=False) if head == "linear" else backbone(x))
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="hub_model")


def _from_preset(preset, cls, **kwargs):
    try:
        return cls.from_preset(preset, **kwargs)
    except Exception as error:
        if not os.path.isdir(os.path.expanduser(preset)) and weights_lib.is_download_failure(error):
            raise weights_lib.WeightsUnavailableError(
                f"hub:{preset}: the preset could not be downloaded ({error}). {_fetch_hint(preset)}"
            ) from error
        raise ValueError(
            f"hub:{preset}: {cls.__name__}.from_preset failed: {str(error).rstrip('.')}. {_fetch_hint(preset)}"
        ) from error


def _image_converter(hub, preset):
    try:
        return hub.layers.ImageConverter.from_preset(preset)
    except FileNotFoundError:
        return None  # a bare backbone saved with save_to_preset: pixels are scaled to [0, 1]


def _convert(x, converter, backbone):
    if converter is not None:
        return converter(x)
    x = keras.layers.Rescaling(1 / 255.0, name="rescaling")(x)
    size = tuple(backbone.input_shape[1:3])
    if None not in size and size != tuple(x.shape[1:3]):
        x = keras.layers.Resizing(*size, antialias=True, name="resizing")(x)
    return x


def _fetch_hint(preset):
    if os.path.isdir(os.path.expanduser(preset)):
        return "The folder must hold a preset written by backbone.save_to_preset (config.json, model.weights.h5)."
    return (
        "KerasHub downloads a preset's weights on first use (kaggle:// and names from Kaggle, hf:// from "
        "Hugging Face) into its cache: on a machine without internet, run the same config once on one "
        "with internet (e.g. Colab), or download the preset there and pass its folder: "
        "model = 'hub:/path/to/preset'. Gated presets (e.g. MedSigLIP) need their licence accepted and a "
        "login (KAGGLE_USERNAME/KAGGLE_KEY or HF_TOKEN); docs/teachers.md says how."
    )
