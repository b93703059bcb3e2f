"""Which distillation recipe the quickstart ships, chosen on the validation split.

The known levers for distilling with every label (issue 13) are tried beside
the shipped recipe, each over the same seeds:

- `current`: the experiment as configured.
- `ensemble`: the soft targets of three teachers trained with different seeds
  (the seed's own teacher and two more), averaged (`[distill] teachers`).
- `function_matching`: the "consistent" teacher of Beyer et al. (CVPR 2022)
  within the same budget: teacher and student see the same mixup of the
  batch (`[distill] mixup = 1`), and the student learns from the teacher
  alone (`alpha = 0`).
- `patient`: function matching on the "patient" schedule: three times the
  epochs on a cosine learning rate, no plateau halving, no early stop.

A recipe that changes the training budget (`patient`) changes it for the
student trained alone too, which then runs again as that recipe's baseline;
the other recipes keep the configured budget, and the accuracy benchmark's
student alone is their baseline.

The rule, fixed before any recipe ran: a recipe replaces `current` only when
its distilled student's validation AUC (the phases' monitor) is higher by a
paired 95% t-interval over seeds that excludes 0; several such recipes are
ranked by their mean gain. Otherwise `current` stays. Test-split numbers are
computed for every recipe and printed for the record, after the choice; they
choose nothing.

Seeds run in `<runs_dir>/seed<N>/`, beside the accuracy benchmark's runs,
whose teachers and students they reuse.

Run: `python -m kdkeras.bench.recipes --seeds 0 1 2 3 4 --runs-dir runs/bench`.
"""

import argparse
import dataclasses
import os
import sys

from kdkeras import config as config_lib
from kdkeras import runs as runs_lib
from kdkeras import stats
from kdkeras.bench import accuracy as accuracy_bench
from kdkeras.bench import outputs
from kdkeras.bench.environment import describe_environment
from kdkeras.config import ConfigError
from kdkeras.evaluation import metrics as metrics_lib

