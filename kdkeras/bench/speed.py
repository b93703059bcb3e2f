"""What distillation costs per training step, measured in one process on the same batches.

Five train steps run on identical in-memory batches of the bundled
PneumoniaMNIST, each with its own copy of the student (same initial weights),
the same optimizer and the same `accuracy` metric:

| step | what it runs |
| --- | --- |
| `kdkeras` | `kdkeras.Distiller.train_on_batch`: teacher forward + student step, one graph |
| `floor` | the teacher's forward pass, then `student.train_on_batch`: the least any distiller can cost |
| `keras` | `keras.distillation.Distiller` with `LogitsDistillation(T, keras.losses.KLDivergence())` (the same math) |
| `cached` | `kdkeras.Distiller` on `({"inputs": x, "teacher_logits": z}, y)` batches from `kdkeras.distillation.teacher_cache` |
| `student` | `student.train_on_batch` alone |

After `warmup` untimed steps of each kind (the first traces the graph), each
repeat times `steps` steps of every kind, one step of each kind in turn, so
that load from other processes falls on all kinds alike. Steps/s are medians
over repeats. Ratios are times per step, taken within each repeat and then
the median: `kdkeras/floor` (goal <= 1.10), `kdkeras/keras` (goal <= 1.00) and
`cached/student`. Everything runs with `jit_compile` off and on.

Run: `python -m kdkeras.bench.speed --out-dir runs/bench/speed` (a few
minutes on 2 CPU cores); `--smoke` for a seconds-long check.
"""

import argparse
import json
import statistics
import sys
import time

import keras
import tensorflow as tf

from kdkeras import models as models_lib
from kdkeras.argtypes import output_folder, positive_int
from kdkeras.bench import outputs
from kdkeras.bench.environment import describe_environment
from kdkeras.data import bundled_npz, load_medmnist
from kdkeras.distillation.distiller import Distiller

STEPS = ("kdkeras", "floor", "keras", "cached", "student")
RATIOS = (("kdkeras", "floor", 1.10), ("kdkeras", "keras", 1.00), ("cached", "student", None))
# Teacher and student (name, builder options) of each pair, from experiments/quickstart.toml.
PAIRS = {
    "quickstart": (("resnet18", {"width": 16}), ("cnn_small", {})),
    "resnet18_full": (("resnet18", {"width": 64}), ("cnn_small", {})),
}


def run_speed_benchmark(
    pair="quickstart",
    teacher=None,
    student=None,
    image_size=28,
    batch_size=128,
    batches=4,
    steps=10,
    repeats=7,
    warmup=3,
    jit_compile=(False, True),
    alpha=0.1,
    temperature=4.0,
    learning_rate=1e-3,
    seed=0,
    mixed_precision=False,
    log=print,
):
    """Times the five train steps and returns steps/s and ratios.

    Args:
        pair: Name in `PAIRS` giving the teacher and the student.
        teacher: `(model name, options)` overriding the pair's teacher.
        student: `(model name, options)` overriding the pair's student.
        image_size: Side of the images, resized from 28 px when larger.
        batch_size: Images per step.
        batches: Distinct fixed batches, cycled through.
        steps: Timed steps per repeat.
        repeats: Timed repeats per step kind; the median is reported.
        warmup: Untimed steps before timing (at least 1: tracing).
        jit_compile: The `jit_compile` settings to measure.
        alpha: Weight of the student loss.
        temperature: Distillation temperature.
        learning_rate: Adam learning rate of every student.
        seed: Seed of the student initial weights.
        mixed_precision: Build every model under the `"mixed_float16"` policy
            (for GPUs; logits stay float32).
        log: Callable receiving progress lines.

    Returns:
        A JSON-ready dict with `settings`, `models` (names and parameters),
        `rows` (one per jit setting and step: `steps_per_s` median, `ms_per_step`,
        `runs`), `ratios`, `skipped` (step -> reason) and `environment`.

    Raises:
        ValueError: for an unknown pair or non-positive counts.
    """
    for name, value in (("batch_size", batch_size), ("batches", batches), ("steps", steps),
                        ("repeats", repeats), ("warmup", warmup)):
        if int(value) < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}.")
    if pair not in PAIRS:
        raise ValueError(f"Unknown pair {pair!r}; use one of {', '.join(PAIRS)}, or pass teacher= and student=.")
    jit_compile = tuple(bool(j) for j in jit_compile)
    if not jit_compile:
        raise ValueError("`jit_compile` needs at least one setting, e.g. (False, True).")
    teacher_spec, student_spec = teacher or PAIRS[pair][0], student or PAIRS[pair][1]
    environment = describe_environment()
    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        result = _measure(teacher_spec, student_spec, image_size, batch_size, batches, steps, repeats, warmup,
                          jit_compile, alpha, temperature, learning_rate, seed, log)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    environment["load_average_after"] = describe_environment()["load_average"]
    result["settings"].update(pair=pair, mixed_precision=bool(mixed_precision))
    result["environment"] = environment
    return result


