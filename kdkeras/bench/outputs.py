"""How every benchmark leaves its result: `<name>.json` for the report, `<name>.md` to read.

The names below are where `kdkeras.bench.report` and `kdkeras.bench.readme` read
the results back, relative to the runs folder.
"""

import json
import os

from kdkeras.files import write_text_atomic

SPEED = os.path.join("speed", "speed.json")
SPEED_GPU = os.path.join("speed_gpu", "speed.json")
ACCURACY = "accuracy.json"
TRANSFER = "transfer.json"
DETERMINISM = os.path.join("determinism", "determinism.json")
PIPELINE = "pipeline.md"
RECIPES = "recipes.json"
# Markdown, written whole by `kdkeras.bench.gap` (with the link to its figure under docs/figures).
GAP = os.path.join("gap", "gap.md")
EXPORT = os.path.join("export", "export.json")
# The first line of BENCHMARKS.md; a file without it (or the gap section's markers) is not one.
BENCHMARKS_TITLE = "# kdkeras benchmarks"


def save_result(result, out_dir, name, markdown):
    """Writes `<name>.json` (the result) and `<name>.md` (`markdown`) into `out_dir`, atomically.

    Args:
        result: A JSON-ready dict.
        out_dir: Folder, created if needed.
        name: File stem, e.g. "recipes".
        markdown: The result as markdown.

    Returns:
        The path of the markdown file.
    """
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(os.path.join(out_dir, f"{name}.json"), json.dumps(result, indent=2) + "\n")
    path = os.path.join(out_dir, f"{name}.md")
    write_text_atomic(path, markdown)
    return path


def cpu_model(env):
    """The CPU model name from the environment's `lscpu` text, or "CPU"."""
    for line in (env.get("lscpu") or "").splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "CPU"


def seed_runs_dir(runs_dir, seed):
    """`<runs_dir>/seed<N>`, the folder of one seed's runs, which every benchmark shares.

    Raises:
        ValueError: when `runs_dir` or the seed's folder exists and is not a folder, named at
            once rather than as an unreadable record later.
    """
    path = os.path.join(runs_dir, f"seed{seed}")
    for folder in (runs_dir, path):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--runs-dir: {folder} is a file, not a folder; pass the folder that holds "
                             "(or will hold) the seed<N> run folders, e.g. runs/bench.")
    return path


def read_output(runs_dir, name):
    """The JSON result `name` under `runs_dir`, or None when that benchmark has not run.

    Raises:
        ValueError: for a file that exists but cannot be read.
    """
    path = os.path.join(runs_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is unreadable ({e}); rerun the benchmark that writes it.") from None


def when(result):
    """The day a result was measured, as "on YYYY-MM-DD"."""
    return f"on {result['environment']['date'][:10]}"
