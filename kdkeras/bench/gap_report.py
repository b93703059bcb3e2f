"""The capacity-gap benchmark as Markdown, a figure, and its section of BENCHMARKS.md."""

import math

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from kdkeras.bench import outputs
from kdkeras.files import write_text_atomic
from kdkeras.reporting.figures import STYLE
from kdkeras.reporting.figures import save_figure as save_styled

SECTION_START = "<!-- kdkeras.bench.gap: start -->"
SECTION_END = "<!-- kdkeras.bench.gap: end -->"
COMMAND = "python -m kdkeras.bench.gap --seeds {seeds} --runs-dir runs/bench --figure docs/figures/capacity_gap.png " \
          "--benchmarks BENCHMARKS.md"


def to_markdown(result, figure=None):
    """The section: setup, the validation choice, test numbers after it, Holm verdicts, the figure link."""
    seeds = result["seeds"]
    env = result["environment"]
    teacher = result["models"].get("teacher", {})
    lines = [
        SECTION_START,
        "## Where distillation pays: students 50-100x smaller, and at a lower resolution",
        "",
        f"The quickstart teacher (`{teacher.get('architecture', '?')}`, {teacher.get('params', 0):,} parameters, "
        f"28 px) of each seed distilled into students at the mission's ratio, each with the quickstart's recipe "
        f"and budget (`kdkeras/bench/gap.py`, whose docstring fixed the rule before anything ran). "
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); {env.get('cpus', '?')} CPU core(s), "
        f"TensorFlow {env.get('tensorflow', '?')}, ran on {str(env.get('date', '?'))[:10]}. Reproduce: "
        f"`{COMMAND.format(seeds=' '.join(map(str, seeds)))}`.",
        "",
        "**Choice, on validation only.** Per student, the method of lowest mean validation cross-entropy "
        "(validation AUC is saturated):",
        "",
        "| Student | Params | 1/x of teacher | Chosen | Why |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    arms = {arm["name"]: arm for arm in result["arms"]}
    for name, entry in result["comparisons"].items():
        params = entry["params"]
        ratio = teacher.get("params", 0) / params if params else math.nan
        choice = result["choice"][name]
        lines.append(f"| {arms[name]['description']} | {params:,} | {ratio:.0f} | {choice['chosen']} | "
                     f"{choice['reason']} |")
    lines += ["", "**Test split, read after the choice** (mean ± std over seeds; gain = distilled - alone, "
              "paired 95% t-interval over seeds, unadjusted p):", ""]
    lines += _methods_table(result, arms)
    lines += ["", "**Verdicts.** Family: each student's chosen method against the same student alone, on ACC "
              "and AUC (Holm-Bonferroni over these verdicts; \"better\" needs an adjusted p < 0.05). Seed "
              "intervals are conditional on the one 624-image test split.", "",
              "| Student | Metric | Gain (95% t-interval) | p | Holm p | Verdict | Within 0.005 AUC of the teacher |",
              "| --- | --- | --- | ---: | ---: | --- | --- |"]
    for name, entry in result["comparisons"].items():
        for metric in ("acc", "auc"):
            gain = entry["chosen"][metric]["gain"]
            near = _near_teacher(entry) if metric == "auc" else ""
            lines.append(f"| {arms[name]['description']} | {metric.upper()} | {_interval(gain)} | "
                         f"{_p(gain['p'])} | {_p(gain.get('p_holm'))} | {gain['verdict']} | {near} |")
    if figure:
        lines += ["", f"![Test AUC against student parameters]({figure})"]
    lines += [SECTION_END]
    return "\n".join(lines) + "\n"


