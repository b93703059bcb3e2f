"""Post-hoc calibration: temperature scaling, its file beside the model, reliability bins.

Temperature scaling (Guo et al., 2017) divides a model's logits by one scalar
`T > 0` fitted on the validation split to minimise the negative
log-likelihood. Dividing by a positive scalar keeps the argmax, so accuracy is
unchanged; only the confidence moves.

The deployable model keeps emitting raw logits (the KD loss, `kdkeras
evaluate` and every saved metric read them). The fitted temperature travels
beside it as `<model stem>_calibration.json` (`distilled.keras` ->
`distilled_calibration.json`), the same naming as `<stem>_metrics.json`;
`kdkeras predict` reads it and reports calibrated probabilities. The file:

```json
{"format": 1, "model": "distilled.keras", "temperature": 1.84,
 "threshold": 0.27, "operating_point": {"sensitivity": 0.95},
 "positive_class": "pneumonia", "fitted_on": "validation", "n": 524}
```

`threshold` (binary tasks only, else null) applies to the calibrated
probability of the positive class (the last class): positive when
`p >= threshold` (see `kdkeras.evaluation.operating_point`).
"""

import json
import math
import os
import warnings

import numpy as np
from scipy import optimize, special

from kdkeras import __version__
from kdkeras.evaluation.metrics import ECE_BINS, classification_metrics, logits_to_scores
from kdkeras.files import ModelFileError, write_text_atomic

FORMAT = 1
# exp(+-5) spans T in [0.0067, 148]: far beyond any useful temperature, so the
# bounded search never stops at an edge on a sane model (one that does is
# warned about: `fit_warnings`).
_LOG_T_BOUNDS = (-5.0, 5.0)
# The temperatures a calibration file may hold: those `fit_temperature` can
# return. Beyond them a file's T makes every probability 1/C (T = 1e39) or 0/1.
TEMPERATURE_RANGE = (math.exp(_LOG_T_BOUNDS[0]), math.exp(_LOG_T_BOUNDS[1]))
# Below this many validation images of a class (positives of a label), the
# fitted temperature and threshold rest on too few examples to trust: a
# sensitivity target of 0.95 then moves by a whole image per 5%.
MIN_VALIDATION_PER_CLASS = 30


class CalibrationWarning(UserWarning):
    """A calibration or operating point fitted on too little data, or stopped at a bound."""


