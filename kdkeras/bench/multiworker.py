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

Run: `python -m kdkeras.bench.multiworker` (about 4 minutes on 2 CPU cores).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from kdkeras import launch


def train_epochs(strategy_name, out, epochs, limit, batch_size):
    """One run: distils for `epochs` epochs under a strategy; writes epoch times (s) to `out`."""
    from kdkeras import distribute

    strategy = distribute.get_strategy(strategy_name)  # first: collectives are set up at start-up

    import keras

    from kdkeras import models as models_lib
    from kdkeras import multiworker
    from kdkeras.data import bundled_npz, load_medmnist
    from kdkeras.distiller import Distiller

    keras.utils.set_random_seed(0)
    root = os.path.dirname(bundled_npz("pneumoniamnist"))
    train, _, _, info = load_medmnist("pneumoniamnist", root=root, batch_size=batch_size, limit=limit, seed=0)
    train = distribute.prepare_dataset(train, strategy, batch_size)
    with strategy.scope():
        teacher = models_lib.get_model("resnet18", input_shape=(28, 28, 1), num_classes=2, width=16)
        student = models_lib.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="one-process / two-worker pairs (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed (default 3)")
    parser.add_argument("--limit", type=int, default=1024, help="train images (default 1024)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (default 128)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one run may take (default 600)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        train_epochs(args.worker, args.out, args.epochs, args.limit, args.batch_size)
        return 0
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("kdkeras.bench.multiworker needs 2 CPU cores (0 and 1).")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            one, two = os.path.join(tmp, f"one{round_}.json"), os.path.join(tmp, f"two{round_}.json")
            _one_process(one, args, args.timeout)
            _two_workers(two, args, args.timeout)
            one_s, two_s = _epoch_seconds(one), _epoch_seconds(two)
            ratios.append(two_s / one_s)
            print(f"round {round_ + 1}: one process (2 cores) {one_s:.2f} s/epoch, "
                  f"2 workers (1 core each) {two_s:.2f} s/epoch, ratio {two_s / one_s:.2f}", flush=True)
    print(f"2 workers / 1 process, median over {args.rounds} rounds: {statistics.median(ratios):.2f} "
          f"(global batch {args.batch_size}, {args.limit} images, {time.strftime('%Y-%m-%d')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
