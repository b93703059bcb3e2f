"""Assembles BENCHMARKS.md from the outputs of the benchmark modules.

Reads, under `--runs-dir` (default `runs/bench`): `speed/speed.json`
(`kdkeras.bench.speed`), `speed_gpu/speed.json` (the same on a GPU, when
someone ran it there), `accuracy.json` (`kdkeras.bench.accuracy`),
`recipes.json` (`kdkeras.bench.recipes`), `transfer.json`
(`kdkeras.bench.transfer`), `determinism/determinism.json`, `pipeline.md`
(`kdkeras.data.benchmark`), `multiworker/multiworker.json` and
`export/export.json` (`kdkeras export`). A missing part gets a line saying
how to produce it, so the document never shows numbers that were not measured.
`--readme` also regenerates the README's quickstart block (`kdkeras.bench.readme`).

Run: `python -m kdkeras.bench.report --runs-dir runs/bench --out BENCHMARKS.md --readme README.md`.
"""

import argparse
import os
import sys

from kdkeras.argtypes import output_file
from kdkeras.bench import accuracy as accuracy_bench
from kdkeras.bench import determinism as determinism_bench
from kdkeras.bench import readme
from kdkeras.bench import recipes as recipes_bench
from kdkeras.bench import speed as speed_bench
from kdkeras.bench import transfer as transfer_bench
from kdkeras.bench.outputs import (
    ACCURACY,
    BENCHMARKS_TITLE,
    DETERMINISM,
    EXPORT,
    GAP,
    PIPELINE,
    RECIPES,
    SPEED,
    SPEED_GPU,
    TRANSFER,
    read_output,
    when,
)
from kdkeras.files import write_text_atomic


def commands(runs_dir="runs/bench", seeds=(0, 1, 2), experiment="quickstart"):
    """The shell commands that regenerate every table, as `make bench` runs them."""
    seed_list = " ".join(map(str, seeds))
    return [
        f'make bench BENCH_SEEDS="{seed_list}"          # all of the below',
        f"python -m kdkeras.bench.speed --out-dir {runs_dir}/speed",
        f"python -m kdkeras.bench.accuracy --config {experiment} --seeds {seed_list} --runs-dir {runs_dir}",
        f"python -m kdkeras.bench.recipes --config {experiment} --seeds {seed_list} --runs-dir {runs_dir}",
        f"python -m kdkeras.bench.transfer --config {experiment} --seeds {seed_list} --runs-dir {runs_dir}",
        f"python -m kdkeras.bench.gap --config {experiment} --seeds {seed_list} --runs-dir {runs_dir} "
        "--figure docs/figures/capacity_gap.png",
        f"python -m kdkeras.bench.determinism --config {experiment} --out-dir {runs_dir}/determinism",
        f"python -m kdkeras.data.benchmark --jpegs 300 --jpeg-size 1024 --image-size 224 --out {runs_dir}/pipeline.md",
        f"python -m kdkeras.bench.multiworker --out-dir {runs_dir}/multiworker",
        f"kdkeras export --config {experiment} --runs-dir {runs_dir}/seed{seeds[0]} --out {runs_dir}/export",
        f"python -m kdkeras.bench.report --runs-dir {runs_dir} --out BENCHMARKS.md --readme README.md",
    ]


