"""Faults, bad input and safe loading: each one tried, with the error the user sees.

One table of faults (corrupt and inconsistent data, unsafe or broken model
files, config typos, a diverging loss), each asserting the error type and
message; then the CLI's answers to them and a real `kill -9` of
`python -m kdkeras distill` followed by a resume.
"""

import csv
import errno
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib

import keras
import numpy as np
import pytest
from PIL import Image

from kdkeras import cli, files, models
from kdkeras import config as config_lib
from kdkeras.data import DataError, dermoscopy, load_ham10000, load_image_folder, load_medmnist
from kdkeras.workflow import training
from kdkeras.workflow.callbacks import RunState, StopOnNaN, TrainingDivergedError

TINY = """
name = "tiny"
seed = 3

[data]
loader = "medmnist"
flag = "pneumoniamnist"
root = "@bundled"
batch_size = 16
limit = {limit}

[teacher]
model = "cnn_small"
options = {{ filters = [4, 8] }}
epochs = 1
monitor = "val_loss"

[student]
model = "cnn_small"
options = {{ filters = [4, 8] }}
epochs = 1
monitor = "val_loss"

[distill]
epochs = {epochs}
monitor = "val_loss"
"""


def tiny_config(tmp_path, limit=96, epochs=1):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(limit=limit, epochs=epochs))
    return str(path)