SELECTION_METRIC = "auc"
COMPARED = ("acc", "auc")
# Seeds of a recipe's extra teachers: teacher j of seed s trains with seed s + TEACHER_SEED_STEP * j.
TEACHER_SEED_STEP = 1000


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A candidate distillation recipe.

    Attributes:
        name: Short name, also the run folder's suffix.
        description: One line for the tables.
        overrides: `[distill]` overrides, dotted (`{"distill.alpha": 0.0}`).
        teachers: Number of teachers whose soft targets are averaged.
        budget: Training-budget keys (`epochs`, `schedule`, ...) set in
            `[student]`, which `[distill]` inherits, so the baseline trains alike.
    """

    name: str
    description: str
    overrides: dict = dataclasses.field(default_factory=dict)
    teachers: int = 1
    budget: dict = dataclasses.field(default_factory=dict)

    def configure(self, seeded, teachers=()):
        """The seeded experiment config of this recipe (the config itself for "current")."""
        if self.name == "current":
            return seeded
        overrides = {"name": f"{seeded.name}-{self.name}", **self.overrides}
        # [distill] inherits [student]'s budget after overrides, so the two arms train alike.
        overrides.update({f"student.{key}": value for key, value in self.budget.items()})
        if len(teachers) > 1:
            overrides["distill.teachers"] = list(teachers)
        return config_lib.apply_overrides(seeded, overrides)


RECIPES = (
    Recipe("current", "as configured"),
    Recipe("ensemble", "three teachers (seeds s, s+1000, s+2000), soft targets averaged", teachers=3),
    Recipe("function_matching", "Beyer et al. 2022: teacher and student see the same mixup (a = 1), alpha 0",
           {"distill.alpha": 0.0, "distill.mixup": 1.0}),
    Recipe("patient", "function matching, 3x the epochs on a cosine schedule, no plateau halving or early stop "
           "(student alone on the same budget)", {"distill.alpha": 0.0, "distill.mixup": 1.0},
           budget={"epochs": 36, "schedule": "cosine", "reduce_lr": 0, "early_stopping": 0}),
)


def run_recipe_benchmark(config="quickstart", seeds=accuracy_bench.DEFAULT_SEEDS, recipes=RECIPES,
                         runs_dir="runs/bench", fresh=False, log=print):
    """Runs (or reuses) every recipe for every seed, then chooses on validation.

    Args:
        config: Experiment name or `.toml` path.
        seeds: Global seeds.
        recipes: `Recipe`s; the first is the incumbent the others must beat.
        runs_dir: Parent of the `seed<N>` folders.
        fresh: Retrain runs that already finished.
        log: Callable receiving progress lines.

    Returns:
        A JSON-ready dict: `experiment`, `seeds`, `recipes` (name ->
        description, overrides, teachers), `per_seed` (`{seed: {"student":
        {"validation", "test"}, recipe: {"validation", "test"}}}`),
        `selection` (see `select`), `test` (see `compare_on_test`) and
        `environment`.
    """
    seeds = [int(seed) for seed in seeds]
    base = config_lib.load_config(config)
    environment = describe_environment()
    per_seed = {}
    for seed in seeds:
        seeded = config_lib.apply_overrides(base, {"seed": seed})
        seed_runs = outputs.seed_runs_dir(runs_dir, seed)
        for phase in ("teacher", "student"):
            accuracy_bench.run_recorded_phase(seeded, phase, seed_runs, fresh=fresh, log=log)
        row = {"student": model_scores(runs_lib.RunFolder.of(seeded, seed_runs), "student")}
        for recipe in recipes:
            run = _run_recipe(seeded, recipe, seed_runs, fresh, log)
            row[recipe.name] = model_scores(run, "distilled")
            if recipe.budget:
                row[recipe.name]["baseline"] = model_scores(run, "student")
        per_seed[str(seed)] = row
    result = {
        "experiment": base.name,
        "config_path": base.path,
        "seeds": seeds,
        "recipes": {r.name: {"description": r.description, "overrides": r.overrides, "teachers": r.teachers,
                             "budget": r.budget} for r in recipes},
        "per_seed": per_seed,
        "environment": environment,
    }
    result["selection"] = select(per_seed, [r.name for r in recipes])
    result["test"] = compare_on_test(per_seed, [r.name for r in recipes])
    return result


def _run_recipe(seeded, recipe, seed_runs, fresh, log):
    """Trains the recipe's extra teachers and its distilled student; returns its run folder."""
    own_teacher = runs_lib.RunFolder.of(seeded, seed_runs).model("teacher")
    teachers = [os.path.abspath(own_teacher)]
    for j in range(1, recipe.teachers):
        extra = config_lib.apply_overrides(seeded, {
            "name": f"{seeded.name}-teacher{j}", "seed": seeded.seed + TEACHER_SEED_STEP * j,
        })
        accuracy_bench.run_recorded_phase(extra, "teacher", seed_runs, fresh=fresh, log=log)
        teachers.append(os.path.abspath(runs_lib.RunFolder.of(extra, seed_runs).model("teacher")))
    configured = recipe.configure(seeded, teachers)
    if recipe.budget:
        accuracy_bench.run_recorded_phase(configured, "student", seed_runs, fresh=fresh, log=log)
    accuracy_bench.run_recorded_phase(configured, "distill", seed_runs, fresh=fresh, teacher_path=own_teacher,
                                      log=log)
    return runs_lib.RunFolder.of(configured, seed_runs)


def model_scores(run, name):
    """Validation and test ACC, AUC and cross-entropy of one trained model.

    The test metrics are the phase's own metrics file; the validation ones are
    computed from the validation logits the phase saved beside its predictions.
    """
    keys = ("acc", "auc", "cross_entropy")
    test = run.read_metrics(name)
    predictions = run.read_predictions(name)
    scores = metrics_lib.logits_to_scores(predictions["val_logits"], test["task"])
    validation = metrics_lib.classification_metrics(predictions["val_true"], scores, test["task"], n_resamples=1000)
    return {"validation": {key: validation[key] for key in keys}, "test": {key: test[key] for key in keys}}


