"""What training across workers costs on one machine: 2 workers of 1 core against 1 process of 2 cores.

Scaling on a 2-core machine says nothing, so this measures the overhead of
`strategy = "multiworker"` instead: the same distillation epoch (teacher
`resnet18` width 16, student `cnn_small`, bundled PneumoniaMNIST at 28 px,
the same global batch) runs once as one process pinned to both cores, and
once as two local workers (127.0.0.1) pinned to one core each. Each run
trains `epochs` epochs and keeps the median time of all but the first (which
traces the graphs). Runs alternate, one process then two workers, `rounds`
times, so load from other programs falls on both alike; the printed ratio is
the median over rounds of two-worker time / one-process time.

Run: `python -m kdkeras.bench.multiworker --out-dir runs/bench/multiworker`
(about 4 minutes on 2 CPU cores); it writes `multiworker.json` and
`multiworker.md` there, which `kdkeras.bench.report` puts in BENCHMARKS.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from kdkeras.argtypes import output_folder, positive_int
from kdkeras.bench import outputs
from kdkeras.bench.environment import describe_environment, load_average
from kdkeras.distribute import launch

TEACHER = "resnet18 (width 16)"
STUDENT = "cnn_small"


def train_epochs(strategy_name, out, epochs, limit, batch_size):
    """One run: distils for `epochs` epochs under a strategy; writes epoch times (s) to `out`."""
    from kdkeras.distribute import strategy as distribute

    strategy = distribute.get_strategy(strategy_name)  # first: collectives are set up at start-up

    import keras

    from kdkeras import models as models_lib
    from kdkeras.data import bundled_npz, load_medmnist
    from kdkeras.distillation.distiller import Distiller
    from kdkeras.distribute import multiworker

    keras.utils.set_random_seed(0)
    root = os.path.dirname(bundled_npz("pneumoniamnist"))
    train, _, _, info = load_medmnist("pneumoniamnist", root=root, batch_size=batch_size, limit=limit, seed=0)
    train = distribute.prepare_dataset(train, strategy, batch_size)
    with strategy.scope():
        teacher = models_lib.get_model("resnet18", input_shape=(28, 28, 1), num_classes=2, width=16)
        student = models_lib.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2)
        distribute.synchronize_batch_norm(student, strategy)  # as `kdkeras distill` does
        distiller = Distiller(student=student, teacher=teacher)
        distiller.compile(optimizer="adam", metrics=["accuracy"], temperature=4.0, alpha=0.1)
    seconds = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    distiller.fit(train, epochs=epochs, verbose=0, callbacks=[EpochTimer()])
    if multiworker.is_chief(strategy):
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"epoch_seconds": seconds, "steps": int(train.cardinality())}, f)


def _worker_command(strategy, out, args):
    return [
        sys.executable, "-m", "kdkeras.bench.multiworker", "--worker", strategy, "--out", out,
        "--epochs", str(args.epochs), "--limit", str(args.limit), "--batch-size", str(args.batch_size),
    ]


def _pinned(cores):
    return lambda: os.sched_setaffinity(0, cores)


def _env(**extra):
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CONFIG", "SLURM_PROCID")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _one_process(out, args, timeout):
    subprocess.run(
        _worker_command("none", out, args), env=_env(), preexec_fn=_pinned({0, 1}),
        check=True, timeout=timeout, stdout=subprocess.DEVNULL,
    )


def _two_workers(out, args, timeout):
    processes = []
    with launch.reserve_ports(2) as ports:
        for core, tf_config in enumerate(launch.local_tf_configs(ports)):
            processes.append(subprocess.Popen(
                _worker_command("multiworker", out, args), env=_env(TF_CONFIG=json.dumps(tf_config)),
                preexec_fn=_pinned({core}), stdout=subprocess.DEVNULL,
            ))
        launch.wait_listening(ports, processes)
    if launch.wait_all(processes, timeout=timeout):
        raise RuntimeError("a benchmark worker failed")


def _epoch_seconds(path):
    with open(path, encoding="utf-8") as f:
        return statistics.median(json.load(f)["epoch_seconds"][1:])


def run_benchmark(rounds=2, epochs=3, limit=1024, batch_size=128, timeout=600):
    """Alternates one-process and two-worker runs; returns the JSON-ready result.

    Args:
        rounds: One-process / two-worker pairs.
        epochs: Epochs per run; the first (tracing) is not timed.
        limit: Train images.
        batch_size: The global batch of both variants.
        timeout: Seconds one run may take.

    Returns:
        A dict: `rounds` (per round: seconds per epoch of each variant, their
        ratio and the 1-min load average after it), `ratio` (median, min and
        max over rounds), the settings and `environment`.
    """
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("kdkeras.bench.multiworker needs 2 CPU cores (0 and 1).")
    args = argparse.Namespace(epochs=epochs, limit=limit, batch_size=batch_size)
    environment = describe_environment()
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            one, two = os.path.join(tmp, f"one{round_}.json"), os.path.join(tmp, f"two{round_}.json")
            _one_process(one, args, timeout)
            _two_workers(two, args, timeout)
            one_s, two_s = _epoch_seconds(one), _epoch_seconds(two)
            load = load_average()
            measured.append({
                "one_process_s": one_s, "two_workers_s": two_s, "ratio": two_s / one_s,
                "load_average_1min": load[0] if load else None,
            })
            print(f"round {round_ + 1}: one process (2 cores) {one_s:.2f} s/epoch, "
                  f"2 workers (1 core each) {two_s:.2f} s/epoch, ratio {two_s / one_s:.2f}", flush=True)
    environment["load_average_after"] = load_average()
    ratios = [entry["ratio"] for entry in measured]
    return {
        "teacher": TEACHER, "student": STUDENT, "dataset": "pneumoniamnist (bundled, 28 px)",
        "images": limit, "global_batch": batch_size, "epochs": epochs, "timed_epochs": epochs - 1,
        "rounds": measured,
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "environment": environment,
    }


def to_markdown(result):
    """The result as BENCHMARKS.md's table, with what ran and the load around it."""
    env, ratio = result["environment"], result["ratio"]
    before, after = env.get("load_average") or ["n/a"], env.get("load_average_after") or ["n/a"]
    lines = [
        "| Round | one process, 2 cores (s/epoch) | 2 workers, 1 core each (s/epoch) | ratio | 1-min load after |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, entry in enumerate(result["rounds"], start=1):
        load = entry["load_average_1min"]
        lines.append(f"| {i} | {entry['one_process_s']:.2f} | {entry['two_workers_s']:.2f} | "
                     f"{entry['ratio']:.2f} | {'n/a' if load is None else load} |")
    lines += [
        "",
        f"2 workers / 1 process: **{ratio['median']:.2f}x** (median over {len(result['rounds'])} interleaved "
        f"rounds, {ratio['min']:.2f}-{ratio['max']:.2f}x). A distillation epoch (teacher {result['teacher']}, "
        f"student {result['student']} with its BatchNorm synchronised over the workers as `kdkeras distill` does, "
        f"{result['images']:,} images of {result['dataset']}, global batch "
        f"{result['global_batch']}), median of the last {result['timed_epochs']} of {result['epochs']} epochs "
        f"per run. {env['cpus']} CPU cores, TensorFlow {env['tensorflow']}, Keras {env['keras']}, ran on "
        f"{env['date'][:10]}; 1-min load average {before[0]} before, {after[0]} after (the cores are shared "
        "with other jobs: every step waits for both workers to be scheduled, so load weighs more on 2 "
        "workers than on 1 process).",
    ]
    return "\n".join(lines) + "\n"


def save(result, out_dir):
    """Writes `multiworker.json` and `multiworker.md` into `out_dir`; returns the markdown path."""
    return outputs.save_result(result, out_dir, "multiworker", to_markdown(result))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kdkeras.bench.multiworker", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=2, help="one-process / two-worker pairs (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed (default 3)")
    parser.add_argument("--limit", type=positive_int, default=1024, help="train images (default 1024)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="global batch (default 128)")
    parser.add_argument("--timeout", type=positive_int, default=600, help="seconds one run may take (default 600)")
    parser.add_argument("--out-dir", type=output_folder, help="where to write multiworker.json and multiworker.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        train_epochs(args.worker, args.out, args.epochs, args.limit, args.batch_size)
        return 0
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces the graphs and is not timed")
    if args.batch_size % 2:
        parser.error(f"--batch-size {args.batch_size} does not split over the 2 workers: pass an even global batch")
    if args.limit < args.batch_size:
        parser.error(f"--limit {args.limit} is less than one global batch ({args.batch_size}): pass at least that")
    result = run_benchmark(args.rounds, args.epochs, args.limit, args.batch_size, args.timeout)
    print(to_markdown(result))
    if args.out_dir:
        print(f"wrote {save(result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
