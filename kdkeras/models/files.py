"""A trained model of your own as a teacher: `[teacher] model = "path/to/model.keras"`.

Three formats load: a Keras 3 `.keras` file (in safe mode, see
`kdkeras.files.load_model`), a legacy Keras 2 `.h5` model file, and a
TensorFlow SavedModel folder (wrapped in a `keras.layers.TFSMLayer`, its
`serving_default` signature). The model must take raw pixels in [0, 255]
(kdkeras's data) and return logits, one per class.
"""

import os

import keras

from kdkeras import files as files_lib
from kdkeras.config.paths import MODEL_SUFFIXES, is_model_path  # noqa: F401  (re-exported)


def check_model_path(path):
    """Why `path` cannot be loaded as a model (a sentence), or None when it can."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return None
        return f"{path!r} is a folder without saved_model.pb: expected a TensorFlow SavedModel folder."
    if not os.path.isfile(path):
        return f"{path!r} does not exist."
    if not path.endswith(MODEL_SUFFIXES):
        return f"{path!r} is not a model file: expected .keras, .h5 or a SavedModel folder."
    return None


def load_model_file(path, unsafe_load=False):
    """Loads a user's model file as a Keras model from pixels to logits.

    Args:
        path: A `.keras` or legacy `.h5` file, or a SavedModel folder.
        unsafe_load: Load a `.keras` file that stores Python code (see
            `kdkeras.files.load_model`); only for files you trust.

    Returns:
        A `keras.Model` with one image input and one output.

    Raises:
        ValueError: The path is missing or not a model, or the model has
            several inputs or outputs, or ends in a softmax or sigmoid.
    """
    problem = check_model_path(path)
    if problem is not None:
        raise ValueError(f"[teacher] model = {path!r}: {problem}")
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        model = _saved_model(path)
    elif path.endswith(".keras"):
        model = files_lib.load_model(path, unsafe_load=unsafe_load)
    else:
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=not unsafe_load)
        except Exception as error:
            raise ValueError(
                f"[teacher] model = {path!r}: Keras could not load this .h5 model file ({error}). "
                "Load it where it was trained and save it as .keras: model.save('teacher.keras')."
            ) from error
    _check_signature(model, path)
    return model


def _saved_model(path):
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default", name="saved_model")
    specs = _input_spec(path)
    inputs = keras.Input(shape=tuple(specs.shape[1:]), name="image")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(
                f"[teacher] model = {path!r}: its serving_default signature returns {sorted(outputs)}; "
                "a teacher returns one tensor of logits."
            )
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=os.path.basename(os.path.normpath(path)))


def _input_spec(path):
    import tensorflow as tf

    function = tf.saved_model.load(path).signatures["serving_default"]
    args, kwargs = function.structured_input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise ValueError(
            f"[teacher] model = {path!r}: its serving_default signature takes {specs}; a teacher "
            "takes one batch of images (batch, height, width, channels)."
        )
    return specs[0]


def _check_signature(model, path):
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.input_shape) != 4:
        raise ValueError(
            f"[teacher] model = {path!r} has {len(model.inputs)} input(s) and {len(model.outputs)} "
            "output(s); a teacher takes one batch of images (batch, height, width, channels) and returns "
            "one tensor of logits."
        )
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if activation in ("softmax", "sigmoid"):
        raise ValueError(
            f"[teacher] model = {path!r} ends in a {activation} ({last.name}), so it returns "
            "probabilities; distillation softens logits. Rebuild its last layer without the "
            "activation (activation=None) with the same weights, save it, and point model at that file."
        )