def build_markdown(runs_dir="runs/bench"):
    """The text of BENCHMARKS.md from the JSON outputs found under `runs_dir`."""
    found = {name: read_output(runs_dir, path) for name, path in (
        ("speed", SPEED), ("speed_gpu", SPEED_GPU), ("accuracy", ACCURACY), ("export", EXPORT),
        ("transfer", TRANSFER), ("determinism", DETERMINISM), ("recipes", RECIPES))}
    accuracy = found["accuracy"]
    seeds = accuracy["seeds"] if accuracy else list(accuracy_bench.DEFAULT_SEEDS)
    experiment = accuracy["experiment"] if accuracy else "quickstart"
    lines = [
        BENCHMARKS_TITLE,
        "",
        "Measured, not claimed: every number below comes from the commands in [Reproduce](#reproduce), "
        "and this file is generated from their outputs by `make bench`. Sections say when and where "
        "they ran.",
        "",
        "## Summary",
        "",
        *_summary(found),
        "",
        "## Machine",
        "",
        *_machine(found["speed"] or accuracy),
    ]
    for section in (_accuracy_section, _recipes_section, _transfer_section, _determinism_section):
        lines += section(found)
    lines += _gap_section(runs_dir)
    lines += _readme_section(runs_dir, accuracy)
    lines += _pipeline_section(runs_dir)
    lines += _speed_section(found) + _multiworker_lines(runs_dir) + _export_section(found)
    lines += ["", "## Reproduce", "", "```sh", *commands("runs/bench", seeds, experiment), "```", ""]
    lines.append(
        "Variables of `make bench`: `BENCH_SEEDS` (default `0 1 2 3 4`), `BENCH_EPOCHS` (maximum epochs of "
        "every phase; default: the experiment's), `BENCH_EXP` (default `quickstart`), `BENCH_RUNS` "
        "(default `runs/bench`). Finished phases are reused when the benchmark runs again with the same "
        "config."
    )
    return "\n".join(lines) + "\n"


def _section(title, result, describe, table, command):
    """A `## title` section: what ran and its table, or how to measure it."""
    lines = ["", f"## {title}", ""]
    if result is None:
        return lines + [f"Not measured yet: run `{command}` (see Reproduce)."]
    return lines + [describe(result), "", table(result).rstrip()]


def _summary(found):
    lines = summary_lines(found["accuracy"], found["speed"], found["export"])
    if found["recipes"]:
        selection = found["recipes"]["selection"]
        lines.append(f"- Recipe, chosen on validation: {selection['chosen']}. {selection['reason']}")
    if found["transfer"]:
        lines += [f"- Transfer set: {line}" for line in transfer_bench.verdicts(found["transfer"])]
    return lines


def _accuracy_section(found):
    def describe(accuracy):
        seeds, distill = accuracy["seeds"], accuracy["config"]["distill"]
        return (
            f"Experiment `{accuracy['experiment']}` (`{_relative(accuracy['config_path'])}`, distillation alpha "
            f"{distill['alpha']}, T {distill['temperature']}), {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
            f"each a full `teacher`, `student`, `distill` run (`kdkeras.workflow.training.run_phase`) scored on the "
            f"{' or '.join(map(str, accuracy['test_images']))} test images; mean ± sample standard deviation over "
            f"seeds. Verdicts: one family, {accuracy_bench.PAIRED_FAMILY}, Holm-adjusted. Ran {when(accuracy)}."
        )

    def table(accuracy):
        return accuracy_bench.to_markdown(accuracy).rstrip() + "\n\nTraining time per phase (s, per seed): " + "; ".join(
            f"{name} {', '.join(f'{s:.0f}' for s in values)}" for name, values in accuracy["train_seconds"].items()
        ) + "."

    return _section("Accuracy over seeds: PneumoniaMNIST, official test split", found["accuracy"], describe, table,
                    "python -m kdkeras.bench.accuracy")


def _recipes_section(found):
    def describe(recipes):
        return (
            "The levers known to help distillation when every label is available, each run for the same seeds "
            "beside the configured recipe (`kdkeras/bench/recipes.py`, whose docstring states the rule, fixed "
            "before any of them ran): a recipe replaces the configured one only when its distilled student's "
            "validation AUC is higher by a paired 95% t-interval over seeds above 0 (a selection rule, "
            "unadjusted, as it was written). The test split is scored after the choice, for the record; its "
            f"verdicts form one family, {recipes_bench.TEST_FAMILY}, Holm-adjusted. Ran {when(recipes)}."
        )

    return _section("Which recipe: chosen on the validation split", found["recipes"], describe,
                    recipes_bench.to_markdown, "python -m kdkeras.bench.recipes")


