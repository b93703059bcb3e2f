"""The capacity-gap benchmark's rule, statistics and outputs, on fabricated per-seed scores."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from kdkeras import stats
from kdkeras.bench import gap, gap_report

ARMS = gap.ARMS[:1] + gap.ARMS[2:]  # micro (28 px) and lowres (16 px)
NAMES = ["kd", "dist"]


def scores(ce, acc, auc, params=13178):
    return {"validation": {"cross_entropy": ce, "auc": 0.996}, "test": {"acc": acc, "auc": auc}, "params": params}


def per_seed(gains, seeds=5):
    """`gains[method]` = test AUC added to the student alone's in every seed (with a little noise)."""
    rng = np.random.default_rng(0)
    rows = {}
    for seed in range(seeds):
        row = {"teacher": {"validation": {"cross_entropy": 0.1}, "test": {"acc": 0.92, "auc": 0.970}}}
        for arm in ARMS:
            alone = 0.95 + rng.normal(0, 0.004)
            row[arm.name] = {"alone": scores(0.30, 0.88, alone)}
            for i, name in enumerate(NAMES):
                row[arm.name][name] = scores(0.20 + 0.05 * i, 0.88 + gains[name] + rng.normal(0, 1e-3),
                                             alone + gains[name] + rng.normal(0, 1e-3))
        rows[str(seed)] = row
    return rows


def result(rows):
    choice = {arm.name: gap.choose({s: r[arm.name] for s, r in rows.items()}, NAMES) for arm in ARMS}
    return {
        "seeds": [int(s) for s in rows], "arms": [vars(a) for a in ARMS], "methods": [], "per_seed": rows,
        "models": {"teacher": {"architecture": "resnet18", "params": 702546}},
        "choice": choice, "comparisons": gap.compare(rows, ARMS, NAMES, choice),
        "environment": {"cpus": 2, "tensorflow": "2.21.0", "date": "2026-12-07T04:00:00+00:00"},
    }


def test_the_method_of_lowest_validation_cross_entropy_is_chosen_whatever_the_test_says():
    rows = per_seed({"kd": -0.02, "dist": +0.02})  # kd is worse on test but better on validation
    choice = gap.choose({s: r["micro"] for s, r in rows.items()}, NAMES)
    assert choice["chosen"] == "kd"
    assert choice["means"]["kd"] == pytest.approx(0.20)
    assert "cross-entropy" in choice["reason"]


def test_the_chosen_verdicts_are_holm_adjusted_over_every_arm_and_metric():
    out = result(per_seed({"kd": +0.02, "dist": 0.0}))
    family = [out["comparisons"][arm.name]["chosen"][m]["gain"] for arm in ARMS for m in ("acc", "auc")]
    raw = [g["p"] for g in family]
    assert len(family) == 4 and all(0 < p < 0.05 for p in raw)
    assert [g["p_holm"] for g in family] == pytest.approx(stats.holm(raw))
    assert all(g["verdict"] == "distilled better" for g in family)


def test_the_same_gain_in_every_seed_is_not_evidence():
    rows = per_seed({"kd": 0.02, "dist": 0.0})
    for row in rows.values():
        for arm in ARMS:
            row[arm.name]["kd"]["test"]["acc"] = row[arm.name]["alone"]["test"]["acc"] + 0.02
    gain = result(rows)["comparisons"]["micro"]["chosen"]["acc"]["gain"]
    assert gain["p"] is None and gain["verdict"].startswith("not tested: the same difference")


def test_one_seed_gives_no_verdict_instead_of_crashing():
    out = result(per_seed({"kd": 0.01, "dist": 0.0}, seeds=1))
    gain = out["comparisons"]["micro"]["chosen"]["auc"]["gain"]
    assert gain["p"] is None and gain["p_holm"] is None
    assert gain["verdict"].startswith("not tested: 1 seed")
    assert "1 seed, no interval" in gap_report.to_markdown(out)


def test_no_difference_is_written_as_such():
    out = result(per_seed({"kd": 0.0, "dist": 0.0}))
    assert out["comparisons"]["micro"]["chosen"]["auc"]["gain"]["verdict"] == "no significant difference"


