"""`ExportTable`: what `export_student` wrote and measured, as JSON and markdown."""

import dataclasses

from kdkeras.formatting import format_bytes

METRIC_COLUMNS = ("acc", "auc", "balanced_acc")


@dataclasses.dataclass
class ExportTable:
    """What `export_student` wrote and measured, one row per format.

    Attributes:
        model: Where the Keras model came from (a path, or its name).
        input_shape: Shape of one input image, `(height, width, channels)`.
        rows: One dict per format, the Keras model first, with `format`,
            `path` (relative to the output folder; None for an in-memory
            Keras model), `size_bytes`, `ms_per_image` (median CPU latency at
            batch 1), `acc`, `auc`, `balanced_acc` (None without test data)
            `agreement` (share of test images whose prediction equals the
            Keras model's; None without test data) and `max_abs_diff` (the
            largest absolute difference of a test probability from the Keras
            model's; None without test data). Every row is scored on
            calibrated probabilities: the Keras model's `softmax(logits / T)`,
            the exported files' own output.
        task: Task used for the metrics.
        test_images: Number of test images scored (0 without test data).
        representative_images: Images used to calibrate `tflite_int8`.
        num_threads: CPU threads of the TFLite interpreter.
        calibration: How the exported files turn logits into probabilities
            and decisions (`kdkeras.export.serving.resolve_calibration`):
            `temperature`, `source` (the calibration file it came from, or
            None), `threshold`, `operating_point`, `positive_class` and
            `note` (why T = 1, without a file). None in tables written
            before exported files carried it.
        interpreter: What ran the TFLite files ("LiteRT (ai_edge_litert)"
            or "tf.lite"; None in tables written before it was recorded).
    """

    model: str
    input_shape: tuple
    rows: list
    task: str
    test_images: int
    representative_images: int
    num_threads: int
    calibration: dict = None
    interpreter: str = None

    def row(self, fmt):
        """The row of format `fmt` ("keras" or one of `FORMATS`)."""
        for row in self.rows:
            if row["format"] == fmt:
                return row
        raise KeyError(f"No row for format {fmt!r}; the table has {[r['format'] for r in self.rows]}.")

    def to_dict(self):
        """The table as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_markdown(self):
        """The table in GitHub markdown, with the measuring conditions under it."""
        lines = [
            "| Format | File | Size | Latency (batch 1) | ACC | AUC | Balanced ACC | Agreement with Keras "
            "| Max abs. diff. from Keras |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.rows:
            path = f"`{row['path']}`" if row["path"] else "(in memory)"
            cells = [row["format"], path, format_bytes(row["size_bytes"]), f"{row['ms_per_image']:.3f} ms/img"]
            cells += [_number(row[key]) for key in (*METRIC_COLUMNS, "agreement")]
            cells.append("" if row.get("max_abs_diff") is None else f"{row['max_abs_diff']:.2e}")
            lines.append("| " + " | ".join(cells) + " |")
        scored = f"{self.test_images} test images" if self.test_images else "no test data"
        lines.append("")
        lines.append(
            f"Model `{self.model}`, input {'x'.join(map(str, self.input_shape))}, task {self.task}; "
            f"metrics on {scored}; `tflite_int8` calibrated on {self.representative_images} train "
            f"images; TFLite interpreter {self.interpreter or 'tf.lite'} with {self.num_threads} thread(s) "
            "(ONNX Runtime with as many); latency is the median "
            "after warm-up calls, fed float pixels (int8 files include the input quantization)."
        )
        if self.calibration is not None:
            lines += ["", *calibration_lines(self.calibration, self.task)]
        return "\n".join(lines) + "\n"


def calibration_lines(calibration, task):
    """Markdown lines saying what the exported files output and how to decide on it."""
    t = calibration["temperature"]
    link = "sigmoid" if task == "multi-label" else "softmax"
    origin = f"fitted on validation, from `{calibration['source']}`" if calibration["source"] else calibration["note"]
    lines = [
        f"Outputs: every exported file returns probabilities = {link}(logits / T) with T = {t:.4g} "
        f"({origin}); the SavedModel's `serve` signature also returns the raw `logits`."
    ]
    if calibration.get("threshold") is not None:
        rule = ", ".join(f"{k} {v:g}" if not isinstance(v, bool) else k
                         for k, v in (calibration.get("operating_point") or {}).items())
        lines.append(
            f"Decision: `{calibration.get('positive_class') or 'the last class'}` when its probability is "
            f">= {calibration['threshold']:.4f} (operating point{': ' + rule if rule else ''}, "
            "chosen on validation)."
        )
    return lines


def _number(value):
    return "" if value is None else f"{value:.4f}"
