"""The `kdkeras` command line: train, distil, evaluate and report experiments.

Examples:

```
kdkeras teacher --config quickstart
kdkeras student --config quickstart --epochs 3
kdkeras distill --config experiments/seed002_xray_vgg16.toml --temperature 6
kdkeras report --config quickstart
kdkeras evaluate --config quickstart --model runs/quickstart/distilled.keras --limit 200
kdkeras export --config quickstart --formats tflite_float32 tflite_int8 onnx
kdkeras checklist --config quickstart
kdkeras sweep --config quickstart --temperatures 2,4,8 --alphas 0.1,0.5 --epochs 3
kdkeras models
kdkeras predict --model runs/quickstart/distilled.keras new_xrays/ --out predictions.csv --gradcam gradcam/
kdkeras predict --model runs/quickstart/distilled.keras study/*.dcm --dicom-sr sr/
kdkeras list
kdkeras launch --workers 2 distill --config quickstart
```
"""

import argparse
import os
import signal
import sys
import tomllib

from kdkeras import __version__
from kdkeras import config as config_lib
from kdkeras.argtypes import positive_int

COMMANDS = {
    "teacher": "Train the teacher alone and save runs/<experiment>/teacher.keras.",
    "student": "Train the student alone (the baseline) and save student.keras.",
    "distill": "Distil the saved teacher into a fresh student and save distilled.keras.",
    "evaluate": "Evaluate a saved .keras model on the experiment's test split.",
    "report": "Write report.md and its figures from the phases that have run.",
    "sweep": "Distil the saved teacher at every temperature x alpha of a grid; write sweep.{csv,md,png}.",
    "models": "List the model zoo: role, parameters, input size and FLOPs.",
    "export": "Write a saved student as SavedModel, TFLite (float32, int8) and ONNX with a size, "
    "latency and accuracy table, metadata.json, a model card and the reporting checklists.",
    "checklist": "Fill the TRIPOD+AI and CLAIM checklists from a run; write checklist.{md,json} beside the model.",
    "predict": "Classify image files, folders, zip/tar archives and DICOM files with a saved model; "
    "write one CSV row per image.",
    "list": "List every registry by name: distillation terms, feature losses, models.",
    "launch": "Run one phase as N MultiWorkerMirroredStrategy workers on this machine (loopback ports).",
}

# (flag, config key, type, help); the "{phase}" key follows the command.
OVERRIDES = (
    ("--epochs", "{phase}.epochs", int, "maximum number of epochs of this phase"),
    ("--learning-rate", "{phase}.learning_rate", float, "initial learning rate of this phase"),
    ("--batch-size", "data.batch_size", int, "global batch size of every split (split over the replicas)"),
    ("--image-size", "data.image_size", int, "resize images to this many pixels per side"),
    ("--limit", "data.limit", int, "use at most this many images per split (smoke runs)"),
    ("--alpha", "distill.alpha", float, "weight of the student loss in [0, 1] (distill)"),
    ("--temperature", "distill.temperature", float, "softening temperature T > 0 (distill)"),
    ("--loss", "distill.loss", str, "distillation loss by name, e.g. knowledge_distillation, decoupled_kd, dist "
     "(all: `kdkeras list`)"),
    ("--seed", "seed", int, "global random seed"),
    ("--strategy", "strategy", str, "tf.distribute strategy: auto, mirrored, multiworker, tpu or none"),
)


