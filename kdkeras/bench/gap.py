"""Where distillation pays: students 50-100x smaller than the teacher, and at a lower resolution.

The quickstart's teacher (`resnet18` width 16, 702,546 parameters, 28 px) of each
seed is distilled into students the mission is about, each one an *arm*:

- `micro`: `cnn_micro`, 13,178 parameters (1/53 of the teacher), 28 px;
- `nano`: `cnn_nano`, 7,162 parameters (1/98), 28 px;
- `lowres`: the quickstart student `cnn_small` (162,458) reading 16 px while the
  teacher reads 28 px (a third of the pixels; `[student] image_size = 16`).

Each arm trains the student alone and distilled by each method made for a
capacity gap, with the quickstart's recipe and budget (the same epochs,
augmentation, class weights, early stopping and alpha for every arm):

- `kd`: Hinton et al. 2015 at the quickstart's T = 4;
- `dist`: DIST (Huang et al., NeurIPS 2022) at its own T = 1;
- `kd_ls`: KD on z-scored logits (logit standardization, Sun et al., CVPR 2024)
  at its base T = 2; with two classes the z-scored logits keep only the
  teacher's preferred class, so this arm measures that limit too;
- `takd`: a teacher assistant (Mirzadeh et al., AAAI 2020): the seed's
  distilled quickstart student (162k, KD from the teacher) teaches the arm's
  student with KD at T = 4.

DKD is left out: on two classes its non-target term is 0 and it equals KD
times `tckd_weight` (`kdkeras.distillation.losses.DecoupledKD` warns so).

The rule, written before any arm ran: per arm, the method whose distilled
student has the lowest mean *validation cross-entropy* over the seeds is
chosen (validation AUC is saturated at 0.995-0.997 on PneumoniaMNIST for every
recipe, so it cannot tell methods apart). Test numbers are read after the
choice and choose nothing. The chosen method's student is compared with the
same student alone on the test split by the paired t-interval over seeds of
the ACC and AUC differences; the family of comparisons is every arm's ACC and
AUC (six verdicts), Holm-adjusted, and "better" needs an adjusted p < 0.05.
Every method's own difference from the student alone is printed beside it,
unadjusted and labelled so. Intervals over seeds are conditional on the one
test split (624 images): they leave out its own sampling error.

Seeds run in `<runs_dir>/seed<N>/` beside the accuracy benchmark, whose
teacher, student alone and distilled student (the assistant) they reuse or
train first. A finished phase is reused on a rerun (`--fresh` retrains).

Run: `python -m kdkeras.bench.gap --seeds 0 1 2 3 4 --runs-dir runs/bench`.
"""

import argparse
import dataclasses
import os
import sys

from kdkeras import config as config_lib
from kdkeras import runs as runs_lib
from kdkeras import stats
from kdkeras.argtypes import output_file, output_folder
from kdkeras.bench import accuracy as accuracy_bench
from kdkeras.bench import gap_report, outputs
from kdkeras.bench.environment import describe_environment
from kdkeras.bench.recipes import model_scores
from kdkeras.config import ConfigError
from kdkeras.stats.family import decide

COMPARED = ("acc", "auc")
SELECTION_METRIC = "cross_entropy"
# The target of the mission: a distilled student's mean test AUC this close to its teacher's.
TEACHER_MARGIN = 0.005


@dataclasses.dataclass(frozen=True)
class Arm:
    """A student the teacher is distilled into.

    Attributes:
        name: Short name, part of the run folders' names.
        model: Zoo name of the student.
        image_size: The student's input size in px, or 0 for the data's.
        description: One line for the tables.
    """

    name: str
    model: str
    image_size: int
    description: str


@dataclasses.dataclass(frozen=True)
class Method:
    """A distillation method, as `[distill]` overrides.

    Attributes:
        name: Short name, part of the run folders' names.
        loss: `[distill] loss`.
        temperature: `[distill] temperature`, the method's own default.
        assistant: Distil from the seed's distilled quickstart student (TAKD).
        description: One line for the tables.
    """

    name: str
    loss: str
    temperature: float
    assistant: bool
    description: str


ARMS = (
    Arm("micro", "cnn_micro", 0, "`cnn_micro`, 28 px"),
    Arm("nano", "cnn_nano", 0, "`cnn_nano`, 28 px"),
    Arm("lowres", "cnn_small", 16, "`cnn_small` at 16 px (teacher 28 px)"),
)
METHODS = (
    Method("kd", "knowledge_distillation", 4.0, False, "KD, T = 4"),
    Method("dist", "dist", 1.0, False, "DIST, T = 1"),
    Method("kd_ls", "kd_ls", 2.0, False, "KD on standardized logits, T = 2"),
    Method("takd", "knowledge_distillation", 4.0, True, "teacher assistant (162k distilled) -> KD, T = 4"),
)


