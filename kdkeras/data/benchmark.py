"""Input pipeline throughput against the machine's decode limit and a small student.

A pipeline is fast enough when it yields images faster than the model
consumes them, and it is well built when it comes close to the machine's
decode-only limit. This benchmark times each loader of `kdkeras.data` over
full epochs (first epoch: decode and fill the cache; second: from the
cache) on the bundled PneumoniaMNIST and on a generated Kermany-style folder
of JPEGs; beside each JPEG row it gives the images/s of a bare decode loop
over the same files (full size and at the pipeline's DCT scale, on every
core), and it times the train step of a small CNN student at the same image
size, with and without the augmentation running inside the step.

The "before" rows rebuild the previous designs in the same run (full-size
JPEG decoding; the augmentation as five Keras layers applied in turn), so
each speed-up is a ratio measured side by side.

Run: `python -m kdkeras.data.benchmark --out runs/bench/pipeline.md`
(about a minute on 2 CPU cores with the defaults); `--help` lists the sizes.
"""

import argparse
import collections
import datetime
import math
import os
import platform
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from kdkeras.argtypes import output_file, positive_int
from kdkeras.data import images, transforms
from kdkeras.data.augment import RandomIntensityScale, augmentation, with_augmentation
from kdkeras.data.medmnist import bundled_npz, load_medmnist
from kdkeras.data.xray import load_xray_folder, xray_splits
from kdkeras.files import write_text_atomic

# Each A/B comparison alternates its candidates this many times.
ROUNDS = 3


class Rate(collections.namedtuple("Rate", ["wall", "cpu"])):
    """Images per second of wall-clock time, and per second of this process's CPU time.

    On a shared machine the wall-clock rate moves with other jobs' load; the
    CPU rate (all threads of this process) does not, and on `n` idle cores a
    pipeline that keeps them busy reaches about `n * cpu`.
    """


def _measure(function):
    wall, cpu = time.perf_counter(), time.process_time()
    items = function()
    return items, time.perf_counter() - wall, time.process_time() - cpu


def _epoch_rate(ds):
    items, wall, cpu = _measure(lambda: _count(ds))
    return Rate(items / wall, items / cpu)


def _interleaved(functions, rounds=ROUNDS):
    """Rates of `{name: () -> items}` run in turn, `rounds` times: load spikes hit all alike."""
    totals = {name: [0, 0.0, 0.0] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            for i, value in enumerate(_measure(function)):
                totals[name][i] += value
    return {name: Rate(items / wall, items / cpu) for name, (items, wall, cpu) in totals.items()}


def decode_limits(headers):
    """Images/s of bare decode loops over the files of `headers`: the ceiling of any pipeline.

    Args:
        headers: `ImageHeader`s of JPEG files, with the `jpeg_ratio` of the pipeline.

    Returns:
        Dict: `"full"` and `"scaled"` are TensorFlow decodes on every core
        (`tf.data` map, read and decode only) at full size and at each
        file's DCT scale; `"pil_full"` is a single-threaded PIL loop.
    """
    paths = [h.path for h in headers]
    ratios = np.array([h.jpeg_ratio for h in headers], np.int32)

    def tf_loop(scaled):
        ds = tf.data.Dataset.from_tensor_slices((images.tf_paths(paths), ratios))

        def decode(path, ratio):
            image = images.decode_contents(tf.io.read_file(path), ratio if scaled else 1)
            # The shape depends on the pixels: the decode cannot be pruned away.
            return tf.reduce_sum(tf.shape(image))

        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
        return lambda: sum(int(batch.shape[0]) for batch in ds)

    def pil_loop():
        for path in paths:
            with Image.open(path) as im:
                im.load()
        return len(paths)

    return _interleaved({"full": tf_loop(False), "scaled": tf_loop(True), "pil_full": pil_loop})


def _file_pipeline(headers, labels, image_size, batch_size, scaled, augment=None):
    """The JPEG folder's train pipeline (`folders.file_source`), with or without DCT scaling."""
    paths = [h.path for h in headers]
    ratios = np.array([h.jpeg_ratio if scaled else 1 for h in headers], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images.tf_paths(paths), ratios, labels))
    size = (image_size, image_size)
    return transforms.finalize(
        ds,
        batch_size=batch_size,
        training=True,
        augment=augment,
        decode=lambda path, ratio, label: (images.decode_image_file(path, 1, size, ratio), label),
        num_examples=len(paths),
    )


