"""Distillation through a transfer set: few labels, the rest of the train images unlabeled.

The case distillation is for (Hinton et al. 2015): a teacher trained on a
labeled archive teaches through images nobody has labeled. For each seed the
teacher trains on the full train split, then for each labeled fraction the
same student architecture trains

- alone, on that fraction of the train labels (a seeded, stratified choice),
  for as many steps per epoch as the distilled student gets;
- distilled, seeing the same labeled images with their labels and the rest of
  the train images without (`[distill] transfer_set = "train"`).

Both arms share every other setting of the experiment (epochs, schedule,
augmentation, class weights, early stopping on the validation split). The
student trained alone on every label (the accuracy benchmark's student) is the
ceiling. Seeds run in `<runs_dir>/seed<N>/`, next to the accuracy benchmark's
runs, whose teacher and full-label student they reuse.

Run: `python -m kdkeras.bench.transfer --seeds 0 1 2 3 4 --runs-dir runs/bench`.
"""

import argparse
import sys

from kdkeras import config as config_lib
from kdkeras import runs as runs_lib
from kdkeras import stats
from kdkeras.bench import accuracy as accuracy_bench
from kdkeras.bench import outputs
from kdkeras.bench.environment import describe_environment
from kdkeras.config import ConfigError

FRACTIONS = (0.01, 0.05, 0.2)
_SCALE = {"acc": (100, 1), "auc": (1, 3)}  # (scale, digits): ACC gains in points
COMPARED = ("acc", "auc")
CEILING_POINTS = 1.0  # the target: within 1 ACC point of the student trained on every label