def run_gap_benchmark(config="quickstart", seeds=accuracy_bench.DEFAULT_SEEDS, runs_dir="runs/bench", arms=ARMS,
                      methods=METHODS, fresh=False, log=print):
    """Trains (or reuses) every arm and method for every seed; chooses and compares as the module says.

    Args:
        config: Experiment name or `.toml` path; its teacher is distilled.
        seeds: Global seeds, one full set of runs each.
        runs_dir: Parent folder; seed `N` runs in `<runs_dir>/seed<N>`.
        arms: The `Arm`s to run.
        methods: The `Method`s to run on each arm.
        fresh: Retrain phases even when a finished run with the same config exists.
        log: Callable receiving progress lines.

    Returns:
        A JSON-ready dict: `experiment`, `seeds`, `arms`, `methods`, `teacher`
        (architecture, parameters), `per_seed` (`{seed: {arm: {"alone" | method:
        {"validation": ..., "test": ..., "params": ...}}}}` plus each seed's
        `"teacher"`), `choice` (per arm, see `choose`), `comparisons` and
        `environment`.
    """
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct integers, at least one; got {seeds}.")
    base = config_lib.load_config(config)
    environment = describe_environment()
    per_seed, models = {}, {}
    for seed in seeds:
        seeded = config_lib.apply_overrides(base, {"seed": seed})
        seed_runs = outputs.seed_runs_dir(runs_dir, seed)
        for phase in runs_lib.PHASES:  # the teacher, and the assistant (the quickstart's distilled student)
            record, _ = accuracy_bench.run_recorded_phase(seeded, phase, seed_runs, fresh=fresh, log=log)
            models[runs_lib.MODEL_NAMES[phase]] = {"architecture": record["architecture"], "params": record["params"]}
        own = runs_lib.RunFolder.of(seeded, seed_runs)
        row = {"teacher": model_scores(own, "teacher")}
        for arm in arms:
            row[arm.name] = _run_arm(seeded, arm, methods, own, seed_runs, fresh, log)
        per_seed[str(seed)] = row
    environment["load_average_after"] = describe_environment()["load_average"]
    names = [m.name for m in methods]
    choice = {arm.name: choose({s: row[arm.name] for s, row in per_seed.items()}, names) for arm in arms}
    return {
        "experiment": base.name,
        "seeds": seeds,
        "arms": [dataclasses.asdict(arm) for arm in arms],
        "methods": [dataclasses.asdict(method) for method in methods],
        "models": models,
        "per_seed": per_seed,
        "choice": choice,
        "comparisons": compare(per_seed, arms, names, choice),
        "environment": environment,
    }


def _run_arm(seeded, arm, methods, own, seed_runs, fresh, log):
    """The student alone and each method's distilled student of one arm and seed: their scores."""
    student = config_lib.apply_overrides(seeded, {
        "name": f"{seeded.name}-gap-{arm.name}",
        "student.model": arm.model, "student.image_size": arm.image_size,
        "distill.model": arm.model, "distill.image_size": arm.image_size,
    })
    record, _ = accuracy_bench.run_recorded_phase(student, "student", seed_runs, fresh=fresh, log=log)
    scores = {"alone": {**model_scores(runs_lib.RunFolder.of(student, seed_runs), "student"),
                        "params": record["params"]}}
    for method in methods:
        teacher = own.model("distilled" if method.assistant else "teacher")
        distilled = config_lib.apply_overrides(student, {
            "name": f"{student.name}-{method.name}",
            "distill.loss": method.loss,
            "distill.temperature": method.temperature,
            "distill.teachers": [os.path.abspath(teacher)],
        })
        record, _ = accuracy_bench.run_recorded_phase(distilled, "distill", seed_runs, fresh=fresh,
                                                      teacher_path=teacher, log=log)
        scores[method.name] = {**model_scores(runs_lib.RunFolder.of(distilled, seed_runs), "distilled"),
                               "params": record["params"]}
    return scores


def choose(per_seed, names, metric=SELECTION_METRIC):
    """The module's rule on one arm: the method of lowest mean validation `metric`.

    Args:
        per_seed: `{seed: {method: {"validation": {metric: value}}}}`.
        names: The method names.
        metric: The validation metric; lower is better.

    Returns:
        dict with `metric`, `chosen`, `means` (`{method: mean}`) and `reason`.
    """
    means = {name: stats.mean_std([row[name]["validation"][metric] for row in per_seed.values()])["mean"]
             for name in names}
    chosen = min(names, key=lambda name: means[name])
    ranked = ", ".join(f"{name} {means[name]:.4f}" for name in sorted(names, key=means.get))
    reason = f"lowest mean validation {metric.replace('_', '-')} over {len(per_seed)} seed(s): {ranked}."
    return {"metric": metric, "chosen": chosen, "means": means, "reason": reason}


