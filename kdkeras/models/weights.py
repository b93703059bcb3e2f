"""Where a zoo model's weights come from: ImageNet, a local base file or a saved model.

`weights` of `get_model` takes four forms:

- `None`: random initialization.
- `"imagenet"`: the base network downloads its ImageNet weights through
  `keras.applications` (cached in `~/.keras/models/`, or `$KERAS_HOME/models/`).
- a path to a legacy `.h5` file: ImageNet (or other) weights of the base network
  alone, such as the `*_notop.h5` file `keras.applications` downloads; the way to
  use ImageNet weights on a machine without internet.
- a path to a `.weights.h5` or `.keras` file: the weights of the whole model,
  saved by Keras from a model built with the same name, input shape, class
  count and options.
"""

import dataclasses
import os
import urllib.error
import zipfile

# What keras.applications downloads for `include_top=False` (see its source).
IMAGENET_FILES = {
    "vgg16": (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "resnet50": (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "efficientnetb0": "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
}

# Keras adds a fixed input rescaling to EfficientNet that its ImageNet weights
# need only when it downloads them itself (weights="imagenet"); loaded from a
# path, the same file would see inputs about 2x off. These families read local
# ImageNet files only from the Keras cache.
CACHE_ONLY = ("efficientnetb0",)


class WeightsUnavailableError(OSError):
    """ImageNet weights could not be downloaded (typically: no internet)."""


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """A validated `weights` argument.

    Attributes:
        kind: `None`, `"imagenet"`, `"base"` (a file for the base network) or
            `"model"` (a file for the whole model).
        path: The file, for `"base"` and `"model"`.
    """

    kind: str | None
    path: str | None = None

    @property
    def base_weights(self):
        """The `weights` argument for a `keras.applications` base network."""
        if self.kind == "imagenet":
            return "imagenet"
        if self.kind == "base":
            return self.path
        return None


def parse_weights(model_name, weights, pretrained):
    """Validates the `weights` argument of `get_model` before anything is built.

    Args:
        model_name: The zoo name, for error messages.
        weights: `None`, `"imagenet"` or a file path.
        pretrained: Whether the architecture has an ImageNet base network.

    Returns:
        A `WeightsSource`.

    Raises:
        ValueError: `"imagenet"` for a model without ImageNet weights, a missing
            file, or a file type that cannot hold weights.
    """
    if weights is None:
        return WeightsSource(None)
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"{model_name}: weights must be None, 'imagenet' or a file path, got {weights!r}."
        )
    weights = os.fspath(weights)
    if weights == "imagenet":
        if not pretrained:
            raise ValueError(
                f"{model_name} has no ImageNet weights (it is trained from scratch); use "
                "weights=None, or a pretrained model: efficientnet_b0, resnet50, vgg16_transfer."
            )
        return WeightsSource("imagenet")
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise ValueError(
            f"{model_name}: weights file {path!r} does not exist; pass weights=None, "
            "'imagenet', or the path of a .keras / .weights.h5 file."
        )
    if path.endswith((".keras", ".weights.h5")):
        return WeightsSource("model", path)
    if path.endswith((".h5", ".hdf5")):
        if not pretrained:
            raise ValueError(
                f"{model_name}: {path!r} is a legacy .h5 file, which kdkeras reads as the "
                f"weights of a keras.applications base network, and {model_name} has none; "
                "save the model's weights with model.save_weights('name.weights.h5') and pass that."
            )
        return WeightsSource("base", path)
    raise ValueError(
        f"{model_name}: cannot read weights from {path!r}: expected a .keras or .weights.h5 "
        "file (whole model) or a legacy .h5 file (base network weights, pretrained models only)."
    )


def build_base(constructor, family, source, **kwargs):
    """Builds a `keras.applications` base network without its top.

    Args:
        constructor: E.g. `keras.applications.VGG16`.
        family: Key of `IMAGENET_FILES` (e.g. `"vgg16"`), for error messages.
        source: The `WeightsSource` of the model.
        **kwargs: More constructor arguments (`input_tensor`, `input_shape`).

    Returns:
        The base `keras.Model`.

    Raises:
        WeightsUnavailableError: The ImageNet weights could not be downloaded.
        ValueError: A local base weights file does not fit the network.
    """
    if source.kind == "base" and family in CACHE_ONLY:
        file_name = os.path.basename(IMAGENET_FILES[family])
        raise ValueError(
            f"{family} base weights cannot be loaded from a path ({source.path!r}): Keras applies "
            "the input rescaling its ImageNet weights need only with weights='imagenet'. Copy the "
            f"file to ~/.keras/models/{file_name} (or $KERAS_HOME/models/) and pass weights='imagenet'."
        )
    try:
        return constructor(include_top=False, weights=source.base_weights, **kwargs)
    except Exception as error:
        if source.kind == "imagenet" and is_download_failure(error):
            raise WeightsUnavailableError(_offline_message(family, error)) from error
        if source.kind == "base":
            url = IMAGENET_FILES[family]
            raise ValueError(
                f"Could not load {family} base weights from {source.path!r}: {_gist(error)}. "
                f"Expected a Keras {family} weights file without top, such as "
                f"{os.path.basename(url)} from {url}."
            ) from error
        raise


def load_model_weights(model, path):
    """Loads a `.keras` or `.weights.h5` file into a whole model.

    Args:
        model: The freshly built model.
        path: The weights file.

    Raises:
        ValueError: The file is unreadable or its weights do not match the model's.
    """
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{model.name}: could not load the weights in {path!r} ({_gist(error)}). The file must "
            "be a complete Keras save of a model built with the same name, input_shape, "
            "num_classes and options."
        ) from error


def _gist(error):
    # Keras's mismatch errors embed whole variable values: keep the shapes, drop the numbers.
    text = str(error).split("Target variable:")[0]
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:400] + "..."


def is_download_failure(error):
    """Whether `error` is a failed download (no internet, refused connection, HTTP error)."""
    return isinstance(error, (urllib.error.URLError, OSError)) or "URL fetch failure" in str(error)


def _offline_message(family, error):
    url = IMAGENET_FILES[family]
    file_name = os.path.basename(url)
    cache = f"copy it to ~/.keras/models/{file_name} (or $KERAS_HOME/models/) and keep weights='imagenet'"
    if family in CACHE_ONLY:
        fixes = f"{cache}."
    else:
        fixes = f"either {cache}, or pass its path: weights='/path/to/{file_name}'."
    return (
        f"The ImageNet weights of {family} could not be downloaded from {url} ({error}). "
        f"Without internet, download {file_name} on another machine, then {fixes}"
    )