def run_transfer_benchmark(config="quickstart", seeds=accuracy_bench.DEFAULT_SEEDS, fractions=FRACTIONS,
                           runs_dir="runs/bench", fresh=False, log=print):
    """Runs (or reuses) every arm for every seed and labeled fraction.

    Args:
        config: Experiment name or `.toml` path.
        seeds: Global seeds.
        fractions: Labeled fractions of the train split, each in (0, 1).
        runs_dir: Parent of the `seed<N>` folders.
        fresh: Retrain arms that already finished.
        log: Callable receiving progress lines.

    Returns:
        A JSON-ready dict: `experiment`, `seeds`, `fractions`, `per_seed`
        (`{seed: {"all labels": metrics, "<fraction>": {"student": metrics,
        "distilled": metrics, "budget": ...}}}`), `comparisons` (see
        `compare_arms`) and `environment`.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"`fractions` must be numbers in (0, 1), got {fractions}.")
    base = config_lib.load_config(config)
    environment = describe_environment()
    per_seed = {}
    for seed in seeds:
        seeded = config_lib.apply_overrides(base, {"seed": int(seed)})
        seed_runs = outputs.seed_runs_dir(runs_dir, seed)
        teacher, ran = accuracy_bench.run_recorded_phase(seeded, "teacher", seed_runs, fresh=fresh, log=log)
        full, _ = accuracy_bench.run_recorded_phase(seeded, "student", seed_runs, fresh=fresh, log=log)
        teacher_path = runs_lib.RunFolder.of(seeded, seed_runs).model("teacher")
        row = {"teacher": teacher["metrics"], "all labels": full["metrics"]}
        for fraction in fractions:
            limited = config_lib.apply_overrides(seeded, {
                "name": f"{seeded.name}-labels{fraction:g}",
                "labeled_fraction": fraction,
                "distill.transfer_set": "train",
            })
            student, _ = accuracy_bench.run_recorded_phase(limited, "student", seed_runs, fresh=fresh, log=log)
            distilled, _ = accuracy_bench.run_recorded_phase(
                limited, "distill", seed_runs, fresh=fresh or ran, teacher_path=teacher_path, log=log
            )
            row[f"{fraction:g}"] = {
                "student": student["metrics"],
                "distilled": distilled["metrics"],
                "budget": {"student": student.get("budget"), "distilled": distilled.get("budget")},
            }
        per_seed[str(seed)] = row
    return {
        "experiment": base.name,
        "config_path": base.path,
        "seeds": [int(s) for s in seeds],
        "fractions": fractions,
        "per_seed": per_seed,
        "comparisons": compare_arms(per_seed, fractions),
        "environment": environment,
    }


def compare_arms(per_seed, fractions):
    """Paired differences over seeds, per labeled fraction and metric.

    Returns:
        `{fraction: {metric: {"distilled": mean/std, "student": mean/std,
        "gain": paired t-interval of distilled - student alone,
        "to_ceiling": paired t-interval of distilled - student on every label}}}`.
    """
    comparisons = {}
    for fraction in fractions:
        key = f"{fraction:g}"
        rows = [per_seed[s][key] for s in per_seed]
        ceiling = [per_seed[s]["all labels"] for s in per_seed]
        entry = {}
        for metric in COMPARED:
            distilled = [r["distilled"][metric] for r in rows]
            student = [r["student"][metric] for r in rows]
            entry[metric] = {
                "distilled": stats.mean_std(distilled),
                "student": stats.mean_std(student),
                "all_labels": stats.mean_std([c[metric] for c in ceiling]),
                "gain": stats.paired_t_interval([d - s for d, s in zip(distilled, student)]),
                "to_ceiling": stats.paired_t_interval([d - c[metric] for d, c in zip(distilled, ceiling)]),
            }
        comparisons[key] = entry
    return comparisons


GAIN_FAMILY = "the transfer-set gains, distilled minus student alone, for every labeled fraction x (ACC, AUC)"


def gain_rows(result):
    """The family of transfer-set gains with Holm-adjusted p-values (see `kdkeras.stats.family_rows`).

    Returns:
        `{(fraction, metric): row}`, rows in table order.
    """
    keys = [(fraction, metric) for fraction in result["comparisons"] for metric in COMPARED]
    rows = stats.family_rows([(key, result["comparisons"][key[0]][key[1]]["gain"]) for key in keys])
    return dict(zip(keys, rows))


def verdicts(result):
    """Plain-language statements of the transfer benchmark's targets.

    A gain is called a gain only when its Holm-adjusted p over the family of
    gains (`GAIN_FAMILY`) is below 0.05; otherwise "no significant
    difference". With one seed there is no interval and no test, and the
    lines say so.

    Returns:
        List of strings, one per fraction and metric, plus the ceiling check.
    """
    lines, rows = [], gain_rows(result)
    for fraction, entry in result["comparisons"].items():
        label = f"{float(fraction):.0%} labels"
        for metric in COMPARED:
            row = rows[(fraction, metric)]
            text = _gain_text(row, metric)
            if row["verdict"] == stats.family.BETTER:
                lines.append(f"{label}, {metric.upper()}: distillation through the transfer set is better than the "
                             f"student alone by {text}.")
            elif row["verdict"] == stats.family.WORSE:
                lines.append(f"{label}, {metric.upper()}: distillation through the transfer set is WORSE than the "
                             f"student alone by {text}.")
            elif row["verdict"] == stats.family.UNTESTED:
                lines.append(f"{label}, {metric.upper()}: distilled minus the student alone {text}: not tested.")
            else:
                lines.append(f"{label}, {metric.upper()}: no significant difference between the distilled student "
                             f"and the student alone: {text}.")
        lines.append(_ceiling_line(label, entry["acc"]["to_ceiling"]))
    return lines


def _gain_text(row, metric):
    """`"+5.6 points (95% t-interval +2.8 to +8.4, unadjusted; better in 5 of 5 seeds; Holm-adjusted p = 0.031)"`."""
    scale, digits, unit = (100, 1, " points") if metric == "acc" else (1, 3, "")
    mean = f"{row['mean'] * scale:+.{digits}f}{unit}"
    if row["low"] is None:
        return f"{mean} (one seed: no interval or test over seeds; run at least 2 seeds)"
    test = ("no t-test: the gain is the same on every seed" if row["p_value"] is None
            else f"Holm-adjusted {stats.family.format_p(row['p_adjusted'])}")
    return (f"{mean} (95% t-interval {row['low'] * scale:+.{digits}f} to {row['high'] * scale:+.{digits}f}, "
            f"unadjusted; distilled better in {row['n_positive']} of {row['n']} seeds; {test})")


def _ceiling_line(label, ceiling):
    text = f"{label}: distilled minus the student trained on every label, ACC {ceiling['mean'] * 100:+.1f} points"
    if ceiling["low"] is None:
        return text + " (one seed: no interval, so closeness to it is not tested)."
    within = ceiling["low"] * 100 >= -CEILING_POINTS
    return (f"{text} (95% CI {ceiling['low'] * 100:+.1f} to {ceiling['high'] * 100:+.1f}): "
            + (f"within {CEILING_POINTS:g} point of it." if within else
               f"not shown to be within {CEILING_POINTS:g} point of it."))


def to_markdown(result):
    """Table per labeled fraction (mean ± std over seeds), the paired gains and the verdicts."""
    n = len(result["seeds"])
    rows = gain_rows(result)
    lines = [
        "| Labels | student alone ACC | distilled ACC | gain ACC (95% CI, wins; Holm-adjusted p) | student alone AUC | "
        "distilled AUC | gain AUC (95% CI, wins; Holm-adjusted p) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fraction, entry in result["comparisons"].items():
        cells = []
        for metric in COMPARED:
            cells += [accuracy_bench.format_mean_std(entry[metric]["student"]),
                      accuracy_bench.format_mean_std(entry[metric]["distilled"]),
                      stats.family.format_row_cell(rows[(fraction, metric)], *_SCALE[metric])]
        lines.append(f"| {float(fraction):.0%} | " + " | ".join(cells) + " |")
    first = next(iter(result["comparisons"].values()))
    lines.append(
        f"| 100% (student alone, every label) | {accuracy_bench.format_mean_std(first['acc']['all_labels'])} | | | "
        f"{accuracy_bench.format_mean_std(first['auc']['all_labels'])} | | |"
    )
    lines += ["", f"ACC gains in points; mean ± sample std over {n} seeds; intervals are unadjusted paired "
              "t-intervals over seeds of distilled minus student alone. "
              f"{stats.family.family_title(GAIN_FAMILY, rows)}. {stats.CONDITIONAL_NOTE}", ""]
    lines += [f"- {line}" for line in verdicts(result)]
    lines += ["", "Per seed (ACC / AUC):", "",
              "| Seed | teacher | every label | " + " | ".join(
                  f"{float(f):.0%} alone | {float(f):.0%} distilled" for f in result["comparisons"]) + " |",
              "| --- | --- | --- | " + " | ".join("--- | ---" for _ in result["comparisons"]) + " |"]
    for seed, row in result["per_seed"].items():
        cells = [_pair(row["teacher"]), _pair(row["all labels"])]
        for fraction in result["comparisons"]:
            cells += [_pair(row[fraction]["student"]), _pair(row[fraction]["distilled"])]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pair(metrics):
    return f"{metrics['acc']:.3f} / {metrics['auc']:.3f}"


def save(result, out_dir):
    """Writes `transfer.json` and `transfer.md` into `out_dir`; returns the markdown path."""
    return outputs.save_result(result, out_dir, "transfer", to_markdown(result))


def build_parser():
    """The argument parser of `python -m kdkeras.bench.transfer`."""
    parser = argparse.ArgumentParser(prog="python -m kdkeras.bench.transfer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="quickstart", help="experiment name or .toml path (default quickstart)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(accuracy_bench.DEFAULT_SEEDS),
                        help="seeds (default 0 1 2 3 4)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="labeled fractions of the train split (default 0.01 0.05 0.2)")
    parser.add_argument("--runs-dir", default="runs/bench", help="parent of the seed<N> run folders")
    parser.add_argument("--fresh", action="store_true", help="retrain arms that already finished")
    return parser


def main(argv=None):
    """Runs the benchmark, prints its table and writes it next to the runs."""
    args = build_parser().parse_args(argv)
    try:
        result = run_transfer_benchmark(args.config, args.seeds, args.fractions, args.runs_dir, args.fresh)
    except (ConfigError, ValueError) as e:
        print(f"kdkeras.bench.transfer: {e}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    print(f"wrote {save(result, args.runs_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