def _measure(teacher_spec, student_spec, image_size, batch_size, batches, steps, repeats, warmup,
             jit_compile, alpha, temperature, learning_rate, seed, log):
    data = fixed_batches(batch_size, batches, image_size, seed)
    input_shape = tuple(data[0][0].shape[1:])
    keras.utils.set_random_seed(seed)
    teacher_model = models_lib.get_model(teacher_spec[0], input_shape=input_shape, num_classes=2, **teacher_spec[1])

    def new_student():
        keras.utils.set_random_seed(seed)
        return models_lib.get_model(student_spec[0], input_shape=input_shape, num_classes=2, **student_spec[1])

    cached_data, skipped = _cached_batches(data, teacher_model)
    log(
        f"[speed] teacher {teacher_spec[0]} {teacher_spec[1]} ({teacher_model.count_params():,} params), "
        f"student {student_spec[0]} {student_spec[1]}, {input_shape}, batch {batch_size}"
    )
    steps_by_key = {}
    for jit in jit_compile:
        for name, step in _train_steps(teacher_model, new_student, jit, alpha, temperature, learning_rate).items():
            if name == "cached" and cached_data is None:
                continue
            steps_by_key[(jit, name)] = (step, cached_data if name == "cached" else data)
    for (jit, name), (step, batches_of) in steps_by_key.items():
        log(f"[speed] warm-up: {name}, jit_compile={jit}")
        for i in range(int(warmup)):
            step(batches_of[i % len(batches_of)])
    runs = {key: [] for key in steps_by_key}
    keys = list(steps_by_key)
    for repeat in range(int(repeats)):
        seconds = dict.fromkeys(keys, 0.0)
        for i in range(int(steps)):
            # One step of each kind in turn, the order rotating, so that a
            # neighbour's burst of CPU load slows every kind alike.
            shift = (repeat * int(steps) + i) % len(keys)
            for key in keys[shift:] + keys[:shift]:
                step, batches_of = steps_by_key[key]
                start = time.perf_counter()
                step(batches_of[i % len(batches_of)])  # train_on_batch returns host values: the step is done
                seconds[key] += time.perf_counter() - start
        for key in keys:
            runs[key].append(int(steps) / seconds[key])
        log(f"[speed] repeat {repeat + 1}/{repeats} done")
    rows = []
    for (jit, name), rates in runs.items():
        median = statistics.median(rates)
        rows.append({
            "jit_compile": jit, "step": name, "steps_per_s": median, "ms_per_step": 1000.0 / median, "runs": rates,
        })
    return {
        "settings": {
            "image_size": int(input_shape[0]), "batch_size": int(batch_size),
            "batches": int(batches), "steps": int(steps), "repeats": int(repeats), "warmup": int(warmup),
            "alpha": alpha, "temperature": temperature, "learning_rate": learning_rate, "seed": seed,
        },
        "models": {
            "teacher": {"name": teacher_spec[0], "options": teacher_spec[1], "params": teacher_model.count_params()},
            "student": {"name": student_spec[0], "options": student_spec[1], "params": new_student().count_params()},
        },
        "rows": rows,
        "ratios": ratios(rows),
        "skipped": skipped,
    }


def fixed_batches(batch_size, batches, image_size=28, seed=0):
    """The first `batches` unshuffled batches of the bundled PneumoniaMNIST train split.

    Returns:
        List of `(images, labels)` tensors, float32 pixels in [0, 255] of
        shape `(batch_size, image_size, image_size, 1)` and int32 labels.
    """
    train, _, _, _ = load_medmnist(
        "pneumoniamnist", path=bundled_npz(), batch_size=batch_size, shuffle=False, seed=seed,
        image_size=None if image_size == 28 else image_size,
    )
    data = [(tf.constant(x), tf.constant(y)) for x, y in train.take(int(batches))]
    if len(data) < int(batches) or data[-1][0].shape[0] != batch_size:
        raise ValueError(f"The train split holds fewer than {batches} full batches of {batch_size}.")
    return data


