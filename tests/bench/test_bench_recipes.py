"""The recipe benchmark: every lever runs on the same seeds and the choice is made on validation."""

import json

import numpy as np
import pytest

from kdkeras import runs as runs_lib
from kdkeras.bench import readme, recipes, report

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "teacher": {"options": None},
    "student": {"reduce_lr": 2, "options": None},
}


def _row(student, **recipe_auc):
    """One seed: validation AUC per arm, and test AUC = validation AUC - 0.05."""
    def scores(auc):
        return {"validation": {"acc": 0.9, "auc": auc, "cross_entropy": 0.3},
                "test": {"acc": 0.85, "auc": auc - 0.05, "cross_entropy": 0.4}}
    return {"student": scores(student), **{name: scores(auc) for name, auc in recipe_auc.items()}}


def test_a_recipe_wins_only_with_a_paired_interval_above_zero():
    per_seed = {
        "0": _row(0.95, current=0.960, steady=0.970, noisy=1.000),
        "1": _row(0.95, current=0.962, steady=0.971, noisy=0.940),
        "2": _row(0.95, current=0.958, steady=0.969, noisy=0.975),
    }
    selection = recipes.select(per_seed, ["current", "steady", "noisy"])
    assert selection["chosen"] == "steady"
    gain = selection["candidates"]["steady"]["gain"]
    assert gain["mean"] == pytest.approx(0.010) and gain["low"] > 0 and gain["n_positive"] == 3
    noisy = selection["candidates"]["noisy"]["gain"]
    assert noisy["mean"] > gain["mean"] and noisy["low"] < 0  # a bigger mean gain, inside the noise
    assert selection["reason"].startswith("steady beats current on validation AUC by +0.0100 (95% t-interval +0.00")
    kept = recipes.select(per_seed, ["current", "noisy"])
    assert kept["chosen"] == "current"
    assert kept["reason"] == ("no recipe beats current on validation AUC with a paired 95% interval above 0, "
                              "so current stays.")


def test_test_split_gains_use_the_baseline_on_the_same_budget():
    per_seed = {seed: _row(0.95, current=0.96, patient=0.97) for seed in ("0", "1")}
    for seed, baseline_auc in (("0", 0.99), ("1", 0.98)):
        per_seed[seed]["patient"]["baseline"] = _row(baseline_auc)["student"]
    test = recipes.compare_on_test(per_seed, ["current", "patient"])
    assert test["current"]["auc"]["gain"]["mean"] == pytest.approx(0.01)
    assert test["patient"]["auc"]["student"]["mean"] == pytest.approx(0.935)
    assert test["patient"]["auc"]["gain"]["mean"] == pytest.approx(-0.015)  # its own, longer-trained baseline
    assert test["patient"]["auc"]["gain"]["n_positive"] == 0


def test_patient_recipe_sets_the_budget_of_both_arms():
    from kdkeras import config as config_lib

    config = config_lib.apply_overrides(config_lib.load_config("quickstart"), {"seed": 3})
    patient = next(r for r in recipes.RECIPES if r.name == "patient").configure(config)
    for train in (patient.student, patient.distill):
        assert (train.epochs, train.schedule, train.reduce_lr, train.early_stopping) == (36, "cosine", 0, 0)
    assert (patient.name, patient.distill.alpha, patient.distill.mixup) == ("quickstart-patient", 0.0, 1.0)
    assert patient.teacher == config.teacher
    assert next(r for r in recipes.RECIPES if r.name == "current").configure(config) is config


