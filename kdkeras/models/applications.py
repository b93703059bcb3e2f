"""Any `keras.applications` network as a teacher or student: `model = "keras:DenseNet121"`.

The names are read from `keras.applications` itself, so every application
the installed Keras ships is available, and none is listed by hand. Each
model is built as

    raw pixels [0, 255] -> ApplicationPreprocessing (gray -> RGB, the family's
    own `preprocess_input`) -> the application without top -> global average
    pooling -> Dropout -> Dense(num_classes) -> "logits"

so a saved `.keras` file carries its preprocessing and takes raw images.
"""

import functools
import inspect
import re

import keras

from kdkeras.models import weights as weights_lib
from kdkeras.models.outputs import logits_output

PREFIX = "keras:"
# The sub-model holding the application; the unfreeze schedule looks it up by name.
BASE_NAME = "base"
# Constructor arguments kdkeras sets itself; the application's others become options.
# Set by kdkeras, or used only by the top kdkeras replaces: MobileNet's `dropout` is its
# top's (kdkeras's head has its own `dropout`, which it would otherwise collide with).
_FIXED_ARGUMENTS = (
    "include_top", "weights", "input_tensor", "input_shape", "pooling", "classes", "classifier_activation", "name",
    "dropout",
)
# keras.applications adds the input rescaling their ImageNet weights need only when
# it downloads them itself; from a path the same file would see inputs ~2x off.
_CACHE_ONLY_FAMILIES = ("efficientnet",)


def application_names():
    """The names of every application in `keras.applications`, sorted, e.g. `"DenseNet121"`."""
    return sorted(
        name for name, value in vars(keras.applications).items()
        if name[:1].isupper() and callable(value) and _family_module(value) is not None
    )


def family(application):
    """The `keras.applications` module of an application, e.g. `"densenet"` for `"DenseNet121"`."""
    return _family_module(_constructor(application)).__name__.rsplit(".", 1)[-1]


def _family_module(constructor):
    module_name = getattr(constructor, "__module__", "").rsplit(".", 1)[-1]
    module = getattr(keras.applications, module_name, None)
    return module if hasattr(module, "preprocess_input") else None


def _constructor(application):
    constructor = getattr(keras.applications, application, None)
    if not application[:1].isupper() or not callable(constructor) or _family_module(constructor) is None:
        close = [name for name in application_names() if name.lower().startswith(application.lower()[:5])]
        hint = f" Did you mean {', '.join(PREFIX + n for n in close)}?" if close else ""
        raise ValueError(
            f"Unknown Keras application {PREFIX}{application}.{hint} `kdkeras list` shows all "
            f"{len(application_names())} (keras.applications of Keras {keras.__version__})."
        )
    return constructor


@keras.saving.register_keras_serializable(package="kdkeras")
class ApplicationPreprocessing(keras.layers.Layer):
    """Runs a `keras.applications` family's own `preprocess_input` inside the model.

    Datasets yield float32 pixels in [0, 255]; this layer repeats grayscale
    to RGB (ImageNet networks read 3 channels) and applies the family's
    `preprocess_input` (`keras.applications.<family>.preprocess_input`), so a
    saved model takes raw images. Families that normalize inside the network
    (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3) have an identity
    `preprocess_input`, which this layer applies all the same.

    Args:
        family: The `keras.applications` module name, e.g. `"densenet"`.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Example:

    ```python
    x = ApplicationPreprocessing("densenet")(keras.Input((64, 64, 1)))  # (None, 64, 64, 3)
    ```
    """

    def __init__(self, family, **kwargs):
        super().__init__(**kwargs)
        module = getattr(keras.applications, family, None)
        if not hasattr(module, "preprocess_input"):
            raise ValueError(
                f"ApplicationPreprocessing: {family!r} is not a keras.applications module with a "
                "preprocess_input function, e.g. 'densenet' or 'resnet_v2'."
            )
        self.family = family
        self._preprocess = module.preprocess_input

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = keras.ops.repeat(x, 3, axis=-1)
        return self._preprocess(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)

    def get_config(self):
        config = super().get_config()
        config["family"] = self.family
        return config


def spec_arguments(name):
    """The `ModelSpec` fields of `"keras:<Application>"` (see `kdkeras.models.registry.get_spec`)."""
    application = name[len(PREFIX):]
    constructor = _constructor(application)
    builder = functools.partial(build_application, application)
    extra = [
        parameter for key, parameter in inspect.signature(constructor).parameters.items()
        if key not in _FIXED_ARGUMENTS
    ]
    # The options a config may set: not the application, nor the zoo's own `name`, nor **options.
    own = [p for p in list(inspect.signature(build_application).parameters.values())[1:-1] if p.name != "name"]
    builder.__signature__ = inspect.Signature(own + extra)
    return dict(
        role="teacher", builder=builder, default_input_shape=(224, 224, 3), min_input_size=32, pretrained=True,
        description=f"keras.applications.{application} without top, with a {family(application)} "
        "preprocess_input layer and a Dense logits head.",
    )