def number_list(text):
    """Reads `2,4,8` (or `"2 4 8"`) as a list of floats, for the sweep's axes."""
    items = text.replace(",", " ").split()
    if not items:
        raise argparse.ArgumentTypeError("is empty: give at least one number, e.g. 2,4,8")
    try:
        return [float(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects numbers separated by commas, e.g. 2,4,8; got {text!r}") from None


# (flag, config key, help) of the grid axes of `kdkeras sweep`.
SWEEP_AXES = (
    ("--temperatures", "sweep.temperatures", "temperatures to try, e.g. 2,4,8 (default: [sweep] temperatures, "
     "else [distill] temperature)"),
    ("--alphas", "sweep.alphas", "alphas to try, each in [0, 1], e.g. 0.1,0.5 (default: [sweep] alphas, "
     "else [distill] alpha)"),
)


UNSAFE_LOAD_HELP = (
    "load a .keras file even if it stores Python code (a Lambda layer), which runs on load; "
    "only for files whose source you trust (default: Keras safe mode refuses them)"
)
LOADS_MODELS = ("distill", "evaluate", "export", "sweep")  # the commands that read .keras files
DATA_FLAGS = ("--batch-size", "--image-size", "--limit")  # the overrides that `evaluate` takes too
DISTILL_FLAGS = ("--alpha", "--temperature", "--loss")  # only the commands that distil take these


def build_parser():
    """The argument parser of the `kdkeras` command."""
    parser = argparse.ArgumentParser(
        prog="kdkeras",
        description="Knowledge distillation of medical-image classifiers (Keras 3 / TensorFlow).",
        epilog="Run `kdkeras <command> --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"kdkeras {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    for command, text in COMMANDS.items():
        sub = commands.add_parser(command, help=text, description=text)
        if command == "predict":
            _add_predict_arguments(sub)
            continue
        if command == "list":
            continue
        if command == "launch":
            _add_launch_arguments(sub)
            continue
        if command == "models":
            sub.add_argument("--num-classes", type=int, default=2, help="classes of the printed models (default 2)")
            sub.add_argument("--role", choices=("teacher", "student"), help="only list this role")
            continue
        sub.add_argument(
            "--config",
            default="quickstart",
            help="experiment: a .toml path or the name of one in experiments/ (default: quickstart)",
        )
        sub.add_argument("--runs-dir", default="runs", help="parent folder of run outputs (default: runs)")
        if command in LOADS_MODELS:
            sub.add_argument("--unsafe-load", action="store_true", help=UNSAFE_LOAD_HELP)
        if command == "evaluate":
            sub.add_argument("--model", required=True, help="path of the .keras model to evaluate")
            for flag, _, kind, text in OVERRIDES:
                if flag in DATA_FLAGS:
                    sub.add_argument(flag, type=kind, help=text)
            _add_set_argument(sub)
            continue
        if command == "report":
            continue
        if command == "checklist":
            sub.add_argument("--model", help="the .keras model (default: <runs-dir>/<experiment>/distilled.keras)")
            continue
        if command == "export":
            _add_export_arguments(sub)
            continue
        for flag, _, kind, text in OVERRIDES:
            if flag not in DISTILL_FLAGS or command in ("distill", "sweep"):
                sub.add_argument(flag, type=kind, help=text)
        if command == "sweep":
            for flag, _, text in SWEEP_AXES:
                sub.add_argument(flag, type=number_list, help=text)
        _add_set_argument(sub)
        sub.add_argument(
            "--quiet", action="store_true",
            help="one line per epoch, never a progress bar (the default when stdout is not a terminal)",
        )
        if command in ("teacher", "student", "distill"):
            sub.add_argument(
                "--fresh", action="store_true",
                help="discard the phase's checkpoint and start at epoch 1 (default: a killed run resumes)",
            )
    return parser


def _add_set_argument(sub):
    sub.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set teacher.optimizer=\"sgd\" --set data.augment=\"xray\" "
        "(VALUE is read as TOML; bare words are strings)",
    )


def _add_launch_arguments(sub):
    sub.add_argument("--workers", type=positive_int, default=2, help="number of local worker processes (default 2)")
    sub.add_argument(
        "--logs", default=os.path.join("runs", "workers"),
        help="folder of the logs of workers 1..N-1; worker 0 prints here (default: runs/workers)",
    )
    sub.add_argument(
        "phase", choices=("teacher", "student", "distill"), help="the phase every worker runs"
    )
    sub.add_argument(
        "phase_args", nargs=argparse.REMAINDER, metavar="...",
        help="the phase's options, e.g. --config quickstart --epochs 3 (--strategy multiworker is added)",
    )


def _add_export_arguments(sub):
    # Format names are spelled out rather than imported: kdkeras.export loads
    # TensorFlow, which `--help` must not wait for. export_student validates them.
    sub.add_argument(
        "--model", help="the .keras model to export (default: <runs-dir>/<experiment>/distilled.keras)"
    )
    sub.add_argument(
        "--formats", nargs="+", metavar="FORMAT",
        help="formats to write, any of saved_model tflite_float32 tflite_dynamic_int8 tflite_int8 onnx "
        "(default: all but onnx, which needs `pip install kdkeras[onnx]`)",
    )
    sub.add_argument("--out", help="output folder (default: <runs-dir>/<experiment>/export)")
    sub.add_argument(
        "--representative-images", type=int, default=200,
        help="unaugmented train images that calibrate tflite_int8 (default 200)",
    )


def _add_predict_arguments(sub):
    sub.add_argument(
        "--model", required=True,
        help="the .keras model, e.g. runs/<experiment>/distilled.keras; its run folder gives the class "
        "names and, from <stem>_calibration.json, the temperature and decision threshold",
    )
    sub.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, zip/tar archives, DICOM files")
    sub.add_argument(
        "--out", default="predictions.csv",
        help="CSV to write, checked before any image is read and written batch by batch; a stopped run "
        "keeps the rows done so far (default: predictions.csv)",
    )
    sub.add_argument("--gradcam", metavar="DIR", help="also write a Grad-CAM overlay per image into DIR")
    sub.add_argument("--gradcam-layer", help="feature layer of the Grad-CAM maps (default: the last spatial one)")
    sub.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    sub.add_argument(
        "--dicom-sr", metavar="DIR",
        help="also write one DICOM Comprehensive SR per input DICOM study into DIR (pip install kdkeras[dicom])",
    )
    sub.add_argument("--unsafe-load", action="store_true", help=UNSAFE_LOAD_HELP)


def _predict(args):
    from kdkeras import predict

    if args.batch_size < 1:
        raise SystemExit(f"kdkeras: predict: --batch-size must be >= 1, got {args.batch_size}")
    # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: the rows done so far are kept in --out
    # and the folder of extracted archives is removed.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = predict.predict_files(
            args.model, args.paths, batch_size=args.batch_size, gradcam_dir=args.gradcam,
            gradcam_layer=args.gradcam_layer, unsafe_load=args.unsafe_load, out=args.out,
        )
    except predict.PredictionStopped as e:
        print(f"kdkeras: predict {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"kdkeras: predict stopped before any row was written; {args.out} was not created "
              "or left as it was", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.dicom_sr:
        from kdkeras.export import dicom_sr  # highdicom loads only when structured reports are asked for

        for path in dicom_sr.write_reports(result, args.model, args.dicom_sr):
            print(f"wrote {path}")
    meta = result.metadata
    rule = f", threshold {meta.threshold:.4f}" if meta.threshold is not None else ""
    for path, reason in result.unreadable:
        print(f"kdkeras: unreadable, not classified: {path}: {reason}", file=sys.stderr)
    for path, reason in result.skipped:
        print(f"kdkeras: skipped: {path}: {reason}", file=sys.stderr)
    print(
        f"wrote {args.out}: {len(result.rows)} file(s) seen, {len(result.readable)} image(s) classified "
        f"(temperature {meta.temperature:.3f}{rule}), {len(result.unreadable)} unreadable, "
        f"{len(result.skipped)} skipped; each has a row with its status and reason"
    )
    # Some images read is a result; none at all is a failure a script should see.
    return 0 if result.readable else 1


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _recorded_config(config, runs_dir):
    """`config` with the `[data]` table its run recorded, so that `report` reloads the evaluated test split."""
    from kdkeras import config as config_lib
    from kdkeras import runs
    from kdkeras.reporting.report import recorded_data

    run = runs.RunFolder.of(config, runs_dir)
    path, data = recorded_data(run.path, run.finished())
    if data is None or data == config.to_dict().get("data"):
        return config
    raw = config.to_dict()
    changed = sorted(k for k in set(data) | set(raw.get("data", {})) if data.get(k) != raw["data"].get(k))
    raw["data"] = data
    updated = config_lib.from_dict(raw, source=path)
    updated.path = config.path
    print(f"report: [data] as the run recorded it in {path} ({', '.join(f'{k} = {data.get(k)!r}' for k in changed)})")
    return updated


def _export(args, config):
    from kdkeras import config as config_lib
    from kdkeras import export

    config_lib.check_data_paths(config)
    try:
        table = export.export_experiment(
            config, args.model, args.runs_dir, formats=args.formats or export.DEFAULT_FORMATS,
            out_dir=args.out, representative_images=args.representative_images,
            unsafe_load=args.unsafe_load,
        )
    except (ValueError, ImportError) as e:
        print(f"kdkeras: export: {e}", file=sys.stderr)
        return 2
    print(table.to_markdown())
    return 0


def overrides_from_args(args):
    """Collects the dotted-key overrides given on the command line."""
    phase = "distill" if args.command == "sweep" else args.command  # a sweep runs distill phases
    overrides = {}
    for flag, key, _, _ in OVERRIDES:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            overrides[key.format(phase=phase)] = value
    for flag, key, _ in SWEEP_AXES:
        value = getattr(args, flag[2:], None)
        if value is not None:
            overrides[key] = value
    for item in getattr(args, "set", []):
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"kdkeras: --set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(text.strip())
    return overrides


def parse_value(text):
    """Reads a `--set` value as TOML (numbers, booleans, strings, arrays)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def registry_listing():
    """Every registry's names, each with its first docstring line."""
    from kdkeras import registry
    from kdkeras.models.registry import family_listing

    lines = []
    for kind, entries in registry.registries().items():
        lines.append(f"{kind}:")
        lines.extend(f"  {name:<24} {registry.summary(entries.lookup(name))}" for name in entries.names())
    return "\n".join(lines + family_listing())


def _launch(args):
    from kdkeras.distribute import launch

    try:
        return launch.launch([args.phase, *args.phase_args], args.workers, args.logs)
    except launch.LaunchError as e:
        print(f"kdkeras: launch: {e}", file=sys.stderr)
        return 2


def main(argv=None):
    """Entry point of the `kdkeras` console script.

    Args:
        argv: Arguments without the program name; defaults to `sys.argv[1:]`.

    Returns:
        Process exit status: 0 on success, 2 for a usage or config error,
        1 for a missing prerequisite, unusable data, a refused or unreadable
        model file, a diverged training (NaN loss) or a file system error.
    """
    args = build_parser().parse_args(argv)
    if hasattr(args, "config"):
        try:
            # Keys, types and ranges first, without TensorFlow: a typo is reported in a second, not 15.
            config_lib.load_config(args.config, overrides_from_args(args), registries=False)
        except config_lib.ConfigError as e:
            print(f"kdkeras: config error: {e}", file=sys.stderr)
            return 2
    # TensorFlow loads with these imports; `import kdkeras` hid its start-up lines (kdkeras.quiet).
    from kdkeras.data import DataError
    from kdkeras.evaluation import metrics as metrics_lib
    from kdkeras.files import ModelFileError
    from kdkeras.workflow import training
    from kdkeras.workflow.callbacks import TrainingDivergedError
    from kdkeras.workflow.progress import fit_verbosity

    if args.command == "launch":
        return _launch(args)
    try:
        if args.command == "list":
            print(registry_listing())
            return 0
        if args.command == "models":
            from kdkeras import models

            print(models.model_table(num_classes=args.num_classes, role=args.role))
            return 0
        if args.command == "predict":
            return _predict(args)
        config = config_lib.load_config(args.config)
        if args.command == "report":
            config = _recorded_config(config, args.runs_dir)
            print(f"wrote {training.write_report(config, args.runs_dir)}")
            return 0
        if args.command == "evaluate":
            config = config_lib.apply_overrides(config, overrides_from_args(args))
            config_lib.check_data_paths(config)
            result = training.evaluate_file(config, args.model, args.runs_dir, unsafe_load=args.unsafe_load)
            print(f"{args.model}: {metrics_lib.summary(result)}")
            return 0
        if args.command == "export":
            return _export(args, config)
        if args.command == "checklist":
            print(f"wrote {training.write_checklist(config, args.runs_dir, args.model)}")
            return 0
        config = config_lib.apply_overrides(config, overrides_from_args(args))
        config_lib.check_data_paths(config)
        verbose = 2 if args.quiet else fit_verbosity()
        if args.command == "sweep":
            from kdkeras.workflow import sweep

            sweep.run_sweep(config, runs_dir=args.runs_dir, verbose=verbose, unsafe_load=args.unsafe_load)
            return 0
        training.run_phase(
            config, args.command, args.runs_dir, verbose=verbose, unsafe_load=getattr(args, "unsafe_load", False),
            fresh=args.fresh,
        )
        return 0
    except config_lib.ConfigError as e:
        print(f"kdkeras: config error: {e}", file=sys.stderr)
        return 2
    except training.MissingArtifactError as e:
        print(f"kdkeras: {e}", file=sys.stderr)
        return 1
    except (DataError, ModelFileError, TrainingDivergedError, OSError) as e:
        # Faults of the inputs or the machine, each with its fix in the message: no traceback.
        print(f"kdkeras: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