def nll(logits, y_true, task="multi-class", temperature=1.0):
    """Mean negative log-likelihood of the labels under `logits / temperature`.

    Computed with log-softmax (log-sigmoid for multi-label and one-logit
    binary models), so it is exact for confident logits, unlike a
    cross-entropy on clipped probabilities.

    Args:
        logits: float array `(N, C)`.
        y_true: Class indices `(N,)` (multi-hot `(N, L)` for multi-label).
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        temperature: The divisor, > 0.

    Returns:
        The mean NLL in nats (per label for multi-label), a float.
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(y_true)
    if task.startswith("multi-label") or z.shape[1] == 1:
        y = y.reshape(z.shape).astype(np.float64)
        # -log sigmoid(z) = logaddexp(0, -z); -log(1 - sigmoid(z)) = logaddexp(0, z).
        return float(np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)))
    log_p = special.log_softmax(z, axis=1)
    return float(-np.mean(log_p[np.arange(len(z)), y.reshape(-1).astype(np.int64)]))


def fit_temperature(logits, y_true, task="multi-class"):
    """Fits the temperature minimising the NLL of `y_true` (validation data only).

    One scalar, searched over `log T` with Brent's bounded method
    (`scipy.optimize.minimize_scalar`): the NLL of `z / T` is smooth in
    `log T` and the search needs no gradient.

    Args:
        logits: Validation logits `(N, C)`.
        y_true: Validation labels.
        task: One of `kdkeras.evaluation.metrics.TASKS`.

    Returns:
        The temperature, a float > 0.

    Raises:
        ValueError: On empty or non-finite logits.

    Example:

    ```python
    t = fit_temperature(val_logits, y_val)
    probabilities = kdkeras.evaluation.metrics.logits_to_scores(test_logits / t, "binary-class")
    ```
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0 or not np.all(np.isfinite(logits)):
        raise ValueError(
            f"fit_temperature needs finite validation logits of shape (N, C) with N > 0, got "
            f"shape {logits.shape}: pass the model's raw outputs on the validation split."
        )
    result = optimize.minimize_scalar(
        lambda log_t: nll(logits, y_true, task, math.exp(log_t)),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    best = result.x
    for edge in _LOG_T_BOUNDS:
        # Perfectly separated (or constant) logits have their minimum at an edge, where the NLL is
        # flat to float64 and Brent stops anywhere: report the edge, which `fit_warnings` names.
        if nll(logits, y_true, task, math.exp(edge)) <= nll(logits, y_true, task, math.exp(best)):
            best = edge
    return float(math.exp(best))


def fit_warnings(y_true, task, class_names=None, temperature=None):
    """What makes a temperature or threshold fitted on `y_true` untrustworthy, one sentence each.

    Each sentence is also issued as a `CalibrationWarning` (shown in the
    log); `kdkeras report` writes them into the calibration file's
    `warnings` field and the report.

    Args:
        y_true: Validation labels the fit used (class indices, or multi-hot
            for multi-label).
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        class_names: Names of the classes (labels), for the message.
        temperature: The fitted temperature, checked against the search bounds.

    Returns:
        A list of strings, empty when the fit is sound.
    """
    y = np.asarray(y_true)
    if task.startswith("multi-label"):
        counts = y.reshape(len(y), -1).sum(axis=0).astype(int)
    else:
        classes = len(class_names) if class_names else int(y.max()) + 1 if y.size else 0
        counts = np.bincount(y.reshape(-1).astype(np.int64), minlength=classes)
    names = class_names or [str(k) for k in range(len(counts))]
    few = [f"{names[k]} {int(n)}" for k, n in enumerate(counts) if n < MIN_VALIDATION_PER_CLASS]
    found = []
    if few:
        found.append(
            f"fitted on {len(y)} validation images with fewer than {MIN_VALIDATION_PER_CLASS} of a class "
            f"({', '.join(few)}): the temperature and threshold may not hold on new data; give the "
            "validation split more images (e.g. a larger val_fraction)"
        )
    if temperature is not None:
        low, high = TEMPERATURE_RANGE
        if abs(math.log(temperature) - math.log(low)) < 1e-3 or abs(math.log(temperature) - math.log(high)) < 1e-3:
            found.append(
                f"the fitted temperature {temperature:.4g} is at the bound of its search "
                f"[{low:.4g}, {high:.4g}]: the validation logits are degenerate (a split the model "
                "separates perfectly, or predicts one class for); do not trust its probabilities"
            )
    for message in found:
        warnings.warn(f"Calibration: {message}.", CalibrationWarning, stacklevel=2)
    return found


def calibration_summary(logits, y_true, task, temperature=1.0):
    """ECE (15 bins, as in `kdkeras.evaluation.metrics`) and NLL of `logits / temperature`.

    Returns:
        `{"ece": float, "nll": float}`.
    """
    scores = logits_to_scores(np.asarray(logits, dtype=np.float64) / float(temperature), task)
    ece = classification_metrics(y_true, scores, task)["ece"]
    return {"ece": ece, "nll": nll(logits, y_true, task, temperature)}


def calibration_path(model_path):
    """`runs/x/distilled.keras` -> `runs/x/distilled_calibration.json`."""
    return os.path.splitext(os.fspath(model_path))[0] + "_calibration.json"


def save_calibration(model_path, temperature, threshold=None, operating_point=None,
                     positive_class=None, n=None, warnings=()):
    """Writes the calibration file beside a saved model, atomically.

    Args:
        model_path: The `.keras` file the calibration belongs to.
        temperature: The fitted temperature.
        threshold: Binary tasks: the decision threshold on the calibrated
            positive-class probability; None for the default rule.
        operating_point: The `[evaluate] operating_point` it was chosen for.
        positive_class: Name of the positive class (binary tasks).
        n: Number of validation examples it was fitted on.
        warnings: The `fit_warnings` of the fit, kept in the file.

    Returns:
        The path of the written file.
    """
    problem = _temperature_problem(temperature)
    if problem:
        raise ValueError(f"temperature = {temperature!r} {problem}")
    content = {
        "format": FORMAT,
        "model": os.path.basename(os.fspath(model_path)),
        "temperature": float(temperature),
        "threshold": None if threshold is None else float(threshold),
        "operating_point": dict(operating_point or {}),
        "positive_class": positive_class,
        "fitted_on": "validation",
        "n": None if n is None else int(n),
        "warnings": list(warnings),
        "kdkeras_version": __version__,
    }
    path = calibration_path(model_path)
    write_text_atomic(path, json.dumps(content, indent=2) + "\n")
    return path


def load_calibration(model_path):
    """Reads the calibration file of a model, or None when it has none.

    Returns:
        `{"temperature": float, "threshold": float or None, ...}` as written
        by `save_calibration`, or None if the file does not exist.

    Raises:
        ModelFileError: For a file that is not valid calibration JSON; the
            message names the file and how to rewrite it.
    """
    path = calibration_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        temperature = float(content["temperature"])
        threshold = content.get("threshold")
        threshold = None if threshold is None else float(threshold)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(
            f"{path} is not a valid calibration file ({type(e).__name__}: {e}); delete it to "
            "predict uncalibrated, or rewrite it with kdkeras.evaluation.calibration.save_calibration."
        ) from e
    problem = _temperature_problem(temperature)
    if problem:
        raise ModelFileError(
            f"{path}: temperature = {temperature!r} {problem}; delete the file to predict uncalibrated, or "
            "run `kdkeras report` to fit it again."
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ModelFileError(f"{path}: threshold = {threshold!r} must be a probability in [0, 1].")
    return {**content, "temperature": temperature, "threshold": threshold}


def _temperature_problem(temperature):
    low, high = TEMPERATURE_RANGE
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        low * (1 - 1e-9) <= temperature <= high * (1 + 1e-9)
    ):
        return (
            f"must be a number in [{low:.4g}, {high:.4g}], the range fit_temperature searches (T = 1e39 "
            "would make every probability 1/C, T = 1e-300 every one 0 or 1)"
        )
    return None


def reliability_bins(y_true, y_score, task, bins=ECE_BINS):
    """Accuracy and mean confidence per confidence bin, the bins of the ECE.

    Args:
        y_true: Labels, as for `kdkeras.evaluation.metrics.classification_metrics`.
        y_score: Probabilities `(N, C)`.
        task: One of `kdkeras.evaluation.metrics.TASKS` (multi-label pools the label
            decisions, confidence `max(p, 1 - p)`).
        bins: Number of equal-width bins on (0, 1].

    Returns:
        `(confidence, accuracy, count)`: arrays of length `bins`; confidence
        and accuracy are NaN in empty bins.
    """
    y_score = np.asarray(y_score, dtype=np.float64)
    if task.startswith("multi-label"):
        y = np.asarray(y_true).reshape(y_score.shape)
        confidence = np.maximum(y_score, 1.0 - y_score).ravel()
        correct = ((y_score > 0.5) == (y == 1)).ravel()
    else:
        scores = y_score.reshape(len(y_score), -1)
        if scores.shape[1] == 1:
            scores = np.concatenate([1.0 - scores, scores], axis=1)
        predicted = np.argmax(scores, axis=1)
        if task == "binary-class":  # the MedMNIST rule of kdkeras.evaluation.metrics: last column > 0.5
            predicted = (scores[:, -1] > 0.5).astype(np.int64)
        confidence = scores[np.arange(len(scores)), predicted]
        correct = predicted == np.asarray(y_true).reshape(-1)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins) / count
        accuracy = np.bincount(index, correct.astype(np.float64), minlength=bins) / count
    return mean_confidence, accuracy, count