def select(per_seed, names, metric=SELECTION_METRIC):
    """Applies the module's rule on the validation split.

    Args:
        per_seed: `{seed: {recipe: {"validation": {metric: value}}}}`.
        names: Recipe names; the first is the incumbent.
        metric: The validation metric that decides.

    Returns:
        dict with `metric`, `chosen` (a recipe name), `reason` (one sentence)
        and `candidates` (`{name: {"mean": ..., "gain": paired t-interval of
        name - incumbent}}`).
    """
    incumbent = names[0]
    candidates, winners = {}, []
    for name in names:
        values = [row[name]["validation"][metric] for row in per_seed.values()]
        entry = {"mean": stats.mean_std(values)}
        if name != incumbent:
            entry["gain"] = stats.paired_t_interval(
                [row[name]["validation"][metric] - row[incumbent]["validation"][metric] for row in per_seed.values()]
            )
            if entry["gain"]["low"] is not None and entry["gain"]["low"] > 0:
                winners.append((entry["gain"]["mean"], name))
        candidates[name] = entry
    if winners:
        chosen = max(winners)[1]
        gain = candidates[chosen]["gain"]
        reason = (f"{chosen} beats {incumbent} on validation {metric.upper()} by {gain['mean']:+.4f} "
                  f"(95% t-interval {gain['low']:+.4f} to {gain['high']:+.4f} over {gain['n']} seeds).")
    else:
        chosen = incumbent
        reason = (f"no recipe beats {incumbent} on validation {metric.upper()} with a paired 95% interval "
                  f"above 0, so {incumbent} stays.")
    return {"metric": metric, "chosen": chosen, "reason": reason, "candidates": candidates}


def compare_on_test(per_seed, names):
    """Each recipe's distilled student against its student alone, on the test split.

    A recipe's baseline is the student alone on the same budget: its own
    (`"baseline"`) when it changed the budget, else the configured one.

    Returns:
        `{recipe: {metric: {"distilled": mean/std, "student": mean/std,
        "gain": paired t-interval of distilled - student alone}}}`.
    """
    rows = list(per_seed.values())
    comparison = {}
    for name in names:
        baseline = [r[name].get("baseline", r["student"])["test"] for r in rows]
        comparison[name] = {
            metric: {
                "distilled": stats.mean_std([r[name]["test"][metric] for r in rows]),
                "student": stats.mean_std([b[metric] for b in baseline]),
                "gain": stats.paired_t_interval([r[name]["test"][metric] - b[metric] for r, b in zip(rows, baseline)]),
            }
            for metric in COMPARED
        }
    return comparison


TEST_FAMILY = "every recipe's distilled student minus its student alone on the test split, x (ACC, AUC)"


def gain_rows(result):
    """The family of test-split gains (`TEST_FAMILY`), with Holm-adjusted verdicts.

    Returns:
        `{(recipe, metric): row}`, rows as `kdkeras.stats.family_rows` makes them.
    """
    keys = [(name, metric) for name in result["recipes"] for metric in COMPARED]
    rows = stats.family_rows([(key, result["test"][key[0]][key[1]]["gain"]) for key in keys])
    return dict(zip(keys, rows))