def test_markdown_states_choice_test_numbers_and_the_teacher_target():
    text = gap_report.to_markdown(result(per_seed({"kd": +0.02, "dist": 0.0})), figure="docs/figures/g.png")
    assert text.startswith(gap_report.SECTION_START) and text.rstrip().endswith(gap_report.SECTION_END)
    assert "| `cnn_micro`, 28 px | 13,178 | 53 | kd |" in text
    assert "kd (chosen)" in text and "Holm" in text
    assert "python -m kdkeras.bench.gap --seeds 0 1 2 3 4" in text
    assert "2 CPU core(s), TensorFlow 2.21.0, ran on 2026-12-07." in text
    assert "![Test AUC against student parameters](docs/figures/g.png)" in text
    # Mean distilled AUC ~0.972 against the teacher's 0.970: within the mission's 0.005.
    assert "yes (teacher - distilled" in text


def test_benchmarks_section_is_replaced_in_place(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# kdkeras benchmarks\n\n## Speed\n\ntable\n")
    first = gap_report.to_markdown(result(per_seed({"kd": 0.01, "dist": 0.0})))
    gap_report.update_benchmarks(path, first)
    gap_report.update_benchmarks(path, first)  # idempotent: one section, not two
    text = path.read_text()
    assert text.count(gap_report.SECTION_START) == 1 and text.startswith("# kdkeras benchmarks\n\n## Speed")


@pytest.mark.parametrize("content", ["vm\n", "", "# Notes\n\n## Speed\n"])
def test_a_benchmarks_path_that_is_not_benchmarks_md_is_refused_before_training(content, tmp_path, capsys,
                                                                                 monkeypatch):
    # `--benchmarks` is rewritten in place: a mistyped path (say /etc/hostname) must not get the
    # section appended, and must be named before hours of training, not after.
    def must_not_train(*args, **kwargs):
        raise AssertionError("trained although --benchmarks names the wrong file")

    monkeypatch.setattr(gap, "run_gap_benchmark", must_not_train)
    other = tmp_path / "hostname"
    other.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        gap.main(["--seeds", "0", "--runs-dir", str(tmp_path / "runs"), "--benchmarks", str(other)])
    assert exit_info.value.code == 2
    assert f"--benchmarks {other}: not a kdkeras BENCHMARKS.md" in capsys.readouterr().err
    assert other.read_text() == content
    with pytest.raises(ValueError, match="not a kdkeras BENCHMARKS.md"):
        gap_report.update_benchmarks(other, "<!-- kdkeras.bench.gap: start -->\n")
    assert other.read_text() == content
    with pytest.raises(SystemExit):
        gap.main(["--seeds", "0", "--benchmarks", str(tmp_path / "missing.md")])
    assert "cannot read it" in capsys.readouterr().err


def test_figure_plots_alone_and_distilled_against_parameters_on_a_log_axis():
    out = result(per_seed({"kd": 0.01, "dist": 0.0}))
    fig = gap_report.figure(out)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert labels[:2] == ["distilled (chosen method)", "student alone"]
    assert labels[2].startswith("teacher (0.970")


def test_benchmarks_md_includes_the_section_make_bench_wrote(tmp_path):
    from kdkeras.bench import outputs, report

    text = gap_report.to_markdown(result(per_seed({"kd": 0.01, "dist": 0.0})))
    assert report.build_markdown(str(tmp_path)).count(gap_report.SECTION_START) == 0
    (tmp_path / "gap").mkdir()
    (tmp_path / outputs.GAP).write_text(text)
    built = report.build_markdown(str(tmp_path))
    assert built.count(gap_report.SECTION_START) == 1 and text.rstrip() in built
    assert "python -m kdkeras.bench.gap --config quickstart" in built


@pytest.mark.parametrize("arm, experiment", [("micro", "quickstart_tiny"), ("lowres", "quickstart_lowres")])
def test_the_shipped_quickstarts_distil_with_the_method_benchmarks_md_chose(arm, experiment):
    import os
    import re

    from kdkeras.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "BENCHMARKS.md"), encoding="utf-8") as f:
        section = f.read().split("<!-- kdkeras.bench.gap: start -->")[1]
    description = next(a.description for a in gap.ARMS if a.name == arm)
    chosen = re.search(rf"^\| {re.escape(description)} \| [\d,]+ \| \d+ \| (\w+) \|", section, re.M)[1]
    method = next(m for m in gap.METHODS if m.name == chosen)
    config = load_config(experiment)
    student = next(a for a in gap.ARMS if a.name == arm)
    assert (config.distill.loss, config.distill.temperature) == (method.loss, method.temperature)
    # The student the benchmark measured: [distill] model unset means [student]'s.
    assert (config.distill.model or config.student.model, config.distill.image_size or 0) == (
        student.model, student.image_size)