def compare(per_seed, arms, names, choice):
    """Every method against its student alone on test; the chosen ones form the Holm family.

    Returns:
        `{arm: {"alone": {metric: mean/std}, "teacher": {metric: mean/std},
        methods: {name: {metric: {"distilled": mean/std, "gain": t-interval
        with "p"}}}, "chosen": {metric: {..., "p_holm", "verdict"}}}}`.
    """
    rows = list(per_seed.values())
    result, family = {}, []
    for arm in arms:
        entry = {
            "alone": {m: stats.mean_std([r[arm.name]["alone"]["test"][m] for r in rows]) for m in COMPARED},
            "teacher": {m: stats.mean_std([r["teacher"]["test"][m] for r in rows]) for m in COMPARED},
            "params": rows[0][arm.name]["alone"]["params"],
            "methods": {},
        }
        for name in names:
            entry["methods"][name] = {m: _gain(rows, arm.name, name, m) for m in COMPARED}
        entry["chosen"] = {m: dict(entry["methods"][choice[arm.name]["chosen"]][m]) for m in COMPARED}
        family.extend(entry["chosen"][m]["gain"] for m in COMPARED)
        result[arm.name] = entry
    adjusted = stats.holm([gain["p"] for gain in family])
    for gain, p in zip(family, adjusted):
        gain["p_holm"] = p
        gain["verdict"] = _verdict(gain, p)
    return result


def _gain(rows, arm, name, metric):
    distilled = [r[arm][name]["test"][metric] for r in rows]
    gain = stats.paired_t_interval([d - r[arm]["alone"]["test"][metric] for d, r in zip(distilled, rows)])
    gain["p"] = gain.pop("p_value")
    return {"distilled": stats.mean_std(distilled), "gain": gain}


def _verdict(gain, p_holm):
    if gain["n"] < 2:
        return f"not tested: {gain['n']} seed(s), a paired interval needs at least 2"
    if p_holm is None:
        return "not tested: the same difference in every seed (zero spread) is no evidence"
    return {"better": "distilled better", "worse": "distilled worse"}.get(
        decide(gain["mean"], p_holm), "no significant difference")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m kdkeras.bench.gap", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="quickstart", help="experiment whose teacher is distilled")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(accuracy_bench.DEFAULT_SEEDS))
    parser.add_argument("--runs-dir", default="runs/bench", help="parent of the seed<N> run folders")
    parser.add_argument("--out-dir", type=output_folder, default=None, help="where gap.json, gap.md and gap.png go "
                        "(default: <runs-dir>/gap)")
    parser.add_argument("--arms", nargs="+", choices=[a.name for a in ARMS], default=[a.name for a in ARMS])
    parser.add_argument("--methods", nargs="+", choices=[m.name for m in METHODS],
                        default=[m.name for m in METHODS])
    parser.add_argument("--fresh", action="store_true", help="retrain phases that already ran")
    parser.add_argument("--figure", type=output_file, default=None, help="where the AUC-against-parameters figure goes "
                        "(default: <out-dir>/gap.png; BENCHMARKS.md links docs/figures/capacity_gap.png)")
    parser.add_argument("--benchmarks", default=None, help="BENCHMARKS.md whose capacity-gap section to rewrite")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.benchmarks:
        try:
            gap_report.check_benchmarks(args.benchmarks)
        except ValueError as error:
            parser.error(str(error))
    arms = [a for a in ARMS if a.name in args.arms]
    methods = [m for m in METHODS if m.name in args.methods]
    try:
        result = run_gap_benchmark(args.config, args.seeds, args.runs_dir, arms, methods, fresh=args.fresh)
    except (ConfigError, ValueError) as error:
        print(f"kdkeras.bench.gap: {error}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or os.path.join(args.runs_dir, "gap")
    outputs.save_result(result, out_dir, "gap", gap_report.to_markdown(result, figure=args.figure))
    gap_report.save_figure(result, args.figure or os.path.join(out_dir, "gap.png"))
    if args.benchmarks:
        gap_report.update_benchmarks(args.benchmarks, gap_report.to_markdown(result, figure=args.figure))
    print(f"wrote {out_dir}/gap.json and gap.md" + (f", updated {args.benchmarks}" if args.benchmarks else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