def _transfer_section(found):
    def describe(transfer):
        return (
            "The teacher of each seed (above) trained on every train label. The same student then trains "
            "on 1%, 5% or 20% of the train labels (a seeded, stratified choice), alone, or distilled with the "
            "rest of the train images as an unlabeled transfer set (`labeled_fraction`, `[distill] "
            "transfer_set = \"train\"`; see `kdkeras/transfer.py`). Both arms run the experiment's recipe "
            "with the same epochs of the same number of steps, the same augmentation, class weights and "
            "early stopping on the labeled validation split. Verdicts: one family, "
            f"{transfer_bench.GAIN_FAMILY}, Holm-adjusted. The recipe is the quickstart's, fixed before this "
            "benchmark ran; nothing was tuned on its results. One of its settings did see a test split: the "
            "quickstart's balanced class weights were adopted in November 2026 after comparing them with "
            "unweighted training on the test split (see the README, \"Which split chose the recipe\"). "
            f"Ran {when(transfer)}."
        )

    return _section("Few labels: distillation through a transfer set", found["transfer"], describe,
                    transfer_bench.to_markdown, "python -m kdkeras.bench.transfer")


def _gap_section(runs_dir):
    """The capacity-gap section as `kdkeras.bench.gap` wrote it, or nothing where it has not run."""
    path = os.path.join(runs_dir, GAP)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return ["", f.read().rstrip("\n")]


def _readme_section(runs_dir, accuracy):
    """The README's result block, verbatim: tests/test_readme.py checks the README against it."""

    if accuracy is None:
        return []
    lines = ["", "## The quickstart result the README quotes", ""]
    run = readme.first_run(runs_dir, accuracy)
    if not all(os.path.exists(run.metrics(name)) for name in accuracy_bench.MODELS):
        return lines + [f"The first seed's run folder `{run.path}` is incomplete: rerun `make bench`."]
    return lines + ["The README's result block, verbatim (written by the same `make bench`):", "",
                    readme.block_body(runs_dir, accuracy).rstrip()]


def _determinism_section(found):
    def describe(determinism):
        return (
            f"The `{determinism['config']}` {determinism['phase']} phase (seed {determinism['seed']}) trained in "
            "fresh processes, alternately with `deterministic = true` and `false` (`kdkeras/bench/determinism.py`). "
            f"Ran {when(determinism)}."
        )

    return _section("Reproducibility", found["determinism"], describe, determinism_bench.to_markdown,
                    "python -m kdkeras.bench.determinism")


def _pipeline_section(runs_dir):
    path = os.path.join(runs_dir, PIPELINE)
    if not os.path.exists(path):
        return _section("Input pipeline: images per second on 2 cores", None, None, None,
                        "python -m kdkeras.data.benchmark")
    with open(path, encoding="utf-8") as f:
        return ["", "## Input pipeline: images per second on 2 cores", "", f.read().rstrip()]


def _speed_section(found):
    def describe(speed):
        return (
            "Steps per second on the same fixed batches in one process (see `kdkeras/bench/speed.py`): "
            "`kdkeras` is `kdkeras.Distiller`; `floor` is the student's own train step plus a separate "
            "teacher forward pass, the least any distiller can cost; `keras` is "
            "`keras.distillation.Distiller` with `LogitsDistillation(temperature, "
            "keras.losses.KLDivergence())` (the same loss); `cached` is `kdkeras.Distiller` fed the "
            "teacher's logits precomputed by `kdkeras.distillation.teacher_cache.with_teacher_logits`; `student` is the "
            "student trained alone. Ratios are times per step (1.10 = 10% slower). "
            f"CPU, ran {when(speed)}{_load_note(speed)}."
        )

    lines = _section("Training speed: cost of a distillation step", found["speed"], describe,
                     speed_bench.to_markdown, "python -m kdkeras.bench.speed")
    lines += ["", "### GPU", ""]
    speed_gpu = found["speed_gpu"]
    if speed_gpu:
        env = speed_gpu["environment"]
        return lines + [f"{', '.join(env['gpus']) or 'GPU'}, ran {when(speed_gpu)}.", "",
                        speed_bench.to_markdown(speed_gpu).rstrip()]
    return lines + [
        "| Device | Date | Precision, XLA | Steps/s (kdkeras / floor / keras / cached / student) | Ratios |",
        "| --- | --- | --- | --- | --- |",
        "| NVIDIA GPU | not yet measured | mixed_float16, jit_compile on | not yet measured | not yet measured |",
        "",
        "No GPU was available to this project so far. On a GPU machine: `python -m kdkeras.bench.speed "
        "--mixed-precision --jit on --out-dir runs/bench/speed_gpu`, then rerun the report.",
    ]