def ratios(rows):
    """Time-per-step ratios of `RATIOS` for each jit setting present in `rows`.

    Each repeat timed every step kind over the same stretch of time, so the
    ratio is taken within each repeat and the median over repeats reported:
    a load burst from another process then cancels out instead of landing on
    one side of the ratio.

    Args:
        rows: Dicts with `jit_compile`, `step` and `runs` (steps/s of each
            repeat, repeats in the same order for every step).

    Returns:
        List of dicts `{"jit_compile", "ratio": "a/b", "value", "low", "high",
        "goal", "met"}`: `value` is the median over repeats of
        `steps_per_s[b] / steps_per_s[a]` (how many times longer a step of `a`
        takes than one of `b`), `low` and `high` its extremes; `goal` and
        `met` are None where the benchmark sets no goal. Pairs with a missing
        step are left out.

    Example:

    ```python
    ratios([{"jit_compile": False, "step": "kdkeras", "runs": [4.0]},
            {"jit_compile": False, "step": "floor", "runs": [5.0]}])
    # [{"jit_compile": False, "ratio": "kdkeras/floor", "value": 1.25, "low": 1.25, "high": 1.25,
    #   "goal": 1.1, "met": False}]
    ```
    """
    runs = {(row["jit_compile"], row["step"]): row["runs"] for row in rows}
    result = []
    for jit in dict.fromkeys(row["jit_compile"] for row in rows):
        for a, b, goal in RATIOS:
            if (jit, a) in runs and (jit, b) in runs:
                paired = [rate_b / rate_a for rate_a, rate_b in zip(runs[(jit, a)], runs[(jit, b)])]
                value = statistics.median(paired)
                result.append({
                    "jit_compile": jit, "ratio": f"{a}/{b}", "value": value, "low": min(paired),
                    "high": max(paired), "goal": goal, "met": None if goal is None else bool(value <= goal),
                })
    return result


def to_markdown(result):
    """The steps/s table and the ratio table of a `run_speed_benchmark` result."""
    models, settings = result["models"], result["settings"]
    lines = [
        "| jit_compile | Train step | Steps/s (median) | ms/step | Steps/s of each repeat |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {_on_off(row['jit_compile'])} | {row['step']} | {row['steps_per_s']:.2f} | "
            f"{row['ms_per_step']:.1f} | {', '.join(f'{r:.2f}' for r in row['runs'])} |"
        )
    lines += [
        "",
        "| jit_compile | Ratio (time per step) | Median over repeats | Range over repeats | Goal | Met |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for ratio in result["ratios"]:
        goal = "" if ratio["goal"] is None else f"<= {ratio['goal']:.2f}"
        met = "" if ratio["met"] is None else ratio_verdict(ratio)
        lines.append(
            f"| {_on_off(ratio['jit_compile'])} | {ratio['ratio']} | {ratio['value']:.3f} | "
            f"{ratio['low']:.3f}-{ratio['high']:.3f} | {goal} | {met} |"
        )
    lines.append("")
    lines.append(
        f"Teacher `{models['teacher']['name']}` {_options(models['teacher']['options'])}"
        f"({models['teacher']['params']:,} params), student `{models['student']['name']}` "
        f"{_options(models['student']['options'])}({models['student']['params']:,} params), "
        f"{settings['image_size']} px, batch {settings['batch_size']}, Adam, alpha {settings['alpha']}, "
        f"T {settings['temperature']}; {settings['steps']} timed steps x {settings['repeats']} repeats "
        f"after {settings['warmup']} warm-up steps, on {settings['batches']} fixed batches."
    )
    for name, reason in result["skipped"].items():
        lines.append(f"Step `{name}` not measured: {reason}")
    return "\n".join(lines) + "\n"


def save(result, out_dir):
    """Writes `speed.json` and `speed.md` into `out_dir`; returns the markdown path."""
    return outputs.save_result(result, out_dir, "speed", to_markdown(result))


def _train_steps(teacher, new_student, jit, alpha, temperature, learning_rate):
    """One callable per step kind, each taking a batch `(x, y)`."""
    crossentropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    compile_args = {"metrics": ["accuracy"], "jit_compile": jit}

    distiller = Distiller(student=new_student(), teacher=teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate), student_loss_fn=crossentropy,
                      alpha=alpha, temperature=temperature, **compile_args)

    floor_student = new_student()
    floor_student.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=crossentropy, **compile_args)
    teacher_forward = tf.function(lambda x: teacher(x, training=False), jit_compile=jit)

    def floor(batch):
        teacher_forward(batch[0])
        return floor_student.train_on_batch(*batch)

    keras_distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=new_student(),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=alpha,
    )
    keras_distiller.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=crossentropy, **compile_args)

    cached_distiller = Distiller(student=new_student(), teacher=teacher)
    cached_distiller.compile(optimizer=keras.optimizers.Adam(learning_rate), student_loss_fn=crossentropy,
                             alpha=alpha, temperature=temperature, **compile_args)

    alone = new_student()
    alone.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=crossentropy, **compile_args)
    return {
        "kdkeras": lambda batch: distiller.train_on_batch(*batch),
        "floor": floor,
        "keras": lambda batch: keras_distiller.train_on_batch(*batch),
        "cached": lambda batch: cached_distiller.train_on_batch(*batch),
        "student": lambda batch: alone.train_on_batch(*batch),
    }