def _first_epochs(headers, labels, image_size, batch_size, scaled):
    # A new pipeline has an empty cache: its first epoch decodes every file. They
    # are built here, since building one (tracing its functions) is not decoding.
    fresh = [_file_pipeline(headers, labels, image_size, batch_size, scaled) for _ in range(ROUNDS)]
    return lambda: _count(fresh.pop())


def _count(ds):
    return sum(int(x.shape[0]) for x, _ in ds)


def _keras_layers_xray(seed=0):
    """The "xray" preset as it was: five Keras random layers, each its own warp, run in turn."""
    shear = math.sin(math.radians(0.02))
    return [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(5 / 360, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomShear(x_factor=shear, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomZoom(0.1, 0.1, fill_mode="nearest", seed=seed + 3),
        RandomIntensityScale((0.7, 1.3), seed=seed + 4),
    ]


def student_cnn(input_shape, num_classes=2):
    """The benchmark's student: 8-16-32 conv blocks and global pooling (about 6k parameters)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for filters in (8, 16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="benchmark_student")


def student_rates(image_size, channels, batch_size, steps, augment=None):
    """Training images per second of `student_cnn` on in-memory batches.

    Args:
        image_size: Side of the square images.
        channels: 1 or 3.
        batch_size: Batch size.
        steps: Timed train steps per candidate.
        augment: Optional preset: the same student is also timed with it
            inside the train step (`augment_on = "device"`), interleaved.

    Returns:
        `{"plain": images/s}`, plus `"augmented"` with `augment`.
    """
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, channels)).astype("float32")
    y = rng.integers(0, 2, batch_size).astype("int32")
    batches = tf.data.Dataset.from_tensors((x, y)).repeat()
    candidates = {"plain": None, "augmented": augment} if augment else {"plain": None}
    fits = {}
    for name, preset in candidates.items():
        keras.utils.set_random_seed(0)
        model = student_cnn((image_size, image_size, channels))
        if preset is not None:
            model = with_augmentation(model, augmentation(preset))
        model.compile(
            optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        model.fit(batches, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)

        def fit(model=model, n=max(1, steps // ROUNDS)):
            model.fit(batches, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False)
            return n * batch_size

        fits[name] = fit
    return _interleaved(fits)


# `write_jpeg_tree` puts image i in test when i % 4 == 0 and calls it NORMAL when i % 3 == 0:
# images 0-4 are the first to hold both classes in both splits.
MIN_JPEGS = 5


def write_jpeg_tree(root, count, size, seed=0):
    """Writes a Kermany-style tree of `count` gray JPEGs of `size` x `size` pixels.

    Args:
        root: Destination folder (gets `train/` and `test/`).
        count: Number of JPEGs, three quarters in train.
        size: Side of each image in pixels.
        seed: Seed of the pixel noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 128 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    for i in range(count):
        split = "train" if i % 4 else "test"
        diagnosis = "NORMAL" if i % 3 == 0 else "PNEUMONIA"
        name = f"IM-{i:04d}-0001.jpeg" if diagnosis == "NORMAL" else f"person{i}_bacteria_{i}.jpeg"
        folder = os.path.join(root, split, diagnosis)
        os.makedirs(folder, exist_ok=True)
        pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)


def run(
    batch_size=64, steps=30, jpegs=512, jpeg_size=1024, image_size=128, limit=None, workdir=None
):
    """Times the pipelines, the decode limits and the student; returns one row per measurement.

    Args:
        batch_size: Batch size of pipelines and student.
        steps: Timed student train steps per image size.
        jpegs: Number of generated JPEGs.
        jpeg_size: Side of the generated JPEGs (Kermany X-rays are 1000-2500 px).
        image_size: Size the JPEGs are resized to.
        limit: At most this many PneumoniaMNIST images per split (None: all).
        workdir: Folder for the generated JPEGs (default: a temporary one).

    Returns:
        List of dicts with keys `pipeline`, `images_per_s`, `image_size`,
        `limit_full` and `limit_scaled` (decode-only images/s of the same
        files, None for in-memory data), `student_images_per_s` and `ratio`
        (pipeline / student; above 1 the pipeline keeps the student busy).
    """
    rows = []

    def add(name, rate, size, limits=None):
        rows.append(
            {
                "pipeline": name,
                "images_per_s": rate.wall,
                "images_per_cpu_s": rate.cpu,
                "image_size": size,
                "limit_full": limits["full"].cpu if limits else None,
                "limit_scaled": limits["scaled"].cpu if limits else None,
            }
        )

    npz = {"path": bundled_npz(), "batch_size": batch_size, "limit": limit}
    train, *_ = load_medmnist("pneumoniamnist", **npz)
    add("PneumoniaMNIST npz, 28 px", _epoch_rate(train), 28)
    train, *_ = load_medmnist("pneumoniamnist", augment="light", **npz)
    add("PneumoniaMNIST npz, 28 px, augment=light", _epoch_rate(train), 28)
    train, *_ = load_medmnist("pneumoniamnist", image_size=image_size, channels=3, **npz)
    resized = f"PneumoniaMNIST -> {image_size} px RGB"
    add(f"{resized}, epoch 1 (fill cache)", _epoch_rate(train), image_size)
    add(f"{resized}, epoch 2 (cached)", _epoch_rate(train), image_size)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        _add_jpeg_rows(add, tmp, jpegs, jpeg_size, image_size, batch_size)
    _add_student_rates(rows, image_size, batch_size, steps)
    return rows


def _add_jpeg_rows(add, tmp, jpegs, jpeg_size, image_size, batch_size):
    """Times the JPEG folder's decode limits, loading, first and cached epochs, augmentations."""
    write_jpeg_tree(tmp, jpegs, jpeg_size)
    paths, labels = xray_splits(tmp)["train"]
    headers, _ = images.inspect_images(paths, image_size=(image_size, image_size))
    limits = decode_limits(headers)
    decoded = f"JPEG {jpeg_size} px, decode only"
    add(f"{decoded}: TensorFlow, full size, every core", limits["full"], image_size)
    add(f"{decoded}: TensorFlow, DCT-scaled, every core", limits["scaled"], image_size)
    add(f"{decoded}: PIL, full size, 1 thread", limits["pil_full"], image_size)
    loaded = []
    _, wall, cpu = _measure(
        lambda: loaded.extend(load_xray_folder(tmp, image_size=image_size, batch_size=batch_size))
    )
    train = loaded[0]
    check = Rate(jpegs / wall, jpegs / cpu)
    add(f"JPEG folder {jpeg_size} px: load (TF decode check of every file)", check, image_size, limits)
    resized = f"JPEG folder -> {image_size} px"
    first = _interleaved(
        {
            "before": _first_epochs(headers, labels, image_size, batch_size, scaled=False),
            "after": _first_epochs(headers, labels, image_size, batch_size, scaled=True),
        }
    )
    add(f"{resized}, epoch 1, before: full-size decode", first["before"], image_size, limits)
    add(f"{resized}, epoch 1 (DCT-scaled decode, fill cache)", first["after"], image_size, limits)
    _count(train)
    # Cached epochs decode nothing: no decode limit beside them.
    add(f"{resized}, epoch 2 (cached)", _epoch_rate(train), image_size)
    augmented = {
        "before: 5 Keras layers in turn": _file_pipeline(
            headers, labels, image_size, batch_size, True, _keras_layers_xray()
        ),
        "one fused warp, batches in parallel": _file_pipeline(
            headers, labels, image_size, batch_size, True, "xray"
        ),
    }
    for ds in augmented.values():
        _count(ds)  # fills the cache
    rates = _interleaved({name: lambda ds=ds: _count(ds) for name, ds in augmented.items()})
    for name, rate in rates.items():
        add(f"{resized}, epoch 2, augment=xray, {name}", rate, image_size)


def _add_student_rates(rows, image_size, batch_size, steps):
    """Adds the student's train rate beside every row, and a row for on-device augmentation."""
    students = {}
    for row in rows:
        size = row["image_size"]
        if size not in students:
            students[size] = student_rates(size, 1, batch_size, steps, "xray" if size == image_size else None)
        row["student_images_per_s"] = students[size]["plain"].wall
        row["ratio"] = row["images_per_s"] / row["student_images_per_s"]
    plain, on_device = students[image_size]["plain"], students[image_size]["augmented"]
    rows.append(
        {
            "pipeline": f"student train step at {image_size} px with augment=xray inside "
            f"(augment_on=device): {plain.cpu / on_device.cpu - 1:+.0%} CPU time per step",
            "images_per_s": on_device.wall,
            "images_per_cpu_s": on_device.cpu,
            "image_size": image_size,
            "limit_full": None,
            "limit_scaled": None,
            "student_images_per_s": plain.wall,
            "ratio": on_device.wall / plain.wall,
        }
    )


def _number(value):
    return "" if value is None else f"{value:,.0f}"


def format_table(rows):
    """Renders `run` rows as a markdown table."""
    lines = [
        "| pipeline | images/s | images per CPU-s | decode-only limit per CPU-s, full / DCT-scaled "
        "| of scaled limit | student img/s | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        limits = fraction = ""
        if row["limit_scaled"]:
            limits = f"{_number(row['limit_full'])} / {_number(row['limit_scaled'])}"
            fraction = f"{row['images_per_cpu_s'] / row['limit_scaled']:.0%}"
        lines.append(
            f"| {row['pipeline']} | {_number(row['images_per_s'])} | {_number(row['images_per_cpu_s'])} "
            f"| {limits} | {fraction} | {_number(row['student_images_per_s'])} | {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point: prints the throughput table and optionally writes it."""
    parser = argparse.ArgumentParser(
        prog="python -m kdkeras.data.benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--steps", type=positive_int, default=30, help="timed student train steps per size")
    parser.add_argument("--jpegs", type=positive_int, default=512,
                        help=f"number of generated JPEGs (at least {MIN_JPEGS})")
    parser.add_argument("--jpeg-size", type=positive_int, default=1024, help="side of the generated JPEGs")
    parser.add_argument("--image-size", type=positive_int, default=128, help="size the pipelines resize to")
    parser.add_argument("--limit", type=positive_int, default=None, help="PneumoniaMNIST images per split")
    parser.add_argument("--out", type=output_file, default=None, help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    if args.jpegs < MIN_JPEGS:
        parser.error(f"--jpegs {args.jpegs}: pass at least {MIN_JPEGS}, so that train and test each hold both classes")
    rows = run(
        batch_size=args.batch_size,
        steps=args.steps,
        jpegs=args.jpegs,
        jpeg_size=args.jpeg_size,
        image_size=args.image_size,
        limit=args.limit,
    )
    params = student_cnn((28, 28, 1)).count_params()
    command = " ".join(["python -m kdkeras.data.benchmark", *(argv if argv is not None else sys.argv[1:])])
    heading = (
        f"kdkeras.data throughput on {os.cpu_count()} CPU core(s) ({platform.processor() or platform.machine()}), "
        f"TensorFlow {tf.__version__}, batch {args.batch_size}; student: {params:,} parameters; "
        f"{datetime.date.today().isoformat()}. images per CPU-s: per second of this process's CPU time, "
        "steady under other jobs' load. Decode-only limits: bare read+decode loops over the same files; "
        "ratio > 1: the pipeline outpaces the student's train step (wall clock)."
    )
    table = format_table(rows)
    print(heading)
    print(table)
    if args.out:
        write_text_atomic(args.out, f"`{command}`\n\n{heading}\n\n{table}\n")
    return rows


if __name__ == "__main__":
    main()