def test_benchmark_trains_each_recipe_once_and_reuses_it(tmp_path, monkeypatch, tiny_experiment, phase_record):
    config = tiny_experiment(tmp_path, **TINY)
    calls = []

    def fake_run_phase(seeded, phase, runs_dir, verbose, log, teacher_path=None):
        """Writes the files a finished phase leaves, with validation AUC set by the recipe."""
        calls.append((seeded.name, phase, seeded.seed, list(seeded.distill.teachers), teacher_path))
        run = runs_lib.RunFolder.of(seeded, runs_dir)
        name = runs_lib.MODEL_NAMES[phase]
        margin = {"tiny": 1.0, "tiny-ensemble": 1.5}.get(seeded.name, 0.5) + 0.1 * seeded.seed
        y = np.arange(40) % 2
        logits = np.stack([-margin * (2 * y - 1) + np.linspace(-1, 1, 40), margin * (2 * y - 1)], axis=1)
        run.write_predictions(name, y, np.full((40, 2), 0.5), logits=logits, val=(y, logits))
        run.write_metrics(name, {"task": "binary-class", "acc": 0.9, "auc": 0.95, "cross_entropy": 0.3})
        return phase_record(acc=0.9, auc=0.95, balanced_acc=0.9, n=40, params=10, train_seconds=1.0,
                            best_monitor_value=0.9, recall=(0.9, 0.9))

    monkeypatch.setattr("kdkeras.workflow.training.run_phase", fake_run_phase)
    runs = tmp_path / "bench"
    result = recipes.run_recipe_benchmark(str(config), [0, 1], runs_dir=str(runs), log=lambda line: None)
    first = list(calls)
    seed0 = [call for call in first if call[2] in (0, 1000, 2000)]
    assert [(name, phase, seed) for name, phase, seed, _, _ in seed0] == [
        ("tiny", "teacher", 0), ("tiny", "student", 0), ("tiny", "distill", 0),
        ("tiny-teacher1", "teacher", 1000), ("tiny-teacher2", "teacher", 2000), ("tiny-ensemble", "distill", 0),
        ("tiny-function_matching", "distill", 0),
        ("tiny-patient", "student", 0), ("tiny-patient", "distill", 0),
    ]
    ensemble = next(call for call in seed0 if call[0] == "tiny-ensemble")
    assert [path.split("/")[-2:] for path in ensemble[3]] == [
        ["tiny", "teacher.keras"], ["tiny-teacher1", "teacher.keras"], ["tiny-teacher2", "teacher.keras"]]
    assert all(path.startswith(str(runs)) for path in ensemble[3])
    assert "baseline" in result["per_seed"]["0"]["patient"] and "baseline" not in result["per_seed"]["0"]["ensemble"]
    assert result["selection"]["candidates"]["current"]["mean"]["n"] == 2
    # A second run trains nothing: every phase's record matches its config.
    recipes.run_recipe_benchmark(str(config), [0, 1], runs_dir=str(runs), log=lambda line: None)
    assert calls == first
    path = recipes.save(result, str(runs))
    text = open(path, encoding="utf-8").read()
    assert text.startswith(f"Chosen on validation (2 seeds): **{result['selection']['chosen']}**.")
    assert "| student alone, patient budget | the baseline |" in text
    assert json.loads((runs / "recipes.json").read_text())["seeds"] == [0, 1]
    benchmarks = report.build_markdown(str(runs))
    assert "## Which recipe: chosen on the validation split" in benchmarks
    assert f"- Recipe, chosen on validation: {result['selection']['chosen']}." in benchmarks
    line = readme._recipes_line(result)  # the README's generated block quotes it
    assert line.startswith("Levers tried beside the shipped recipe, over 2 seeds (BENCHMARKS.md, \"Which recipe\"): "
                           "ensemble, function_matching, patient. Chosen on the validation split: ")
    assert result["selection"]["chosen"] == "current"  # every fake student separates the classes: no AUC gain
    assert " so current stays. The 2-seed figures above are that recipe's. The student alone on patient's budget " \
           "(epochs = 36, schedule = cosine, reduce_lr = 0, early_stopping = 0) reaches test ACC " in line


def test_command_line_refuses_an_unknown_recipe(capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipes.main(["--recipes", "magic"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_test_split_verdicts_are_holm_adjusted_over_every_recipe():
    # Test AUC gains of +0.010, +0.013, +0.007 for each of three recipes: unadjusted p 0.029 each
    # (interval above 0). Holm over the 3 recipes x (ACC, AUC) = 6 tests (the ACC gains are 0, p = 1):
    # the three smallest are equal, so each becomes 6 * 0.029 = 0.172: no recipe is better on test.
    per_seed = {str(seed): _row(0.95, current=0.95 + gain, ensemble=0.95 + gain, patient=0.95 + gain)
                for seed, gain in enumerate((0.010, 0.013, 0.007))}
    result = {"seeds": [0, 1, 2], "per_seed": per_seed,
              "recipes": {name: {"description": name} for name in ("current", "ensemble", "patient")},
              "selection": recipes.select(per_seed, ["current", "ensemble", "patient"]),
              "test": recipes.compare_on_test(per_seed, ["current", "ensemble", "patient"])}
    rows = recipes.gain_rows(result)
    auc = rows[("ensemble", "auc")]
    assert auc["low"] > 0 and auc["p_value"] == pytest.approx(0.0287, abs=1e-4)
    assert auc["p_adjusted"] == pytest.approx(6 * auc["p_value"]) and auc["verdict"] == "no significant difference"
    text = recipes.to_markdown(result)
    assert "Family: every recipe's distilled student minus its student alone on the test split" in text
    assert "+0.0100 (+0.0025 to +0.0175; 3/3; Holm-adjusted p = 0.172): no significant difference |" in text