def _cached_batches(data, teacher):
    try:
        from kdkeras.distillation.teacher_cache import with_teacher_logits
    except ImportError:
        return None, {"cached": "kdkeras.distillation.teacher_cache is not available in this checkout."}
    images = tf.concat([x for x, _ in data], axis=0)
    labels = tf.concat([y for _, y in data], axis=0)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(int(data[0][0].shape[0]))
    cached = with_teacher_logits(dataset, teacher, shuffle=False, verbose=False)
    return [(x, y) for x, y in cached], {}


def ratio_verdict(ratio):
    """`"yes"`, `"no"`, or `"no (within the spread of repeats)"` when some repeats met the goal."""
    if ratio["met"]:
        return "yes"
    if ratio["low"] <= ratio["goal"]:
        return "no (within the spread of repeats)"
    return "no"


def _on_off(flag):
    return "on" if flag else "off"


def _options(options):
    return f"{json.dumps(options)} " if options else ""


def build_parser():
    """The argument parser of `python -m kdkeras.bench.speed`."""
    parser = argparse.ArgumentParser(
        prog="python -m kdkeras.bench.speed", description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--pair", default="quickstart", choices=sorted(PAIRS), help="teacher/student pair")
    parser.add_argument("--teacher", help="zoo name overriding the pair's teacher")
    parser.add_argument("--teacher-options", type=json.loads, default=None, help='JSON options, e.g. \'{"width": 8}\'')
    parser.add_argument("--student", help="zoo name overriding the pair's student")
    parser.add_argument("--student-options", type=json.loads, default=None, help="JSON options of the student")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=positive_int, default=4, help="distinct fixed batches (default 4)")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per repeat (default 10)")
    parser.add_argument("--repeats", type=positive_int, default=7, help="timed repeats, median reported (default 7)")
    parser.add_argument("--warmup", type=positive_int, default=3,
                        help="untimed steps first, at least 1: the first traces the graph (default 3)")
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both", help="jit_compile settings")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy (GPUs)")
    parser.add_argument("--smoke", action="store_true", help="2 steps, 1 repeat, 1 warm-up: checks that it runs")
    parser.add_argument("--out-dir", type=output_folder, help="write speed.json and speed.md here")
    return parser


def main(argv=None):
    """Runs the benchmark, prints its tables and writes them when `--out-dir` is given."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.steps, args.repeats, args.warmup = 2, 1, 1
    pair_teacher, pair_student = PAIRS[args.pair]
    teacher = (args.teacher or pair_teacher[0], args.teacher_options if args.teacher_options is not None
               else ({} if args.teacher else pair_teacher[1]))
    student = (args.student or pair_student[0], args.student_options if args.student_options is not None
               else ({} if args.student else pair_student[1]))
    jit = {"off": (False,), "on": (True,), "both": (False, True)}[args.jit]
    try:
        result = run_speed_benchmark(
            args.pair, teacher, student, args.image_size, args.batch_size, args.batches,
            args.steps, args.repeats, args.warmup, jit, mixed_precision=args.mixed_precision,
        )
    except ValueError as e:
        print(f"kdkeras.bench.speed: {e}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    if args.out_dir:
        print(f"wrote {save(result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
