"""Faults, bad input and safe loading: each one tried, with the error the user sees.

One table of faults (corrupt and inconsistent data, unsafe or broken model
files, config typos, a diverging loss), each asserting the error type and
message; then the CLI's answers to them and a real `kill -9` of
`python -m kdkeras distill` followed by a resume.
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from kdkeras import cli, config as config_lib, files, models, training
from kdkeras.callbacks import RunState, StopOnNaN, TrainingDivergedError
from kdkeras.data import DataError, load_ham10000, load_image_folder, load_medmnist

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


def test_kill_9_mid_epoch_then_rerun_resumes(tmp_path):
    epochs = 3
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
            time.sleep(0.02)
        time.sleep(0.1)  # into the next epoch's batches
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
    assert _epochs(out / "distilled_history.csv") == [1, 2, 3]
    assert (out / "distilled.keras").exists() and not (out / "state").exists()
    assert [str(p) for p in out.rglob(".tmp-*")] == []