def _methods_table(result, arms):
    lines = ["| Student | Teacher AUC | Alone ACC / AUC | Method | Distilled ACC / AUC | ACC gain | AUC gain |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, entry in result["comparisons"].items():
        alone = f"{_mean(entry['alone']['acc'])} / {_mean(entry['alone']['auc'])}"
        for method, metrics in entry["methods"].items():
            chosen = " (chosen)" if method == result["choice"][name]["chosen"] else ""
            distilled = f"{_mean(metrics['acc']['distilled'])} / {_mean(metrics['auc']['distilled'])}"
            lines.append(f"| {arms[name]['description']} | {_mean(entry['teacher']['auc'])} | {alone} | "
                         f"{method}{chosen} | {distilled} | {_interval(metrics['acc']['gain'])} (p {_p(metrics['acc']['gain']['p'])}) | "
                         f"{_interval(metrics['auc']['gain'])} (p {_p(metrics['auc']['gain']['p'])}) |")
    return lines


def _near_teacher(entry):
    distilled = entry["chosen"]["auc"]["distilled"]["mean"]
    teacher = entry["teacher"]["auc"]["mean"]
    gap = teacher - distilled
    return f"{'yes' if gap <= 0.005 else 'no'} (teacher - distilled {gap:+.4f})"


def _mean(entry):
    if entry["std"] is None:
        return f"{entry['mean']:.3f}"
    return f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def _interval(gain):
    if gain["low"] is None:
        return f"{gain['mean']:+.4f} (1 seed, no interval)"
    return f"{gain['mean']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]"


def _p(value):
    return "n/a" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def figure(result):
    """Test AUC against student parameters (log scale): alone and chosen distilled, t-intervals, the teacher."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    arms = {arm["name"]: arm for arm in result["arms"]}
    teacher_auc = None
    for offset, (label, pick, marker) in enumerate((
        ("student alone", lambda e: e["alone"]["auc"], "o"),
        ("distilled (chosen method)", lambda e: e["chosen"]["auc"]["distilled"], "s"),
    )):
        for name, entry in result["comparisons"].items():
            stat = pick(entry)
            half = _half_width(stat)
            x = entry["params"] * (1.06 if offset else 1 / 1.06)
            filled = arms[name]["image_size"] == 0
            ax.errorbar(x, stat["mean"], yerr=half, fmt=marker, color=f"C{offset}", capsize=3,
                        markerfacecolor=f"C{offset}" if filled else "white", markeredgecolor=f"C{offset}",
                        label=label if name == next(iter(result["comparisons"])) else None)
            ax.annotate(name, (x, stat["mean"]), textcoords="offset points", xytext=(6, -3), fontsize=7)
            teacher_auc = entry["teacher"]["auc"]["mean"]
    if teacher_auc is not None:
        ax.axhline(teacher_auc, color="0.3", linestyle="--", label=f"teacher ({teacher_auc:.3f})")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("student parameters (log scale; hollow: 16 px student)")
    ax.set_ylabel("test AUC (mean, 95% t-interval over seeds)")
    ax.set_title(f"PneumoniaMNIST, {len(result['seeds'])} seed(s)")
    ax.legend(loc="best", fontsize=8)
    return fig


def _half_width(stat):
    if not stat.get("std") or stat["n"] < 2:
        return 0.0
    return float(scipy_stats.t.ppf(0.975, stat["n"] - 1) * stat["std"] / np.sqrt(stat["n"]))


def save_figure(result, path):
    """Writes `figure(result)` to `path` (PNG) in the report style."""
    with matplotlib.rc_context(STYLE):
        save_styled(figure(result), path)


def check_benchmarks(path):
    """Returns the text of `path` when it is a BENCHMARKS.md this module may rewrite.

    Raises:
        ValueError: when `path` is missing, unreadable, or neither holds the section's markers
            nor starts with the title `kdkeras.bench.report` writes: `--benchmarks` names a
            file that is rewritten in place, so a wrong path must not be appended to.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--benchmarks {path}: cannot read it ({error}); pass the repository's "
                         "BENCHMARKS.md.") from None
    if SECTION_START not in text and not text.startswith(outputs.BENCHMARKS_TITLE):
        raise ValueError(f"--benchmarks {path}: not a kdkeras BENCHMARKS.md (it neither starts with "
                         f"{outputs.BENCHMARKS_TITLE!r} nor holds {SECTION_START!r}); pass the repository's "
                         "BENCHMARKS.md, or leave --benchmarks out.")
    return text


def update_benchmarks(path, section):
    """Replaces the capacity-gap section of BENCHMARKS.md (between its markers), or appends it.

    Raises:
        ValueError: from `check_benchmarks`.
    """
    text = check_benchmarks(path)
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text_atomic(path, text)