def small_npz(tmp_path, name="fault.npz", save=np.savez, **changes):
    """A PneumoniaMNIST-shaped npz (uint8 images, 2 classes) with `changes` applied."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None].astype(np.uint8)
    arrays.update(changes)
    save(tmp_path / name, **arrays)
    return str(tmp_path / name)


def load_npz(path):
    return load_medmnist("pneumoniamnist", path=path)


# --- The faults, one builder each: (tmp_path) -> a call that must fail. ---


def truncated_npz(tmp_path):
    path = tmp_path / "truncated.npz"
    data = open(small_npz(tmp_path), "rb").read()
    path.write_bytes(data[: len(data) // 2])  # a download cut in half
    return lambda: load_npz(str(path))


def corrupt_npz_member(tmp_path):
    path = small_npz(tmp_path, "flipped.npz")
    data = bytearray(open(path, "rb").read())
    start = data.index(b"\x93NUMPY", data.index(b"train_images")) + 200  # inside the pixels
    data[start : start + 16] = bytes(16)
    open(path, "wb").write(bytes(data))
    return lambda: load_npz(path)


def labels_out_of_range(tmp_path):
    path = small_npz(tmp_path, "labels.npz", train_labels=np.array([[0], [1], [5], [1]] * 2, np.uint8))
    return lambda: load_npz(path)


def nan_pixels_in_npz(tmp_path):
    images = np.zeros((8, 28, 28), np.float32)
    images[0, 0, :3] = np.nan
    path = small_npz(tmp_path, "nan.npz", train_images=images)
    return lambda: load_npz(path)


def pickled_npz(tmp_path):
    path = small_npz(tmp_path, "pickled.npz", val_labels=np.array([[0], [1]] * 2, dtype=object))
    return lambda: load_npz(path)


def md5_mismatch_download(tmp_path):
    source = small_npz(tmp_path, "mirror.npz")
    root = tmp_path / "root"

    def call():
        try:
            load_medmnist("pneumoniamnist", root=root, url="file://" + source)
        finally:
            assert os.listdir(root) == []  # the bad download was removed

    return call


def image_tree(tmp_path, write_bad):
    root = tmp_path / "tree"
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    write_bad(root / "malignant")
    return lambda: load_image_folder(root, strict=True)


def truncated_png(tmp_path):
    def write_bad(folder):
        data = open(folder / "0.png", "rb").read()
        (folder / "cut.png").write_bytes(data[: len(data) // 2])  # cut inside the pixel data

    return image_tree(tmp_path, write_bad)


def nan_float_tiff(tmp_path):
    def write_bad(folder):
        pixels = np.full((8, 8), np.nan, np.float32)
        Image.fromarray(pixels, mode="F").save(folder / "nan.tif")
        os.rename(folder / "nan.tif", folder / "nan.png")  # a misnamed float TIFF

    return image_tree(tmp_path, write_bad)


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def locked_cache(tmp_path, owner):
    """An image tree whose file cache holds a lockfile, as a killed (or running) filler leaves it."""
    image_tree(tmp_path, lambda folder: None)  # writes the tree; the cache is what is tested
    prefix = tmp_path / "cache" / "tree"
    prefix.parent.mkdir()
    (prefix.parent / "tree-train_0.lockfile").write_text("Created at: 0")
    if owner is not None:
        (prefix.parent / "tree-train.owner").write_text(str(owner))
    return lambda: load_image_folder(tmp_path / "tree", cache=str(prefix))


def cache_lock_without_owner(tmp_path):
    return locked_cache(tmp_path, None)


def cache_filled_by_running_process(tmp_path):
    return locked_cache(tmp_path, os.getppid())


def unknown_diagnosis(tmp_path):
    images = tmp_path / "ham"
    images.mkdir()
    rows = ["lesion_id,image_id,dx"]
    for i, dx in enumerate(["nv", "mel", "melanoma"]):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"ISIC_{i}.jpg")
        rows.append(f"HAM_{i},ISIC_{i},{dx}")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    return lambda: load_ham10000(tmp_path / "meta.csv", images)


def png_bytes(value=0):
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def archived_tree(tmp_path, archive_name, extra_member):
    """A class tree archived with one extra (hostile) member; loading it must extract nothing."""
    archive = tmp_path / "downloads" / archive_name
    archive.parent.mkdir()
    members = {f"{cls}/{i}.png": png_bytes(i) for cls in ("benign", "malignant") for i in range(3)}
    if archive_name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
            if extra_member:
                z.writestr(extra_member, b"overwritten")
    else:
        with tarfile.open(archive, "w:gz") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            t.addfile(extra_member)

    def call():
        try:
            load_image_folder(archive)
        finally:
            assert sorted(os.listdir(archive.parent)) == [archive_name]  # nothing extracted
            assert not (tmp_path / "evil.txt").exists()

    return call


def zip_slip(tmp_path):
    return archived_tree(tmp_path, "isic.zip", "../evil.txt")


def tar_absolute_member(tmp_path):
    info = tarfile.TarInfo(str(tmp_path / "evil.txt"))
    return archived_tree(tmp_path, "isic.tar.gz", info)


def tar_symlink(tmp_path):
    info = tarfile.TarInfo("benign/link.png")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return archived_tree(tmp_path, "isic.tgz", info)


def truncated_zip(tmp_path):
    call = archived_tree(tmp_path, "isic.zip", None)
    archive = tmp_path / "downloads" / "isic.zip"
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) - 30])  # the end of the central directory is gone
    return call


def lambda_model_file(tmp_path):
    path = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0)]).save(path)
    return lambda: files.load_model(path)


def truncated_model_file(tmp_path):
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    data = open(path, "rb").read()
    path.write_bytes(data[: len(data) // 2])
    return lambda: files.load_model(path)


def config_typo(tmp_path):
    path = tiny_config(tmp_path)
    text = open(path).read().replace("monitor = \"val_loss\"\n", "monitr = \"val_loss\"\n", 1)
    open(path, "w").write(text)
    return lambda: config_lib.load_config(path)


def alpha_out_of_range(tmp_path):
    config = config_lib.load_config(tiny_config(tmp_path))
    return lambda: config_lib.apply_overrides(config, {"distill.alpha": 1.5})


def teacher_of_another_label_map(tmp_path):
    config = config_lib.load_config(tiny_config(tmp_path))
    out = tmp_path / "runs" / "tiny"
    teacher = models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[4, 8])
    training.save_deployable(teacher, str(out / "teacher.keras"))
    # The metrics the teacher phase wrote: same class count, classes in another order.
    per_class = [{"name": "pneumonia"}, {"name": "normal"}]
    (out / "teacher_metrics.json").write_text(json.dumps({"per_class": per_class}))

    def call():
        try:
            training.run_phase(config, "distill", str(tmp_path / "runs"), verbose=0, log=lambda line: None)
        finally:
            assert not (out / "state").exists() and not (out / "distilled_history.csv").exists()

    return call


def nan_inputs_in_fit(tmp_path):
    x = np.ones((64, 4), np.float32)
    x[20] = np.nan  # in the second batch of 16
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.zeros(64, np.int32)
    return lambda: model.fit(x, y, batch_size=16, epochs=2, shuffle=False, callbacks=[StopOnNaN()], verbose=0)


# --- Hostile and unlucky inputs (issue 16). ---


def config_with(tmp_path, old, new):
    """The tiny config with one line changed, loaded: a call that must fail with a config error."""
    path = tiny_config(tmp_path)
    text = open(path).read()
    assert old in text
    open(path, "w").write(text.replace(old, new, 1))
    return lambda: config_lib.load_config(path)


def image_size_string(tmp_path):
    return config_with(tmp_path, "batch_size = 16", 'batch_size = 16\nimage_size = "32"')


def image_size_float(tmp_path):
    return config_with(tmp_path, "batch_size = 16", "batch_size = 16\nimage_size = 32.0")


def image_size_huge(tmp_path):
    return config_with(tmp_path, "batch_size = 16", "batch_size = 16\nimage_size = 100000")


def limit_float(tmp_path):
    return config_with(tmp_path, "limit = 96", "limit = 2.5")


def options_typo(tmp_path):
    return config_with(tmp_path, "options = { filters = [4, 8] }", "options = { filterz = [4, 8] }")


def negative_seed(tmp_path):
    return config_with(tmp_path, "seed = 3", "seed = -1")


def infinite_learning_rate(tmp_path):
    return config_with(tmp_path, "epochs = 1\nmonitor", "epochs = 1\nlearning_rate = inf\nmonitor")


def latin1_toml(tmp_path):
    path = tiny_config(tmp_path)
    data = open(path, "rb").read().replace(b'name = "tiny"', b'name = "tiny"\ndescription = "caf\xe9"')
    open(path, "wb").write(data)
    return lambda: config_lib.load_config(path)


def image_size_string_in_python(tmp_path):
    return lambda: load_medmnist("pneumoniamnist", path=small_npz(tmp_path), image_size="28")


def split_named_classes(tmp_path):
    root = tmp_path / "mri"
    for split in ("train_set", "test_set"):
        for cls in ("glioma", "meningioma"):
            (root / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / split / cls / "0.png")
    return lambda: load_image_folder(root)


def all_unreadable_class(tmp_path):
    def write_bad(folder):
        for png in folder.glob("*.png"):
            png.write_bytes(b"<html>not an image</html>")  # a login page saved as .png

    image_tree(tmp_path, write_bad)
    return lambda: load_image_folder(tmp_path / "tree")  # strict=False: skipping leaves no class


def png_header(width, height):
    """A tiny PNG whose header declares `width` x `height` pixels (a decompression bomb's header)."""
    data = bytearray(png_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def png_bomb(tmp_path):
    def write_bad(folder):
        (folder / "bomb.png").write_bytes(png_header(12000, 12000))

    return image_tree(tmp_path, write_bad)


def fifo_named_png(tmp_path):
    def write_bad(folder):
        os.mkfifo(folder / "x.png")

    call = image_tree(tmp_path, write_bad)
    fifo = tmp_path / "tree" / "malignant" / "x.png"

    def unblock():  # if the FIFO is ever opened for reading, free it rather than hang the suite
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    def guarded_call():
        timer = threading.Timer(60, unblock)
        timer.daemon = True
        timer.start()
        try:
            call()
        finally:
            timer.cancel()

    return guarded_call


def ham_csv(tmp_path, text_bytes):
    images = tmp_path / "ham"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"ISIC_{i}.jpg")
    (tmp_path / "meta.csv").write_bytes(text_bytes)
    return lambda: load_ham10000(tmp_path / "meta.csv", images)


def cp1252_csv(tmp_path):
    text = "lesion_id,image_id,dx,localization\nHAM_0,ISIC_0,nv,back\nHAM_1,ISIC_1,mel,t\xeate\n"
    return ham_csv(tmp_path, text.encode("cp1252"))


def oversized_csv_field(tmp_path):
    text = 'lesion_id,image_id,dx\nHAM_0,ISIC_0,nv\nHAM_1,ISIC_1,"' + "x" * 200_000 + '"\n'
    return ham_csv(tmp_path, text.encode())


def npz_member_not_npy(tmp_path):
    # train_images stored as raw pixel bytes, not a .npy file, as a hand-made archive may hold.
    path = small_npz(tmp_path, "raw.npz")
    rebuilt = tmp_path / "rawmember.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rebuilt, "w") as z:
        for name in source.namelist():
            if name == "train_images.npy":
                z.writestr("train_images", np.zeros((8, 28, 28), np.uint8).tobytes())
            else:
                z.writestr(name, source.read(name))
    return lambda: load_npz(str(rebuilt))


def zero_example_npz(tmp_path):
    path = small_npz(tmp_path, "empty.npz", val_images=np.zeros((0, 28, 28), np.uint8),
                     val_labels=np.zeros((0, 1), np.uint8))
    return lambda: load_npz(path)


def zip_bomb(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/zeros.png", bytes(2_000_000))  # 2 MB of zeros in about 2 kB

    def call():
        try:
            files.extract_archive(archive, max_bytes=1_000_000)
        finally:
            assert sorted(os.listdir(tmp_path)) == ["bomb.zip"]

    return call


FAULTS = [
    (truncated_npz, DataError, r"truncated\.npz is not a readable npz file .*download it again"),
    (corrupt_npz_member, DataError, r"flipped\.npz: key train_images is corrupt \(BadZipFile: Bad CRC-32"),
    (labels_out_of_range, DataError, r"labels\.npz: train_labels has values in \[0, 5\], outside \[0, 1\]"),
    (nan_pixels_in_npz, DataError, r"nan\.npz: train_images is float32 \(8, 28, 28\) with 3 NaN or infinite"),
    (pickled_npz, DataError, r"pickled\.npz: key val_labels cannot be read without pickle"),
    (md5_mismatch_download, DataError, r"does not have the MD5 .* nothing was saved at .*pneumoniamnist\.npz"),
    (truncated_png, DataError, r"1 unreadable image file\(s\) in .*tree: .*cut\.png \(TensorFlow cannot decode it: Invalid PNG data"),
    (nan_float_tiff, DataError, r"nan\.png \(format TIFF is not readable by TensorFlow"),
    (cache_lock_without_owner, DataError, r"cache/tree-train_0\.lockfile exists: a run filling the cache .*tree-train was killed"),
    (cache_filled_by_running_process, DataError, r"The cache .*tree-train is being filled by process \d+: wait"),
    (unknown_diagnosis, DataError, r"meta\.csv line 4: unknown diagnosis dx='melanoma' .* one of \['akiec'"),
    (zip_slip, DataError, r"isic\.zip: member '\.\./evil\.txt' would be written outside the extraction folder"),
    (tar_absolute_member, DataError, r"isic\.tar\.gz: member '/.*evil\.txt' would be written outside"),
    (tar_symlink, DataError, r"isic\.tgz: member 'benign/link\.png' is a link or a device file"),
    (truncated_zip, DataError, r"Archive .*isic\.zip is truncated or corrupt \(BadZipFile"),
    (lambda_model_file, files.UnsafeModelError, r"Refused to load .*lambda\.keras: .*Lambda .*--unsafe-load"),
    (truncated_model_file, files.ModelFileError, r"model\.keras is not a complete \.keras file"),
    (config_typo, config_lib.ConfigError, r"\[teacher\]: unknown key\(s\) 'monitr'\. Allowed keys: "),
    (alpha_out_of_range, config_lib.ConfigError, r"\[distill\] alpha = 1\.5 must be in \[0, 1\]"),
    (
        teacher_of_another_label_map,
        config_lib.ConfigError,
        r"teacher\.keras was trained on the classes \['pneumonia', 'normal'\] .* but pneumoniamnist has "
        r"\['normal', 'pneumonia'\]",
    ),
    (
        nan_inputs_in_fit,
        TrainingDivergedError,
        r"loss = nan at epoch 1 of 2, batch 2 of 4\. .*lower learning rate \(now 0\.01; try 0\.001\)",
    ),
    (image_size_string, config_lib.ConfigError, r"tiny\.toml: \[data\] image_size must be a positive int .* got '32'"),
    (image_size_float, config_lib.ConfigError, r"\[data\] image_size must be a positive int .* got 32\.0"),
    (image_size_huge, config_lib.ConfigError, r"\[data\] image_size = 100000 is over 8192 px, which would not fit"),
    (limit_float, config_lib.ConfigError, r"\[data\] limit = 2\.5 must be a whole number >= 1"),
    (options_typo, config_lib.ConfigError, r"\[teacher\] options = \{'filterz': \[4, 8\]\}: cnn_small does not take 'filterz'"),
    (negative_seed, config_lib.ConfigError, r"tiny\.toml: seed = -1 must be >= 0"),
    (infinite_learning_rate, config_lib.ConfigError, r"\[teacher\] learning_rate = inf must be > 0 and finite"),
    (latin1_toml, config_lib.ConfigError, r"tiny\.toml line 3: byte b'\\xe9' is not UTF-8, which TOML requires"),
    (image_size_string_in_python, DataError, r"image_size must be a positive int or a \(height, width\) pair of ints, got '28'"),
    (split_named_classes, DataError, r"mri has folder\(s\) \['test_set', 'train_set'\] that name splits, not classes"),
    (all_unreadable_class, DataError, r"Class 'malignant' of .*tree has no readable image: all 4 of its files"),
    (png_bomb, DataError, r"bomb\.png \(12000x12000 pixels is over PIL\.Image\.MAX_IMAGE_PIXELS"),
    (fifo_named_png, DataError, r"x\.png \(not a regular file but a FIFO"),
    (cp1252_csv, DataError, r"meta\.csv line 3: byte b'\\xea' is not UTF-8 text .* Save it as UTF-8 CSV"),
    (oversized_csv_field, DataError, r"meta\.csv line 3: field larger than field limit"),
    (npz_member_not_npy, DataError, r"rawmember\.npz: key train_images is not a NumPy array"),
    (zero_example_npz, DataError, r"empty\.npz: val_images holds no image"),
    (zip_bomb, files.UnsafeArchiveError, r"bomb\.zip: its members add up to 0\.00 GB, over the 0\.00 GB"),
]


@pytest.mark.parametrize("make_fault, error, message", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_fault_is_reported_with_file_field_and_fix(tmp_path, make_fault, error, message):
    call = make_fault(tmp_path)
    with pytest.raises(error, match=message):
        call()


def test_trusted_lambda_model_loads_with_unsafe_load(tmp_path):
    path = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 3.0)]).save(path)
    model = files.load_model(path, unsafe_load=True)
    assert model(np.array([[1.0, 2.0]], np.float32)).numpy().tolist() == [[3.0, 6.0]]


