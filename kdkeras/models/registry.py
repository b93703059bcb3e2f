"""The model zoo by name: `get_model("vgg16_transfer", ...)`, `list_models()`.

The builders register themselves in `kdkeras.registry.MODELS` with their
metadata (`@MODELS.register("dsnet", role="student", ...)` in
`students.py` / `teachers.py`); this module reads that registry and checks
a model's arguments before building it.
"""

import dataclasses
import inspect
import operator
from collections.abc import Callable

import keras

from kdkeras import registry
from kdkeras.models import applications, hub
from kdkeras.models import weights as weights_lib

ROLES = ("teacher", "student")

# Builder arguments that get_model fills in itself; the rest are user options.
_BUILDER_ARGUMENTS = ("input_shape", "num_classes", "source")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An architecture of the zoo, as registered in `kdkeras.registry.MODELS`.

    Attributes:
        name: The zoo name, e.g. `"vgg16_transfer"`.
        role: `"teacher"` or `"student"`.
        builder: `builder(input_shape, num_classes, **options)` returning the
            model; pretrained builders also take `source`, a `WeightsSource`.
        default_input_shape: `(height, width, channels)` used when
            `get_model` gets no `input_shape`.
        min_input_size: Smallest height and width the architecture takes.
        pretrained: Whether `weights="imagenet"` is supported.
        description: The first line of the builder's docstring, naming the
            seed it reproduces.
    """

    name: str
    role: str
    builder: Callable
    default_input_shape: tuple
    min_input_size: int
    pretrained: bool
    description: str

    @property
    def options(self):
        """The `**options` `get_model` accepts for this model, with their defaults."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.builder).parameters.items()
            if name not in _BUILDER_ARGUMENTS
        }


def list_models(role=None):
    """Lists the architectures of the zoo.

    Args:
        role: `None` for all, `"teacher"` or `"student"`.

    Returns:
        A list of `ModelSpec`, sorted by name.

    Example:

    ```python
    [spec.name for spec in list_models("student")]
    ```
    """
    if role not in (None,) + ROLES:
        raise ValueError(f"list_models: role must be None, 'teacher' or 'student', got {role!r}.")
    specs = (get_spec(name) for name in sorted(registry.MODELS.names()))
    return [spec for spec in specs if role in (None, spec.role)]


@registry.CHECKS.register("model_spec")
def get_spec(name):
    """Returns the `ModelSpec` called `name`.

    Args:
        name: A zoo name, e.g. `"dsnet"`.

    Returns:
        The `ModelSpec`.

    Raises:
        ValueError: Unknown name; the message lists the available ones.
    """
    family = _family(name)
    if family is not None:
        return ModelSpec(name=name, **family.spec_arguments(name))
    if name not in registry.MODELS:
        raise ValueError(
            f"Unknown model {name!r}; available models: {', '.join(sorted(registry.MODELS.names()))}, "
            "keras:<Application> (e.g. keras:DenseNet121) and hub:<KerasHub preset>; `kdkeras list` shows them."
        )
    builder = registry.MODELS.lookup(name)
    return ModelSpec(
        name=name, builder=builder, description=registry.summary(builder), **registry.MODELS.metadata(name)
    )


def _family(name):
    """The module building the `keras:` or `hub:` family `name` belongs to, or None for a zoo name."""
    if not isinstance(name, str):
        return None
    if name.startswith(applications.PREFIX):
        return applications
    if name.startswith(hub.PREFIX):
        return hub
    return None


