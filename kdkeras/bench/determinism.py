"""What determinism costs, and how much the numbers move without it.

Runs one phase of an experiment (default: the quickstart student, seed 0) in
fresh processes, alternately with `deterministic = true` and `false`, and
reports for each run the training time and the test metrics:

- two deterministic runs must agree to the last bit (the weights' hash);
- the time ratio (on / off, per pair, so that both see the same load) is the
  speed cost of `tf.config.experimental.enable_op_determinism`;
- the metric changes between the modes show how far a different order of
  floating-point operations (the same kind of change another CPU or library
  version brings) moves one run's result.

Run: `python -m kdkeras.bench.determinism --pairs 2 --out-dir runs/bench/determinism`.
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

from kdkeras import runs as runs_lib
from kdkeras.argtypes import output_folder, positive_int
from kdkeras.bench.environment import describe_environment
from kdkeras.config import ConfigError, load_config
from kdkeras.files import write_text_atomic


def run_once(config, phase, deterministic, runs_dir, seed=0):
    """Trains one phase in a fresh process; returns its time, metrics and a hash of its test logits."""
    args = [sys.executable, "-m", "kdkeras", phase, "--config", config, "--runs-dir", runs_dir, "--quiet",
            "--seed", str(seed), "--set", f"deterministic={'true' if deterministic else 'false'}"]
    child = subprocess.run(args, capture_output=True, text=True)
    if child.returncode:
        # The phase's own message (bad data, disk full) is the last lines it printed.
        tail = "\n".join((child.stderr or child.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"`{' '.join(args[2:])}` exited with {child.returncode}:\n{tail}")
    run = runs_lib.RunFolder(os.path.join(runs_dir, _experiment_name(config)))
    name = runs_lib.MODEL_NAMES[phase]
    metrics = run.read_metrics(name)
    # The .keras file records when it was saved; the test logits are what the weights compute.
    logits = run.read_predictions(name)["logits"]
    return {
        "deterministic": deterministic,
        "train_seconds": metrics["train_seconds"],
        "metrics": {key: metrics[key] for key in runs_lib.HEADLINE},
        "logits_sha256": hashlib.sha256(logits.tobytes()).hexdigest()[:16],
    }


def run_benchmark(config="quickstart", phase="student", pairs=2, seed=0, log=print):
    """Alternates deterministic and non-deterministic runs of one phase.

    Returns:
        A JSON-ready dict: `runs` (in order), `time_ratios` (off / on per pair),
        `repeatable` (whether every deterministic run computed the same test
        logits, bit for bit), `largest_change` (the largest absolute change of each metric
        between any two runs) and `environment`.
    """
    if phase not in ("teacher", "student"):
        raise ValueError(f"phase must be 'teacher' or 'student' (they need no earlier phase), got {phase!r}.")
    environment = describe_environment()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(int(pairs)):
            for deterministic in (True, False):
                runs_dir = os.path.join(tmp, f"run{index}-{'on' if deterministic else 'off'}")
                log(f"[determinism] pair {index + 1}/{pairs}: deterministic={deterministic}")
                results.append(run_once(config, phase, deterministic, runs_dir, seed))
    on = [r for r in results if r["deterministic"]]
    off = [r for r in results if not r["deterministic"]]
    return {
        "config": config,
        "phase": phase,
        "seed": seed,
        "runs": results,
        "time_ratios": [a["train_seconds"] / b["train_seconds"] for a, b in zip(on, off)],
        "repeatable": len({r["logits_sha256"] for r in on}) == 1,
        "repeatable_off": len({r["logits_sha256"] for r in off}) == 1,
        "largest_change": {
            key: max(r["metrics"][key] for r in results) - min(r["metrics"][key] for r in results)
            for key in runs_lib.HEADLINE
        },
        "environment": environment,
    }


def to_markdown(result):
    """The runs table and the two conclusions."""
    lines = [
        "| Run | deterministic | train s | ACC | AUC | Balanced ACC | test logits (sha256, 16 hex) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for index, run in enumerate(result["runs"], 1):
        m = run["metrics"]
        lines.append(
            f"| {index} | {'on' if run['deterministic'] else 'off'} | {run['train_seconds']:.1f} | {m['acc']:.4f} | "
            f"{m['auc']:.4f} | {m['balanced_acc']:.4f} | `{run['logits_sha256']}` |"
        )
    ratios = result["time_ratios"]
    change = result["largest_change"]
    cost = (
        f"no cost measurable on this shared machine (the range {min(ratios):.2f}-{max(ratios):.2f} includes 1)"
        if min(ratios) <= 1.0 <= max(ratios)
        else f"determinism costs {100 * (statistics.median(ratios) - 1):+.0f}% of training time (median pair)"
    )
    lines += [
        "",
        f"- Deterministic runs {'repeat bit for bit' if result['repeatable'] else 'DIFFER'} "
        f"({sum(r['deterministic'] for r in result['runs'])} runs compared by the hash of their test logits); "
        f"runs without op determinism {'also repeat' if result.get('repeatable_off') else 'do not repeat'} "
        "on this CPU.",
        f"- Training time with determinism / without, per pair: {', '.join(f'{r:.2f}' for r in ratios)}: {cost}.",
        f"- Largest change between any two runs: ACC {100 * change['acc']:.1f} points, AUC {change['auc']:.4f}, "
        f"balanced ACC {100 * change['balanced_acc']:.1f} points. The order of floating-point operations "
        "alone moves one run this much, which is what another CPU or TensorFlow version can do.",
    ]
    return "\n".join(lines) + "\n"


def _experiment_name(config):
    return load_config(config).name


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m kdkeras.bench.determinism", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="quickstart", help="experiment name or .toml path")
    parser.add_argument("--phase", default="student", choices=("teacher", "student"))
    parser.add_argument("--pairs", type=positive_int, default=2,
                        help="deterministic/non-deterministic pairs (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=output_folder, default="runs/bench/determinism")
    return parser


def main(argv=None):
    """Runs the benchmark and writes `determinism.json` and `determinism.md`."""
    args = build_parser().parse_args(argv)
    try:
        _experiment_name(args.config)  # a wrong config is named here, not by the first child process
        result = run_benchmark(args.config, args.phase, args.pairs, args.seed)
    except (ConfigError, RuntimeError) as error:
        print(f"kdkeras.bench.determinism: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    os.makedirs(args.out_dir, exist_ok=True)
    write_text_atomic(os.path.join(args.out_dir, "determinism.json"), json.dumps(result, indent=2) + "\n")
    text = to_markdown(result)
    write_text_atomic(os.path.join(args.out_dir, "determinism.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