@pytest.mark.slow
def test_archived_folder_is_extracted_once_next_to_itself(tmp_path):
    archive = tmp_path / "isic.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for cls in ("benign", "malignant"):
            for i in range(10):
                z.writestr(f"isic/{cls}/{i}.png", png_bytes(20 * i))
    *_, info = load_image_folder(archive, val_fraction=0.2, test_fraction=0.2)
    assert info.name == "isic" and info.split_sizes == {"train": 12, "val": 4, "test": 4}
    assert sorted(os.listdir(tmp_path)) == ["isic", "isic.zip"]
    assert sorted(os.listdir(tmp_path / "isic" / "isic")) == ["benign", "malignant"]
    os.remove(tmp_path / "isic" / "isic" / "benign" / "0.png")  # a second load reuses the folder
    *_, info = load_image_folder(archive, val_fraction=0.2, test_fraction=0.2)
    assert sum(info.split_sizes.values()) == 19


@pytest.mark.slow
def test_cache_lockfile_of_a_killed_run_is_cleared(tmp_path):
    train, val, test, info = locked_cache(tmp_path, dead_pid())()
    assert sum(len(y) for ds in (train, val, test) for _, y in ds) == sum(info.split_sizes.values()) == 8
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.glob("*.lockfile")) == []
    assert sorted(p.name for p in cache.glob("*.index")) == ["tree-test.index", "tree-train.index", "tree-val.index"]
    assert (cache / "tree-train.owner").read_text() == str(os.getpid())


