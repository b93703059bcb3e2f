"""The throughput benchmark runs end to end and prints its table (no speed asserts)."""

import os
import re

import pytest

from kdkeras.data import benchmark


@pytest.mark.slow
def test_benchmark_rows_and_table(capsys, tmp_path):
    out = tmp_path / "bench" / "pipeline.md"
    argv = ["--batch-size", "16", "--steps", "2", "--jpegs", "12", "--jpeg-size", "64",
            "--image-size", "32", "--limit", "64", "--out", str(out)]  # fmt: skip
    rows = benchmark.main(argv)
    names = [row["pipeline"] for row in rows]
    assert names[:-1] == [
        "PneumoniaMNIST npz, 28 px",
        "PneumoniaMNIST npz, 28 px, augment=light",
        "PneumoniaMNIST -> 32 px RGB, epoch 1 (fill cache)",
        "PneumoniaMNIST -> 32 px RGB, epoch 2 (cached)",
        "JPEG 64 px, decode only: TensorFlow, full size, every core",
        "JPEG 64 px, decode only: TensorFlow, DCT-scaled, every core",
        "JPEG 64 px, decode only: PIL, full size, 1 thread",
        "JPEG folder 64 px: load (TF decode check of every file)",
        "JPEG folder -> 32 px, epoch 1, before: full-size decode",
        "JPEG folder -> 32 px, epoch 1 (DCT-scaled decode, fill cache)",
        "JPEG folder -> 32 px, epoch 2 (cached)",
        "JPEG folder -> 32 px, epoch 2, augment=xray, before: 5 Keras layers in turn",
        "JPEG folder -> 32 px, epoch 2, augment=xray, one fused warp, batches in parallel",
    ]
    assert re.fullmatch(
        r"student train step at 32 px with augment=xray inside \(augment_on=device\): [+-]\d+% CPU time per step",
        names[-1],
    )
    for row in rows:
        assert row["images_per_s"] > 0 and row["images_per_cpu_s"] > 0 and row["student_images_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["images_per_s"] / row["student_images_per_s"])
    with_limits = [row for row in rows if row["limit_scaled"] is not None]
    assert [row["pipeline"] for row in with_limits] == names[7:10]
    assert rows[4]["images_per_cpu_s"] == with_limits[0]["limit_full"]
    assert rows[5]["images_per_cpu_s"] == with_limits[0]["limit_scaled"]
    assert {row["image_size"] for row in rows} == {28, 32}
    printed = capsys.readouterr().out.splitlines()
    assert "student: 5,954 parameters" in printed[0]
    assert printed[1].startswith("| pipeline | images/s | images per CPU-s | decode-only limit per CPU-s,")
    assert len(printed) == 3 + len(rows)
    written = out.read_text().splitlines()
    assert written[0] == "`python -m kdkeras.data.benchmark " + " ".join(argv) + "`"
    assert written[4:] == printed[1:]
    fraction = rows[9]["images_per_cpu_s"] / rows[9]["limit_scaled"]
    assert f"| {fraction:.0%} |" in printed[3 + 9]


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
