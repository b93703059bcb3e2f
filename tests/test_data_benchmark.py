"""The throughput benchmark runs end to end and prints its table (no speed asserts)."""

import os

from kdkeras.data import benchmark


def test_benchmark_rows_and_table(capsys, tmp_path):
    rows = benchmark.main(
        ["--batch-size", "16", "--steps", "2", "--jpegs", "12", "--jpeg-size", "64",
         "--image-size", "32", "--limit", "64"]
    )
    names = [row["pipeline"] for row in rows]
    assert names == [
        "PneumoniaMNIST npz, 28 px",
        "PneumoniaMNIST npz, 28 px, augment=light",
        "PneumoniaMNIST -> 32 px RGB, epoch 1 (fill cache)",
        "PneumoniaMNIST -> 32 px RGB, epoch 2 (cached)",
        "JPEG folder 64 px: load (PIL check of every file)",
        "JPEG folder -> 32 px, epoch 1 (decode, fill cache)",
        "JPEG folder -> 32 px, epoch 2 (cached)",
        "JPEG folder -> 32 px, epoch 2, augment=xray",
    ]
    for row in rows:
        assert row["images_per_s"] > 0 and row["student_images_per_s"] > 0
        assert row["ratio"] == row["images_per_s"] / row["student_images_per_s"]
    assert {row["image_size"] for row in rows} == {28, 32}
    printed = capsys.readouterr().out.splitlines()
    assert "student: 5,954 parameters" in printed[0]
    assert printed[1].split() == ["pipeline", "images/s", "student", "img/s", "ratio"]
    assert len(printed) == 3 + len(rows)


def test_jpeg_tree_has_kermany_layout(tmp_path):
    benchmark.write_jpeg_tree(tmp_path, count=8, size=20)
    found = sorted(
        os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs
    )
    assert found == [
        "test/NORMAL/IM-0000-0001.jpeg",
        "test/PNEUMONIA/person4_bacteria_4.jpeg",
        "train/NORMAL/IM-0003-0001.jpeg",
        "train/NORMAL/IM-0006-0001.jpeg",
        "train/PNEUMONIA/person1_bacteria_1.jpeg",
        "train/PNEUMONIA/person2_bacteria_2.jpeg",
        "train/PNEUMONIA/person5_bacteria_5.jpeg",
        "train/PNEUMONIA/person7_bacteria_7.jpeg",
    ]