def _export_section(found):
    def describe(export):
        return (
            "`kdkeras export` (see `kdkeras/export/`) on the distilled quickstart student of the first seed: "
            "size on disk, median CPU latency per image at batch 1 (TensorFlow for Keras and SavedModel, "
            "`tf.lite.Interpreter` for TFLite) and test metrics of every file. `tflite_int8` is full-integer "
            "with int8 input and output, calibrated on unaugmented train images."
        )

    return _section("Export: the distilled student as SavedModel and TFLite", found["export"], describe,
                    _export_markdown, "kdkeras export")


def summary_lines(accuracy, speed, export, int8_tolerance=0.01):
    """Bullet lines stating each goal of the benchmarks and whether the numbers meet it.

    Args:
        accuracy: Result of `kdkeras.bench.accuracy`, or None.
        speed: Result of `kdkeras.bench.speed`, or None.
        export: `ExportTable.to_dict()` data, or None.
        int8_tolerance: Largest ACC drop of an int8 file against the Keras
            model that meets the goal (1 point).

    Returns:
        List of markdown lines, one per goal measured.
    """
    lines = []
    if accuracy:
        lines += [f"- Accuracy, {status}: {text}." for text, status in accuracy_bench.verdicts(accuracy)]
        spread = {name: accuracy["summary"][name]["acc"]["std"] for name in ("student", "distilled")
                  if name in accuracy["summary"]}
        if len(spread) == 2 and None not in spread.values():
            lines.append(
                f"- Accuracy: standard deviation of the test ACC over seeds, distilled student "
                f"{spread['distilled']:.3f}, student alone {spread['student']:.3f}."
            )
    if speed:
        for ratio in speed["ratios"]:
            if ratio["goal"] is not None:
                lines.append(
                    f"- Speed, CPU, jit_compile {'on' if ratio['jit_compile'] else 'off'}: time per step "
                    f"`{ratio['ratio']}` = {ratio['value']:.3f} (range over repeats {ratio['low']:.3f}-"
                    f"{ratio['high']:.3f}), goal <= {ratio['goal']:.2f}: {speed_bench.ratio_verdict(ratio)}."
                )
        rate = {(row["jit_compile"], row["step"]): row["steps_per_s"] for row in speed["rows"]}
        if (False, "kdkeras") in rate and (True, "kdkeras") in rate:
            lines.append(
                f"- Speed: on this CPU, `jit_compile=True` runs the Distiller step at "
                f"{rate[(True, 'kdkeras')] / rate[(False, 'kdkeras')]:.2f}x the steps/s of `jit_compile=False`."
            )
    if export:
        rows = {row["format"]: row for row in export["rows"]}
        reference = rows.get("keras", {}).get("acc")
        for fmt in ("tflite_dynamic_int8", "tflite_int8"):
            if fmt in rows and reference is not None and rows[fmt]["acc"] is not None:
                change = rows[fmt]["acc"] - reference
                lines.append(
                    f"- Export, {'met' if change >= -int8_tolerance else 'NOT met'}: `{fmt}` test ACC "
                    f"{rows[fmt]['acc']:.4f} against {reference:.4f} for the Keras model "
                    f"({100 * change:+.2f} points; goal: at most {100 * int8_tolerance:.0f} point lower), "
                    f"{rows[fmt]['size_bytes'] / rows['keras']['size_bytes']:.2f}x its size on disk."
                )
    return lines or ["Nothing measured yet."]


