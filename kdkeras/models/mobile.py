"""Mobile students for deployment, from `keras.applications` at small widths.

Both are `kdkeras.models.applications` models (the family's own
`preprocess_input` inside, a Dense logits head) trained from scratch, with
the widths a phone or a microcontroller affords; they convert to int8 TFLite
(`kdkeras export`). Parameter counts are at 64x64x1 with 2 classes.
"""

from kdkeras.models import applications
from kdkeras.registry import MODELS


@MODELS.register(
    "mobilenetv3_small", role="student", default_input_shape=(64, 64, 1), min_input_size=32, pretrained=False
)
def mobilenetv3_small(input_shape, num_classes, alpha=0.75, minimalistic=True, dropout=0.2):
    """MobileNetV3-Small (Howard et al. 2019), minimalistic (274,666 parameters at alpha=0.75).

    `keras.applications.MobileNetV3Small` without top: the minimalistic
    variant has no squeeze-excite, hard-swish or 5x5 kernels, so every op has
    an int8 TFLite kernel and runs on edge accelerators. Widths scale with
    `alpha` (1.0: 442,154 parameters; 0.5: 131,618).

    Args:
        input_shape: `(height, width, channels)`, at least 32 px.
        num_classes: Number of logits.
        alpha: Width multiplier of every layer.
        minimalistic: The minimalistic variant (True) or the full one.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"mobilenetv3_small"`, its zoo name.
    """
    return applications.build_application(
        "MobileNetV3Small", input_shape, num_classes, dropout=dropout, alpha=alpha, minimalistic=minimalistic,
        name="mobilenetv3_small",
    )


@MODELS.register(
    "mobilenetv2", role="student", default_input_shape=(64, 64, 1), min_input_size=32, pretrained=False
)
def mobilenetv2(input_shape, num_classes, alpha=0.35, dropout=0.2):
    """MobileNetV2 (Sandler et al. 2018) as Keras ships it (412,770 parameters at alpha=0.35).

    `keras.applications.MobileNetV2` without top: inverted residuals with
    ReLU6, all int8-friendly; Keras keeps the 1280-wide last conv at any
    `alpha` below 1 (`mobilenetv2_tiny` scales it too).

    Args:
        input_shape: `(height, width, channels)`, at least 32 px.
        num_classes: Number of logits.
        alpha: Width multiplier (Keras's ImageNet widths: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4).
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"mobilenetv2"`.
    """
    return applications.build_application("MobileNetV2", input_shape, num_classes, dropout=dropout, alpha=alpha)
