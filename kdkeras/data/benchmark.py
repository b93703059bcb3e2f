"""Input pipeline throughput against the training speed of a small student.

A pipeline is fast enough when it yields images faster than the model
consumes them. This benchmark times each loader of `kdkeras.data` over full
epochs (first epoch: decode and fill the cache; second: from the cache) on
the bundled PneumoniaMNIST and on a generated Kermany-style folder of JPEGs,
and times the train step of a small CNN student at the same image size on
the same machine.

Run: `python -m kdkeras.data.benchmark` (about a minute on 2 CPU cores);
`--help` lists the sizes to change.
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from kdkeras.data.medmnist import bundled_npz, load_medmnist
from kdkeras.data.xray import load_xray_folder


def _epoch_rate(ds):
    start = time.perf_counter()
    count = 0
    for images, _ in ds:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def student_cnn(input_shape, num_classes=2):
    """The benchmark's student: 8-16-32 conv blocks and global pooling (about 6k parameters)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for filters in (8, 16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="benchmark_student")


def student_rate(image_size, channels, batch_size, steps):
    """Training images per second of `student_cnn` on in-memory batches."""
    model = student_cnn((image_size, image_size, channels))
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, channels)).astype("float32")
    y = rng.integers(0, 2, batch_size).astype("int32")
    batches = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(batches, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


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
    """Times the pipelines and the student; returns one row per measurement.

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
        `student_images_per_s` and `ratio` (pipeline / student; above 1 the
        pipeline keeps the student busy).
    """
    rows = []

    def add(name, rate, size):
        rows.append({"pipeline": name, "images_per_s": rate, "image_size": size})

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
        write_jpeg_tree(tmp, jpegs, jpeg_size)
        start = time.perf_counter()
        train, *_ = load_xray_folder(tmp, image_size=image_size, batch_size=batch_size)
        scan = time.perf_counter() - start
        add(f"JPEG folder {jpeg_size} px: load (PIL check of every file)", jpegs / scan, image_size)
        resized = f"JPEG folder -> {image_size} px"
        add(f"{resized}, epoch 1 (decode, fill cache)", _epoch_rate(train), image_size)
        add(f"{resized}, epoch 2 (cached)", _epoch_rate(train), image_size)
        train, *_ = load_xray_folder(
            tmp, image_size=image_size, batch_size=batch_size, augment="xray"
        )
        _epoch_rate(train)
        add(f"{resized}, epoch 2, augment=xray", _epoch_rate(train), image_size)
    students = {}
    for row in rows:
        size = row["image_size"]
        if size not in students:
            students[size] = student_rate(size, 1, batch_size, steps)
        row["student_images_per_s"] = students[size]
        row["ratio"] = row["images_per_s"] / students[size]
    return rows


def format_table(rows):
    """Renders `run` rows as a fixed-width text table."""
    header = f"{'pipeline':<66} {'images/s':>10} {'student img/s':>14} {'ratio':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['pipeline']:<66} {row['images_per_s']:>10.0f} "
            f"{row['student_images_per_s']:>14.0f} {row['ratio']:>7.2f}"
        )
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point: prints the throughput table."""
    parser = argparse.ArgumentParser(
        prog="python -m kdkeras.data.benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed student train steps per size")
    parser.add_argument("--jpegs", type=int, default=512, help="number of generated JPEGs")
    parser.add_argument("--jpeg-size", type=int, default=1024, help="side of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=128, help="size the pipelines resize to")
    parser.add_argument("--limit", type=int, default=None, help="PneumoniaMNIST images per split")
    args = parser.parse_args(argv)
    rows = run(
        batch_size=args.batch_size,
        steps=args.steps,
        jpegs=args.jpegs,
        jpeg_size=args.jpeg_size,
        image_size=args.image_size,
        limit=args.limit,
    )
    params = student_cnn((28, 28, 1)).count_params()
    print(
        f"kdkeras.data throughput on {os.cpu_count()} CPU core(s), TensorFlow {tf.__version__}, "
        f"batch {args.batch_size}; student: {params:,} parameters. "
        "ratio > 1: the pipeline outpaces the student's train step."
    )
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