def get_model(name, input_shape=None, num_classes=2, weights=None, **options):
    """Builds a model of the zoo.

    The model reads float32 pixels in [0, 255] of shape `input_shape`, scales
    them in its first layer (`InputPreprocessing`), and outputs float32
    logits of shape `(batch, num_classes)` from a layer named `"logits"`.

    Args:
        name: A zoo name (see `list_models()`).
        input_shape: `(height, width, channels)`, channels 1 or 3; defaults to
            the spec's `default_input_shape`. Grayscale input of an ImageNet
            model is repeated to RGB inside the model.
        num_classes: Number of logits (2 for binary tasks).
        weights: `None`, `"imagenet"` (pretrained models only), a `.keras` /
            `.weights.h5` file saved from the same model, or a legacy `.h5`
            file of the base network (e.g. Keras's `*_notop.h5`).
        **options: Architecture options, e.g. `dropout`, `freeze_layers`
            (vgg16_transfer), `width` (resnet18), `width_multiplier`
            (mobilenetv2_tiny); `ModelSpec.options` lists them.

    Returns:
        A functional `keras.Model` named `name`.

    Raises:
        ValueError: Unknown name or option, bad shape or class count, input
            smaller than the architecture takes, or unusable weights.
        WeightsUnavailableError: ImageNet weights could not be downloaded.

    Example:

    ```python
    teacher = get_model("vgg16_transfer", (224, 224, 3), num_classes=3, weights="imagenet")
    student = get_model("cnn296k", (224, 224, 3), num_classes=3)
    ```
    """
    spec = get_spec(name)
    input_shape = _check_input_shape(spec, spec.default_input_shape if input_shape is None else input_shape)
    num_classes = _check_num_classes(name, num_classes)
    _check_options(spec, options)
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"{name}: kdkeras models read (height, width, channels) images, but Keras is set to "
            "channels_first; call keras.config.set_image_data_format('channels_last')."
        )
    source = weights_lib.parse_weights(name, weights, spec.pretrained)
    if spec.pretrained:
        options["source"] = source
    model = spec.builder(input_shape, num_classes, **options)
    if source.kind == "model":
        weights_lib.load_model_weights(model, source.path)
    return model


def _check_input_shape(spec, input_shape):
    try:
        shape = tuple(operator.index(dim) for dim in input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise ValueError(
            f"{spec.name}: input_shape must be (height, width, channels) with 1 or 3 channels, "
            f"got {input_shape!r}; e.g. input_shape={spec.default_input_shape}."
        )
    if min(shape[:2]) < spec.min_input_size:
        size = min(shape[:2])
        fits = [s.name for s in list_models() if s.min_input_size <= size]
        alternatives = f"; models that take {size} px: {', '.join(fits)}" if fits else ""
        raise ValueError(
            f"{spec.name} needs images of at least {spec.min_input_size}x{spec.min_input_size} "
            f"pixels, got {shape[0]}x{shape[1]}. Resize the images to >= {spec.min_input_size} px "
            f"(MedMNIST also comes in 64, 128 and 224 px){alternatives}."
        )
    return shape


def _check_num_classes(name, num_classes):
    try:
        count = None if isinstance(num_classes, bool) else operator.index(num_classes)
    except TypeError:
        count = None
    if count is None or count < 2:
        raise ValueError(
            f"{name}: num_classes must be an int >= 2 (binary tasks use 2 logits), got {num_classes!r}."
        )
    return count


def _check_options(spec, options):
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(f"{key}={value!r}" for key, value in spec.options.items()) or "none"
        raise ValueError(
            f"{spec.name} does not take option(s) {', '.join(unknown)}; its options (defaults): {accepted}."
        )


def family_listing():
    """Lines for `kdkeras list`: the `keras:` and `hub:` families and how to name a model file."""
    import importlib.util
    import textwrap

    names = applications.application_names()
    hub_state = (
        "installed" if importlib.util.find_spec("keras_hub") else f"not installed: {hub.INSTALL_HINT}"
    )
    rows = [
        (f"{applications.PREFIX}<Application>",
         f"any of the {len(names)} keras.applications networks of Keras {keras.__version__}, e.g. "
         "keras:DenseNet121 with weights = \"imagenet\"; options dropout, trainable = \"all\" | \"head\" | "
         f"\"last:N\", unfreeze_after = N epochs, and the application's own: {', '.join(names)}."),
        (f"{hub.PREFIX}<preset>",
         f"a KerasHub preset ({hub_state}): hub:dinov2_small, hub:kaggle://..., hub:hf://..., or "
         "hub:/path/to/preset/folder; options head = \"linear\" | \"finetune\" | \"classifier\", dropout."),
        ("path/to/model.keras",
         "[teacher] model = your own trained model: a .keras or .h5 file or a SavedModel folder, taking "
         "pixels in [0, 255] and returning logits; epochs = 0 evaluates it, epochs > 0 fine-tunes it."),
    ]
    lines = ["model families:"]
    for name, text in rows:
        wrapped = textwrap.wrap(text, 90, break_on_hyphens=False)
        lines.append(f"  {name:<24} {wrapped[0]}")
        lines.extend(f"  {'':<24} {line}" for line in wrapped[1:])
    return lines
