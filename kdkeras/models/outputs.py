"""The output end shared by every model of the zoo."""

import keras


def logits_output(x):
    """Names the logits tensor and keeps it float32.

    Args:
        x: The classifier's pre-softmax tensor.

    Returns:
        The same values through a linear `Activation` named `"logits"`, in
        float32 even under a `mixed_float16` policy: losses need full precision.
    """
    return keras.layers.Activation("linear", dtype="float32", name="logits")(x)
