"""Fixtures of the benchmark tests."""

import pytest


@pytest.fixture
def phase_record():
    """Builds what `kdkeras.workflow.training.run_phase` returns, for a fake phase: the fields the
    benchmarks read, each overridable (`phase_record(acc=0.9, auc=0.97)`)."""
    def build(acc=0.5, auc=0.5, balanced_acc=0.5, n=64, params=162458, train_seconds=2.0, best_monitor_value=0.6,
              recall=(0.7, 0.9)):
        return {"acc": acc, "auc": auc, "balanced_acc": balanced_acc, "n": n, "architecture": "cnn_small",
                "params": params, "train_seconds": train_seconds, "monitor": "val_auc",
                "best_monitor_value": best_monitor_value, "train_images": {"labeled": 64, "unlabeled": 0},
                "steps_per_epoch": 2, "epochs_run": 1, "best_epoch": 1,
                "per_class": [{"name": "normal", "recall": recall[0]}, {"name": "pneumonia", "recall": recall[1]}]}

    return build
