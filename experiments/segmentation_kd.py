"""Dense distillation on a small segmentation task: response KD against feature KD (seed 001).

Trains a fully convolutional teacher, the same small student alone, and the
student distilled two ways: per-pixel soft targets (`KnowledgeDistillation`
on `(batch, H, W, classes)` logits, averaged over pixels, not summed) and
per-pixel soft targets plus a FitNets hint on the encoder output. Prints and
writes a table of mean IoU, pixel accuracy and parameters.

Data:
- `--data oxford_iiit_pet`: the Oxford-IIIT Pet trimaps from TensorFlow
  Datasets (pet / background / outline, 3 classes), the segmentation set of
  the Keras tutorials; downloaded on first use.
- `--data synthetic` (default, offline): gray images of noisy disks and
  squares with their 3-class masks (background, disk, square). A stand-in to
  check the dense pipeline, not a medical result.

Usage:

```
python experiments/segmentation_kd.py --data synthetic --epochs 8 --out runs/segmentation
```
"""

import argparse
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import kdkeras
from kdkeras.distillation.features import FeatureMatch
from kdkeras.files import write_text_atomic

NUM_CLASSES = 3


def synthetic_shapes(count, size=32, seed=0):
    """Noisy gray images of disks (class 1) and squares (class 2) with their masks.

    Args:
        count: Number of images.
        size: Side in pixels.
        seed: NumPy seed.

    Returns:
        `(images, masks)`: float32 `(count, size, size, 1)` in [0, 255] and
        int32 `(count, size, size)`.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images = rng.normal(60.0, 25.0, size=(count, size, size)).astype("float32")
    masks = np.zeros((count, size, size), "int32")
    for image, mask in zip(images, masks):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(size // 8, size - size // 8, size=2)
            radius = rng.integers(2, max(3, size // 4))
            if rng.random() < 0.5:
                shape = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
                mask[shape] = 1
            else:
                shape = (abs(rows - cy) <= radius) & (abs(cols - cx) <= radius)
                mask[shape] = 2
            image[shape] = rng.normal(170.0, 25.0)
    return np.clip(images, 0, 255)[..., None], masks


def oxford_pets(size, limit=None):
    """Oxford-IIIT Pet images and trimaps from TFDS, resized to `size`.

    Returns:
        `((x_train, y_train), (x_test, y_test))` like `synthetic_shapes`, with
        RGB images.
    """
    import tensorflow_datasets as tfds  # slow import; only this data source needs it

    def convert(example):
        image = tf.image.resize(tf.cast(example["image"], "float32"), (size, size))
        mask = tf.image.resize(example["segmentation_mask"], (size, size), method="nearest")
        return image, tf.cast(mask[..., 0], "int32") - 1  # trimap values 1, 2, 3

    try:
        splits = tfds.load("oxford_iiit_pet", split=["train", "test"])
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        raise SystemExit(
            f"Could not load oxford_iiit_pet from TFDS ({error}). It downloads about 800 MB on "
            "first use: run once with internet, or use --data synthetic offline."
        ) from None
    arrays = []
    for split in splits:
        if limit:
            split = split.take(limit)
        images, masks = zip(*(tuple(t.numpy() for t in convert(e)) for e in split))
        arrays.append((np.stack(images), np.stack(masks)))
    return arrays[0], arrays[1]


def fcn(name, widths, input_shape, num_classes=NUM_CLASSES, seed=0):
    """A small encoder-decoder that outputs per-pixel logits.

    The encoder halves the resolution twice; its last activation is named
    `encoder_out` so feature distillation can refer to it.
    """
    initializer = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(input_shape, name="image")
    h = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    skips = []
    for i, width in enumerate(widths):
        h = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=initializer, name=f"enc{i}_conv")(h)
        h = keras.layers.BatchNormalization(name=f"enc{i}_bn")(h)
        h = keras.layers.ReLU(name="encoder_out" if i == len(widths) - 1 else f"enc{i}_relu")(h)
        if i < len(widths) - 1:
            skips.append(h)
            h = keras.layers.MaxPooling2D(name=f"enc{i}_pool")(h)
    for i, skip in reversed(list(enumerate(skips))):
        h = keras.layers.UpSampling2D(name=f"dec{i}_up")(h)
        h = keras.layers.Concatenate(name=f"dec{i}_concat")([h, skip])
        h = keras.layers.Conv2D(widths[i], 3, padding="same", activation="relu",
                                kernel_initializer=initializer, name=f"dec{i}_conv")(h)
    outputs = keras.layers.Conv2D(num_classes, 1, name="logits", dtype="float32")(h)
    return keras.Model(inputs, outputs, name=name)


def segmentation_metrics():
    return [
        keras.metrics.MeanIoU(NUM_CLASSES, sparse_y_pred=False, name="miou"),
        keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
    ]


def run(data="synthetic", epochs=8, count=1200, size=32, batch_size=32, seed=0, out="runs/segmentation", verbose=0):
    """Trains the four models and writes `results.md` and `results.json` to `out`.

    Returns:
        The result rows, one dict per model.
    """
    keras.utils.set_random_seed(seed)
    if data == "synthetic":
        (x_train, y_train), (x_test, y_test) = synthetic_shapes(count, size, seed), synthetic_shapes(count // 4, size, seed + 1)
    else:
        (x_train, y_train), (x_test, y_test) = oxford_pets(size, limit=count)
    input_shape = x_train.shape[1:]
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=seed).batch(batch_size)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def report(model, label, extra=""):
        model.compile(loss=loss, metrics=segmentation_metrics())
        scores = model.evaluate(test, return_dict=True, verbose=0)
        row = {"model": label, "params": model.count_params(), "miou": round(scores["miou"], 4),
               "pixel_accuracy": round(scores["pixel_accuracy"], 4), "setup": extra}
        print(f"{label:<28} params {row['params']:>8,}  mIoU {row['miou']:.4f}  pixel acc {row['pixel_accuracy']:.4f}")
        return row

    teacher = fcn("teacher", [32, 64, 128], input_shape, seed=seed)
    teacher.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=segmentation_metrics())
    teacher.fit(train, epochs=epochs, verbose=verbose)
    rows = [report(teacher, "teacher")]

    student_widths = [8, 16, 32]
    alone = fcn("student_alone", student_widths, input_shape, seed=seed)
    alone.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=segmentation_metrics())
    alone.fit(train, epochs=epochs, verbose=verbose)
    rows.append(report(alone, "student alone"))

    setups = {
        "response KD": dict(features=None),
        "response + feature KD": dict(features=[FeatureMatch("encoder_out", "encoder_out", "hint")]),
    }
    for label, kwargs in setups.items():
        student = fcn("student", student_widths, input_shape, seed=seed)
        distiller = kdkeras.Distiller(student, teacher, **kwargs)
        distiller.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=segmentation_metrics(),
                          alpha=0.3, temperature=4.0)
        distiller.fit(train, epochs=epochs, verbose=verbose)
        rows.append(report(student, label, "T=4, alpha=0.3" + (", hint on encoder_out" if kwargs["features"] else "")))

    os.makedirs(out, exist_ok=True)
    lines = [
        f"# Dense distillation, {data} data ({len(x_train)} train / {len(x_test)} test images, "
        f"{size} px, {epochs} epochs)",
        "",
        "| model | params | mIoU | pixel accuracy | setup |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {r['model']} | {r['params']:,} | {r['miou']:.4f} | {r['pixel_accuracy']:.4f} | {r['setup']} |" for r in rows),
    ]
    write_text_atomic(os.path.join(out, "results.md"), "\n".join(lines) + "\n")
    write_text_atomic(os.path.join(out, "results.json"), json.dumps(rows, indent=2) + "\n")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", choices=("synthetic", "oxford_iiit_pet"), default="synthetic",
        help="synthetic: generated disks and squares, offline (default); oxford_iiit_pet: the pet "
        "trimaps from TensorFlow Datasets, downloaded on first use",
    )
    parser.add_argument("--epochs", type=int, default=8, help="epochs of every model (default 8)")
    parser.add_argument(
        "--count", type=int, default=1200, help="training images (synthetic) or a cap on them (pets) (default 1200)"
    )
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per training step (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights (default 0)")
    parser.add_argument(
        "--out", default="runs/segmentation", help="folder of the table and metrics (default runs/segmentation)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.count < 8 or args.size < 8 or args.size % 4:
        parser.error("--epochs must be >= 1, --count >= 8 and --size a multiple of 4, >= 8.")
    run(args.data, args.epochs, args.count, args.size, args.batch_size, args.seed, args.out, verbose="auto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