def to_markdown(result):
    """Validation table and choice first, then the test split for the record."""
    n = len(result["seeds"])
    selection = result["selection"]
    lines = [
        f"Chosen on validation ({n} seeds): **{selection['chosen']}**. {selection['reason']}",
        "",
        "| Recipe | What it changes | validation ACC | validation AUC | validation cross-entropy | "
        "validation AUC minus current (95% CI, wins) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    rows = list(result["per_seed"].values())
    for name, recipe in result["recipes"].items():
        means = {m: stats.mean_std([r[name]["validation"][m] for r in rows]) for m in ("acc", "auc", "cross_entropy")}
        gain = selection["candidates"][name].get("gain")
        gain_text = "" if gain is None else (
            f"{gain['mean']:+.4f} ({_bound(gain['low'])} to {_bound(gain['high'])}; {gain['n_positive']}/{gain['n']})")
        lines.append(f"| {name} | {recipe['description']} | {accuracy_bench.format_mean_std(means['acc'])} | "
                     f"{accuracy_bench.format_mean_std(means['auc'], 4)} | "
                     f"{accuracy_bench.format_mean_std(means['cross_entropy'])} | {gain_text} |")
    baselines = {"student alone": [r["student"] for r in rows]}
    for name in result["recipes"]:
        if "baseline" in rows[0][name]:
            baselines[f"student alone, {name} budget"] = [r[name]["baseline"] for r in rows]
    for title, scores in baselines.items():
        means = {m: stats.mean_std([s["validation"][m] for s in scores]) for m in ("acc", "auc", "cross_entropy")}
        lines.append(f"| {title} | the baseline | {accuracy_bench.format_mean_std(means['acc'])} | "
                     f"{accuracy_bench.format_mean_std(means['auc'], 4)} | "
                     f"{accuracy_bench.format_mean_std(means['cross_entropy'])} | |")
    lines += [
        "",
        "The same runs on the test split, printed after the choice and for the record (they chose nothing): "
        "distilled minus the student alone on the same budget, unadjusted paired 95% t-interval over seeds. "
        f"{stats.family.family_title(TEST_FAMILY, gain_rows(result))}. {stats.CONDITIONAL_NOTE}",
        "",
        "| Recipe | test ACC: distilled / alone | gain ACC, points (95% CI, wins; Holm-adjusted p) | "
        "test AUC: distilled / alone | gain AUC (95% CI, wins; Holm-adjusted p) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    test, rows = result["test"], gain_rows(result)
    for name in result["recipes"]:
        acc, auc = test[name]["acc"], test[name]["auc"]
        gain_acc = stats.family.format_row_cell(rows[(name, "acc")], 100, 1)
        gain_auc = stats.family.format_row_cell(rows[(name, "auc")], 1, 4)
        lines.append(
            f"| {name} | {accuracy_bench.format_mean_std(acc['distilled'])} / "
            f"{accuracy_bench.format_mean_std(acc['student'])} | {gain_acc} | "
            f"{accuracy_bench.format_mean_std(auc['distilled'])} / {accuracy_bench.format_mean_std(auc['student'])} | "
            f"{gain_auc} |")
    lines += ["", "Per seed, validation AUC / test AUC:", "",
              "| Seed | student alone | " + " | ".join(result["recipes"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in result["recipes"]) + " |"]
    for seed, row in result["per_seed"].items():
        cells = [_pair(row["student"])] + [_pair(row[name]) for name in result["recipes"]]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _bound(value):
    return "n/a" if value is None else f"{value:+.4f}"


def _pair(scores):
    return f"{scores['validation']['auc']:.4f} / {scores['test']['auc']:.4f}"


def save(result, out_dir):
    """Writes `recipes.json` and `recipes.md` into `out_dir`; returns the markdown path."""
    return outputs.save_result(result, out_dir, "recipes", to_markdown(result))


def build_parser():
    """The argument parser of `python -m kdkeras.bench.recipes`."""
    parser = argparse.ArgumentParser(prog="python -m kdkeras.bench.recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="quickstart", help="experiment name or .toml path (default quickstart)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(accuracy_bench.DEFAULT_SEEDS),
                        help="seeds (default 0 1 2 3 4)")
    parser.add_argument("--recipes", nargs="+", choices=[r.name for r in RECIPES], default=[r.name for r in RECIPES],
                        help="recipes to run; the first is the incumbent (default: all)")
    parser.add_argument("--runs-dir", default="runs/bench", help="parent of the seed<N> run folders")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    return parser


def main(argv=None):
    """Runs the benchmark, prints its tables and writes them next to the runs."""
    args = build_parser().parse_args(argv)
    recipes = [next(r for r in RECIPES if r.name == name) for name in args.recipes]
    try:
        result = run_recipe_benchmark(args.config, args.seeds, recipes, args.runs_dir, args.fresh)
    except (ConfigError, ValueError) as e:
        print(f"kdkeras.bench.recipes: {e}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    print(f"wrote {save(result, args.runs_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
