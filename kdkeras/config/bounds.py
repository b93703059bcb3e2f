"""Where distillation's numbers stop meaning anything: the bounds of `temperature` and `mixup`.

Checked where the values enter (config validation, `Distiller.compile`, the
loss classes), so a value outside them is refused in one line instead of
silently training nothing or ending in NaN. No TensorFlow import: the config
checks read these before TensorFlow loads.
"""

import math

# The KD loss is T^2 * KL(softmax(t / T) || softmax(s / T)). The KL grows at most like the
# logit gap / T, so the term and its gradient shrink like T: at T = 0.01 they are 1% of their
# size at T = 1, and at T = 1e-30, T^2 = 1e-60 rounds to exactly 0 in float32 (distillation off);
# without the T^2 factor, logits / T overflow float32 below about 1e-37 (NaN).
MIN_TEMPERATURE = 0.01
# Beta(a, a) with a < 1e-4 puts all but a few in ten thousand of the weights at exactly 0 or 1
# (no mixing: set 0 instead); with a > 1e4 its standard deviation 1 / (2 sqrt(2a + 1)) is under
# 0.004, every image is mixed half and half, and past float32's range the Gamma draws overflow.
MIXUP_RANGE = (1e-4, 1e4)


def temperature_problem(temperature):
    """Why `temperature` is unusable, or None when it is in `[MIN_TEMPERATURE, inf)`.

    Args:
        temperature: The softening temperature to check (a number).

    Returns:
        A sentence fragment starting with "must", or None.
    """
    if not temperature >= MIN_TEMPERATURE or not math.isfinite(temperature):
        return (
            f"must be a finite number >= {MIN_TEMPERATURE:g}: below that the T^2-scaled distillation "
            "term vanishes (exactly 0 at T = 1e-30) or, unscaled, overflows to NaN. Hinton et al. use 1 to 20."
        )
    return None


def mixup_problem(mixup):
    """Why a mixup concentration is unusable, or None for 0 (off) or a value in `MIXUP_RANGE`.

    Args:
        mixup: The `a` of `lam ~ Beta(a, a)` to check (a number).

    Returns:
        A sentence fragment starting with "must", or None.
    """
    low, high = MIXUP_RANGE
    if mixup == 0 or low <= mixup <= high:
        return None
    return (
        f"must be 0 (off) or in [{low:g}, {high:g}]: below, almost every image stays unmixed "
        f"(set 0); above, every image is mixed half and half (Beta(a, a) is 0.5 +- 0.004). Beyer et al. use 1."
    )
