"""Training histories: the per-epoch CSV that `kdkeras.workflow.callbacks.RunState` writes, read back."""

import csv
import math
import os

import numpy as np


def load_history(history):
    """A history as `(curves, epochs, source)`.

    Args:
        history: Path of a history CSV, a dict of per-epoch lists or a
            `keras.callbacks.History`.

    Returns:
        `({column: float64 array}, epochs counted from 1, source name)`.
    """
    source = "<dict>"
    if hasattr(history, "history"):
        history = history.history
    if isinstance(history, (str, os.PathLike)):
        source = os.fspath(history)
        history = read_history_csv(source)
    if not isinstance(history, dict):
        raise TypeError(
            "A history must be a CSVLogger file path, a dict of per-epoch lists or a "
            f"keras History, got {type(history).__name__}."
        )
    curves = {
        key: np.asarray(values, dtype=np.float64).reshape(-1) for key, values in history.items()
    }
    if "loss" not in curves:
        raise ValueError(
            f"History {source} has no 'loss' column (columns: {', '.join(sorted(curves))}); "
            "record training with `keras.callbacks.CSVLogger`."
        )
    lengths = {len(values) for values in curves.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"History {source} has columns of different or zero lengths: {lengths}.")
    if "epoch" not in curves:
        return curves, np.arange(1, lengths.pop() + 1), source
    epochs = curves.pop("epoch")
    # CSVLogger counts epochs from 0, kdkeras' RunState from 1; plots count from 1.
    return curves, epochs + 1 if epochs.min() == 0 else epochs, source


def read_history_csv(path):
    """`{column: [float per epoch]}` of a history CSV; empty cells read NaN."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"History file {path!r} not found.")
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    if not records:
        raise ValueError(f"History file {path!r} has no epochs; was training interrupted?")
    columns = records[0].keys()
    try:
        return {
            column: [float(record[column]) if record[column] else math.nan for record in records]
            for column in columns
        }
    except (TypeError, ValueError) as error:
        raise ValueError(f"History file {path!r} has a non-numeric value: {error}.") from error


def find_key(curves, candidates):
    """The first of `candidates` that is a column of `curves`, or None."""
    return next((key for key in candidates if key in curves), None)


def value_at_epoch(path, epoch, key):
    """The `key` column of a history CSV at `epoch`, or None when absent."""
    if epoch is None or not os.path.exists(path):
        return None
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("epoch") == str(epoch) and row.get(key) not in (None, ""):
                return float(row[key])
    return None