def build_application(
    application, input_shape, num_classes, source=weights_lib.WeightsSource(None), dropout=0.2,
    trainable="all", unfreeze_after=0, name=None, **application_options,
):
    """Builds `keras.applications.<application>` with kdkeras's preprocessing and head.

    Args:
        application: E.g. `"DenseNet121"`.
        input_shape: `(height, width, channels)`, channels 1 (repeated to RGB) or 3.
        num_classes: Number of logits.
        source: A `WeightsSource`: random, `"imagenet"` or a legacy `.h5` base file.
        dropout: Dropout rate before the classifier.
        trainable: `"all"`, `"head"` (the application frozen) or `"last:N"`
            (its last N layers train).
        unfreeze_after: With `trainable` other than `"all"`: epochs after which
            the whole application trains (`kdkeras.workflow.callbacks.UnfreezeBase`,
            which the workflow adds); 0 never.
        name: The model's name; defaults to the application's, lower case.
        **application_options: The application's own arguments, e.g.
            `alpha` and `minimalistic` for MobileNetV3Small.

    Returns:
        A functional `keras.Model` named `name` or after the application, whose
        application is the sub-model named `"base"`.
    """
    frozen_layers = _frozen_layer_count(application, trainable, unfreeze_after)
    fam = family(application)
    if source.kind == "base" and fam in _CACHE_ONLY_FAMILIES:
        raise ValueError(
            f"{PREFIX}{application}: base weights cannot be loaded from a path ({source.path!r}): Keras "
            "applies the input rescaling its ImageNet weights need only with weights='imagenet'. Copy "
            "the file into keras.utils.get_file's cache, ~/.keras/models/ (or $KERAS_HOME/models/), "
            "and pass weights='imagenet'."
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = ApplicationPreprocessing(fam, name="preprocessing")(inputs)
    base = _build_base(application, source, tuple(input_shape[:2]) + (3,), application_options)
    if frozen_layers is not None:
        for layer in base.layers[:frozen_layers]:
            layer.trainable = False
    # A pretrained base keeps its BatchNorm statistics (inference mode) even once unfrozen,
    # as the Keras transfer-learning guide does: a small medical data set would overwrite them.
    x = base(x, training=False) if source.kind is not None else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name=name or application.lower())


def _frozen_layer_count(application, trainable, unfreeze_after):
    """How many leading base layers are frozen: None (all train), or a count; validates both options."""
    match = re.fullmatch(r"last:(\d+)", trainable) if isinstance(trainable, str) else None
    if trainable not in ("all", "head") and match is None:
        raise ValueError(
            f"{PREFIX}{application}: trainable must be 'all', 'head' or 'last:N' (the last N layers "
            f"of the base train), got {trainable!r}."
        )
    if isinstance(unfreeze_after, bool) or not isinstance(unfreeze_after, int) or unfreeze_after < 0:
        raise ValueError(f"{PREFIX}{application}: unfreeze_after must be a whole number of epochs >= 0, got {unfreeze_after!r}.")
    if unfreeze_after and trainable == "all":
        raise ValueError(
            f"{PREFIX}{application}: unfreeze_after = {unfreeze_after} unfreezes a frozen base, but "
            "trainable = 'all' freezes nothing: set trainable = 'head' or 'last:N'."
        )
    if trainable == "all":
        return None
    if trainable == "head":
        return 10**9
    return -int(match.group(1)) if int(match.group(1)) else 10**9


def _build_base(application, source, input_shape, options):
    constructor = _constructor(application)
    try:
        # One fixed name lets the unfreeze schedule and feature distillation find the base.
        base = constructor(
            include_top=False, weights=source.base_weights, input_shape=input_shape, name=BASE_NAME, **options
        )
    except Exception as error:
        if source.kind == "imagenet" and weights_lib.is_download_failure(error):
            raise weights_lib.WeightsUnavailableError(_offline_message(application, error)) from error
        if isinstance(error, (ValueError, TypeError)):
            raise ValueError(f"{PREFIX}{application}: {error}") from error
        raise
    return base


def _offline_message(application, error):
    url = re.search(r"https?://\S+?(?=[:\s]|$)", str(error))
    url = url.group(0) if url else f"the URL in keras/src/applications/{family(application)}.py"
    file_name = url.rsplit("/", 1)[-1] if url.startswith("http") else f"{application.lower()}_notop.h5"
    return (
        f"The ImageNet weights of {PREFIX}{application} could not be downloaded ({error}). On a machine "
        f"with internet, run keras.applications.{application}(include_top=False) once (or download "
        f"{url}); copy {file_name} to ~/.keras/models/ here (keras.utils.get_file's cache; "
        "$KERAS_HOME/models/ if KERAS_HOME is set) and keep weights = 'imagenet', or pass its path: "
        f"weights = '/path/to/{file_name}'."
    )