def test_nan_validation_loss_is_never_checkpointed(tmp_path):
    x = np.ones((32, 4), np.float32)
    x_val = np.full((8, 4), np.nan, np.float32)
    y = np.zeros(32, np.int32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    state = RunState(str(tmp_path / "state"), str(tmp_path / "history.csv"), monitor="val_loss")
    with pytest.raises(TrainingDivergedError, match=r"val_loss = nan at epoch 1 of 3, the end of the epoch"):
        model.fit(x, y, validation_data=(x_val, y[:8]), batch_size=16, epochs=3, verbose=0,
                  callbacks=[StopOnNaN(), state])
    assert not os.path.exists(tmp_path / "state") and not os.path.exists(tmp_path / "history.csv")


def test_weights_saved_from_memory_load_with_their_optimizer_state(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = np.random.default_rng(0).normal(size=(8, 3)).astype("float32"), np.arange(8) % 2

    def compiled():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    trained = compiled()
    trained.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "state" / "best.weights.h5"
    files.save_weights(trained, path)
    restored = compiled()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(path)
    for saved, loaded in zip(trained.weights + trained.optimizer.variables, restored.weights + restored.optimizer.variables):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)
    assert int(restored.optimizer.iterations.numpy()) == 2
    assert os.listdir(tmp_path / "state") == ["best.weights.h5"]
    with pytest.raises(ValueError, match="not built yet"):
        files.save_weights(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "x.weights.h5")


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
@pytest.mark.parametrize("writer", ["save_deployable", "save_weights"])
def test_model_files_on_a_full_disk_raise_one_clear_error(tmp_path, writer):
    # In this process, briefly: the soft file size limit can be raised back to the hard one.
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / ("m.keras" if writer == "save_deployable" else "m.weights.h5")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))
    try:
        with pytest.raises(OSError) as caught:
            if writer == "save_deployable":
                training.save_deployable(model, str(path))
            else:
                files.save_weights(model, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert caught.value.errno == errno.EFBIG
    assert str(caught.value) == (
        f"[Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)} while writing {path}; it was left as it was. "
        "Free space on that disk (or raise the file size limit, `ulimit -f`) and run the command again"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".tmp-{dead_pid()}-x1-student.keras"
    live = tmp_path / f".tmp-{os.getpid()}-x2-teacher.keras"
    other = tmp_path / ".tmp-notes.txt"
    for path in (stale, live, other):
        path.write_text("partial")
    assert files.remove_stale_temp_files(tmp_path) == [str(stale)]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted([live.name, other.name])
    with files.atomic_path(tmp_path / "out.txt") as tmp:
        assert os.path.basename(tmp).startswith(f".tmp-{os.getpid()}-")


@pytest.mark.slow
def test_cli_reports_faults_without_traceback(tmp_path, capsys):
    config = tiny_config(tmp_path)
    runs = str(tmp_path / "runs")
    broken = tmp_path / "broken.npz"
    data = open(small_npz(tmp_path), "rb").read()
    broken.write_bytes(data[: len(data) // 3])
    common = ["--config", config, "--runs-dir", runs, "--quiet"]
    assert cli.main(["student", *common, "--set", f'data.path="{broken}"']) == 1
    err = capsys.readouterr().err
    assert err.startswith("kdkeras: DataError: ") and "broken.npz is not a readable npz file" in err
    assert "Traceback" not in err

    # A diverging loss: a clear report, exit 1, and no artifact of the phase.
    flags = ["--learning-rate", "1e12", "--set", 'student.optimizer="sgd"']
    assert cli.main(["student", *common, *flags]) == 1
    err = capsys.readouterr().err
    assert "kdkeras: TrainingDivergedError: [student] Training diverged: loss = nan at epoch 1 of 1, batch" in err
    assert "Try a lower learning rate (now 1e+12; try 1e+11)" in err and "no model was saved" in err
    out = os.path.join(runs, "tiny")
    assert not any(os.path.exists(os.path.join(out, f"student{s}")) for s in (".keras", "_metrics.json"))

    # A model file holding a Lambda layer: refused, unless the user vouches for it.
    model_path = str(tmp_path / "lambda.keras")
    keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x / 255.0), keras.layers.Flatten(), keras.layers.Dense(2)
    ]).save(model_path)
    evaluate = ["evaluate", "--config", config, "--runs-dir", runs, "--model", model_path]
    assert cli.main(evaluate) == 1
    err = capsys.readouterr().err
    assert f"kdkeras: UnsafeModelError: Refused to load {model_path}" in err and "--unsafe-load" in err
    assert not os.path.exists(os.path.join(out, "lambda_metrics.json"))
    assert cli.main([*evaluate, "--unsafe-load"]) == 0
    assert os.path.exists(os.path.join(out, "lambda_metrics.json"))


def _epochs(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def train_teacher(config, path):
    # A few steps are enough for a teacher whose only job is to be distilled from.
    train, _, _, info = training.load_data(config_lib.load_config(config))
    teacher = models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=info.num_classes, filters=[4, 8])
    teacher.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(train.take(3), shuffle=False, verbose=0)
    training.save_deployable(teacher, str(path))


@pytest.mark.slow
def test_kill_9_mid_epoch_then_rerun_resumes(tmp_path):
    # Killed as soon as epoch 1 is checkpointed: 4 more epochs leave a wide window
    # even on a machine fast enough to train an epoch of 6 steps in milliseconds.
    epochs = 5
    config = tiny_config(tmp_path, limit=96, epochs=epochs)
    runs = tmp_path / "runs"
    out = runs / "tiny"
    state = out / "state" / "distilled"
    train_teacher(config, out / "teacher.keras")
    command = [sys.executable, "-m", "kdkeras", "distill", "--config", config, "--runs-dir", str(runs), "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (state / "epoch_0001.json").exists():
            assert first.poll() is None, open(tmp_path / "first.log").read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.01)
        assert first.poll() is None, "the run ended before it could be killed"
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    done = max(int(name[6:10]) for name in os.listdir(state) if name.endswith(".json"))
    assert 1 <= done < epochs and not (out / "distilled.keras").exists()
    # Whatever the kill interrupted, this is what an interrupted atomic write leaves.
    (out / f".tmp-{first.pid}-abc123-distilled_history.csv").write_text("epoch,loss\n1,0.")

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"[distilled] resuming after epoch {done} of {epochs}" in second.stdout
    assert second.stdout.count("Epoch ") == epochs - done
    assert _epochs(out / "distilled_history.csv") == list(range(1, epochs + 1))
    assert (out / "distilled.keras").exists() and not (out / "state").exists()
    assert [str(p) for p in out.rglob(".tmp-*")] == []



def _limit_file_size(limit):
    # A full disk without root: past RLIMIT_FSIZE a write fails with EFBIG (SIGXFSZ,
    # which would kill the process first, is ignored), as on a full disk with ENOSPC.
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_full_disk_gives_one_line_and_exit_1_not_a_segfault(tmp_path):
    # HDF5 segfaulted (exit 139) closing a checkpoint whose write had failed; 30 kB fit
    # the config and TensorBoard logs, not the first checkpoint (about 78 kB).
    config = tiny_config(tmp_path)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "kdkeras", "teacher", "--config", config, "--runs-dir", str(runs), "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    full = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(30_000))
    assert full.returncode == 1, full.stderr[-3000:]
    best = runs / "tiny" / "state" / "teacher" / "best.weights.h5"
    assert full.stderr.strip().splitlines()[-1] == (
        f"kdkeras: OSError: [Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)} while writing {best}; it was "
        "left as it was. Free space on that disk (or raise the file size limit, `ulimit -f`) and run the "
        "command again"
    )
    assert "Traceback" not in full.stderr and "h5py" not in full.stderr
    out = runs / "tiny"
    assert [str(p) for p in out.rglob(".tmp-*")] == [] and not best.exists()
    assert not (out / "teacher.keras").exists() and not (out / "teacher_metrics.json").exists()


# --- Unlucky inputs that now work, and README claims of the table. ---


@pytest.mark.slow
def test_kaggle_training_testing_folders_are_splits(tmp_path):
    root = tmp_path / "brain_mri"
    for split, count in (("Training", 6), ("Testing", 3)):
        for cls in ("glioma", "notumor"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(root / split / cls / f"{i}.png")
    *_, info = load_image_folder(root, val_fraction=0.34)
    assert info.class_names == ["glioma", "notumor"]
    assert info.split_sizes == {"train": 8, "val": 4, "test": 6}  # test is Testing/, whole


def test_utf16_csv_is_read(tmp_path):
    text = "lesion_id,image_id,dx\n" + "".join(f"HAM_{i},ISIC_{i},{dx}\n" for i, dx in enumerate(["nv", "mel", "nv"]))
    ham_csv(tmp_path, text.encode("utf-16"))  # Excel's "Unicode text": BOM-marked UTF-16
    paths, labels, lesions = dermoscopy.read_ham10000_metadata(tmp_path / "meta.csv", tmp_path / "ham")
    assert [os.path.basename(p) for p in paths] == ["ISIC_0.jpg", "ISIC_1.jpg", "ISIC_2.jpg"]
    assert labels.tolist() == [dermoscopy.CLASS_NAMES.index(dx) for dx in ("nv", "mel", "nv")]
    assert lesions == ["HAM_0", "HAM_1", "HAM_2"]


def write_zip(path, classes, count=3):
    with zipfile.ZipFile(path, "w") as z:
        for cls in classes:
            for i in range(count):
                z.writestr(f"{cls}/{i}.png", png_bytes(40 * i))


@pytest.mark.slow
def test_new_archive_version_is_extracted_again(tmp_path):
    archive = tmp_path / "data.zip"
    write_zip(archive, ["benign", "malignant"])
    *_, info = load_image_folder(archive, val_fraction=0.34, test_fraction=0.34)
    assert info.class_names == ["benign", "malignant"]
    write_zip(archive, ["benign", "malignant", "nevus"])  # the archive, replaced by a new version
    os.utime(archive, ns=(time.time_ns(), time.time_ns() + 10**9))
    *_, info = load_image_folder(archive, val_fraction=0.34, test_fraction=0.34)
    assert info.class_names == ["benign", "malignant", "nevus"]
    # Another archive of the same name extracts its own content, not the zip's.
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as t:
        for cls in ("a", "b"):
            for i in range(3):
                data = png_bytes(i)
                member = tarfile.TarInfo(f"{cls}/{i}.png")
                member.size = len(data)
                t.addfile(member, io.BytesIO(data))
    *_, info = load_image_folder(tmp_path / "data.tar.gz", val_fraction=0.34, test_fraction=0.34)
    assert info.class_names == ["a", "b"]
    assert sorted(os.listdir(tmp_path)) == ["data", "data.tar.gz", "data.zip"]  # no stray temp folder


@pytest.mark.slow
def test_folder_extracted_by_hand_is_left_alone(tmp_path):
    archive = tmp_path / "data.zip"
    write_zip(archive, ["benign", "malignant"])
    for cls in ("x", "y"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / cls / f"{i}.png").write_bytes(png_bytes(i))
    *_, info = load_image_folder(archive, val_fraction=0.34, test_fraction=0.34)
    assert info.class_names == ["x", "y"]


def test_archive_device_member_refuses_the_whole_archive(tmp_path):
    info = tarfile.TarInfo("benign/null.png")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    call = archived_tree(tmp_path, "isic.tar", info)
    with pytest.raises(DataError, match=r"isic\.tar: member 'benign/null\.png' is a link or a device file"):
        call()


def test_extraction_failing_midway_leaves_no_folder(tmp_path):
    archive = tmp_path / "isic.zip"
    write_zip(archive, ["benign", "malignant"])
    data = bytearray(archive.read_bytes())
    last = data.index(b"malignant/2.png") + len("malignant/2.png")  # the last member's local data
    data[last : last + 8] = bytes(8)  # its stored bytes no longer match their CRC
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"isic\.zip is truncated or corrupt \(BadZipFile: Bad CRC-32"):
        load_image_folder(archive)
    assert sorted(os.listdir(tmp_path)) == ["isic.zip"]  # the partial extraction was a temp folder


@pytest.mark.slow
def test_stale_temp_files_are_removed_by_the_next_download(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    stale = root / f".tmp-{dead_pid()}-abc-pneumoniamnist.npz"
    stale.write_bytes(b"half a download")
    source = small_npz(tmp_path, "mirror.npz")
    with pytest.raises(DataError, match="does not have the MD5"):
        load_medmnist("pneumoniamnist", root=root, url="file://" + source)
    assert os.listdir(root) == []


@pytest.mark.slow
def test_test_split_missing_a_class_still_ends_the_phase(tmp_path, capsys):
    npz = small_npz(tmp_path, "oneclass.npz", test_labels=np.zeros((4, 1), np.uint8))
    config = tiny_config(tmp_path)
    runs = str(tmp_path / "runs")
    args = ["student", "--config", config, "--runs-dir", runs, "--quiet", "--set", f'data.path="{npz}"']
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "[student] test: ACC " in out and "AUC n/a (a class is missing from the test split)" in out
    metrics = json.load(open(os.path.join(runs, "tiny", "student_metrics.json")))
    assert metrics["auc"] is None and metrics["n"] == 4


class PoisonWeightsAtEpoch(keras.callbacks.Callback):
    """Sets the model's kernel to NaN when epoch `epoch` (0-based) begins: a divergence there."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.layers[0].kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


@pytest.mark.slow
def test_divergence_keeps_the_last_good_checkpoint_and_a_rerun_resumes_from_it(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def model_and_state():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        state = RunState(str(tmp_path / "state"), str(tmp_path / "history.csv"), monitor="val_loss")
        return model, state

    model, state = model_and_state()
    callbacks = [StopOnNaN(), state]
    fit = dict(validation_data=(x, y), batch_size=16, epochs=4, verbose=0)
    kernels = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: kernels.append(model.layers[0].kernel.numpy()))
    with pytest.raises(TrainingDivergedError, match=r"loss = nan at epoch 3 of 4, batch 1 of 2"):
        model.fit(x, y, callbacks=[PoisonWeightsAtEpoch(2), record, *callbacks], **fit)
    checkpoints = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert checkpoints == ["best.weights.h5", "epoch_0002.json", "epoch_0002.weights.h5"]

    # The rerun (without the fault) starts after epoch 2, from those finite weights.
    model, state = model_and_state()
    start = state.restore(model)
    assert start == 2
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernels[1])  # the end of epoch 2
    history = model.fit(x, y, initial_epoch=start, callbacks=[StopOnNaN(), state], **fit).history
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert _epochs(tmp_path / "history.csv") == [1, 2, 3, 4]


@pytest.mark.slow
def test_distill_reads_a_lambda_teacher_only_with_unsafe_load(tmp_path, capsys):
    config = tiny_config(tmp_path, limit=32)
    runs = tmp_path / "runs"
    teacher = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x / 255.0), keras.layers.Flatten(), keras.layers.Dense(2)
    ])  # fmt: skip
    (runs / "tiny").mkdir(parents=True)
    teacher.save(runs / "tiny" / "teacher.keras")
    distill = ["distill", "--config", config, "--runs-dir", str(runs), "--quiet"]
    assert cli.main(distill) == 1
    err = capsys.readouterr().err
    assert f"kdkeras: UnsafeModelError: Refused to load {runs / 'tiny' / 'teacher.keras'}" in err
    assert not (runs / "tiny" / "distilled.keras").exists() and not (runs / "tiny" / "state").exists()
    assert cli.main([*distill, "--unsafe-load"]) == 0
    assert (runs / "tiny" / "distilled.keras").exists()