def write_benchmarks(runs_dir="runs/bench", out="BENCHMARKS.md"):
    """Writes BENCHMARKS.md atomically; returns its path."""
    write_text_atomic(out, build_markdown(runs_dir))
    return out


def _machine(result):
    if not result:
        return ["No benchmark has run yet."]
    env = result["environment"]
    lines = [
        f"- CPU: {env['cpus']} cores (`nproc`), no GPU used"
        + (f" (visible: {', '.join(env['gpus'])})" if env["gpus"] else "") + ".",
        f"- Software: TensorFlow {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}, "
        f"{env['platform']}.",
        "- The cores are shared with other jobs of the same project (tests, training runs): the training "
        "times of the accuracy runs include that contention, and the speed section gives the load "
        "average around its run (its step kinds alternate, so load falls on all of them alike).",
    ]
    if env.get("lscpu"):
        lines += ["", "`lscpu | head`:", "", "```", env["lscpu"], "```"]
    return lines


def _load_note(result):
    env = result["environment"]
    before, after = env.get("load_average"), env.get("load_average_after")
    if not before:
        return ""
    return f" (1-min load average {before[0]} before, {after[0] if after else 'n/a'} after, on {env['cpus']} cores)"


def _multiworker_lines(runs_dir):
    from kdkeras.bench import multiworker as multiworker_bench

    lines = ["", "## Multi-worker: the overhead of 2 local workers", ""]
    result = read_output(runs_dir, os.path.join("multiworker", "multiworker.json"))
    if not result:
        return lines + ["Not measured yet: run `python -m kdkeras.bench.multiworker` (see Reproduce)."]
    return lines + [
        "`strategy = \"multiworker\"` on one machine (see `kdkeras/bench/multiworker.py`): the same distillation "
        "epoch as one process on both cores and as 2 local workers (127.0.0.1) of one core each, on the same "
        "global batch; runs alternate. Scaling cannot be measured on 2 cores; this is the price of the "
        "cross-worker all-reduces and of each step waiting for both workers.",
        "",
        multiworker_bench.to_markdown(result).rstrip(),
    ]


def _export_markdown(data):
    from kdkeras.export import ExportTable

    return ExportTable(**{**data, "input_shape": tuple(data["input_shape"])}).to_markdown()


def _relative(path):
    # Shipped experiments are named as in the repository, wherever the run read them from.
    folder, name = os.path.split(path)
    return f"experiments/{name}" if os.path.basename(folder) == "experiments" else path


def build_parser():
    """The argument parser of `python -m kdkeras.bench.report`."""
    parser = argparse.ArgumentParser(prog="python -m kdkeras.bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default="runs/bench", help="where the benchmarks wrote their outputs")
    parser.add_argument("--out", type=output_file, default="BENCHMARKS.md", help="file to write (default BENCHMARKS.md)")
    parser.add_argument("--readme", help="also regenerate this README's quickstart-result block (make bench: README.md)")
    return parser


def main(argv=None):
    """Writes BENCHMARKS.md and prints its path."""
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.runs_dir):
        print(f"kdkeras.bench.report: {args.runs_dir} does not exist: run the benchmarks first "
              "(`make bench`).", file=sys.stderr)
        return 2
    try:
        print(f"wrote {write_benchmarks(args.runs_dir, args.out)}")
        if args.readme:
            print(f"wrote {readme.update_readme(args.readme, args.runs_dir)}")
    except ValueError as e:
        print(f"kdkeras.bench.report: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as e:
        # Valid JSON of another shape: a file edited by hand or written by another kdkeras version.
        print(f"kdkeras.bench.report: a result under {args.runs_dir} is malformed ({type(e).__name__}: {e}); "
              "rerun the benchmark that wrote it (`make bench` reuses every finished phase).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
