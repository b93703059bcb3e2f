"""The documentation: README length, every code block run or marked, the site's strict build, project files.

A code block of README.md, CONTRIBUTING.md or a page of docs/ has, on the line
above its opening fence, either `<!-- run by tests/<file>.py ... -->` (that test
file exists and names the page) or `<!-- not run: <why> -->`. The blocks this
file runs are below; the README's Python example is run by tests/test_readme.py.
docs/reference/ is generated from the code and tested where it is generated.
"""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest

import kdkeras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
RUN_BY = re.compile(r"^<!-- run by (tests/(?:\w+/)?test_\w+\.py)\b.*-->$")
NOT_RUN = re.compile(r"^<!-- not run: \S.*-->$")
# The public packages, each with an API page built from its docstrings.
API_PACKAGES = (
    "distillation", "models", "data", "workflow", "evaluation", "stats", "export", "reporting", "distribute",
    "config",
)


def doc_pages():
    """Paths, relative to the repository, of the hand-written Markdown pages."""
    pages = ["README.md", "CONTRIBUTING.md"]
    for folder, _, names in os.walk(DOCS):
        if os.path.relpath(folder, DOCS).split(os.sep)[0] == "reference":
            continue
        pages += [os.path.relpath(os.path.join(folder, n), ROOT) for n in sorted(names) if n.endswith(".md")]
    return pages


def code_blocks(page):
    """`(line number, language, marker line, code)` of every fenced block of a page."""
    lines = open(os.path.join(ROOT, page), encoding="utf-8").read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        marker = lines[i - 1].strip() if i else ""
        code = textwrap.dedent("\n".join(lines[i + 1:end])) + "\n"
        blocks.append((i + 1, opening.group(2), marker, code))
        i = end + 1
    return blocks


def blocks_run_by_this_file(page, language):
    return [code for _, lang, marker, code in code_blocks(page)
            if lang == language and RUN_BY.match(marker) and RUN_BY.match(marker).group(1) == "tests/test_docs.py"]


def test_readme_is_short():
    lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference material into docs/."


@pytest.mark.parametrize("page", doc_pages())
def test_every_code_block_is_run_or_says_why_not(page):
    unmarked = []
    for line, _, marker, _ in code_blocks(page):
        run_by = RUN_BY.match(marker)
        if run_by:
            test_file = os.path.join(ROOT, run_by.group(1))
            assert os.path.exists(test_file), f"{page}:{line}: {run_by.group(1)} does not exist"
            assert os.path.basename(page) in open(test_file, encoding="utf-8").read(), (
                f"{page}:{line}: {run_by.group(1)} never names {os.path.basename(page)}"
            )
        elif not NOT_RUN.match(marker):
            unmarked.append(line)
    assert not unmarked, (
        f"{page}: code blocks at lines {unmarked} are neither run by a test nor marked. Put "
        "`<!-- run by tests/<file>.py -->` or `<!-- not run: <why> -->` on the line above each fence."
    )


def test_the_marker_check_catches_an_unmarked_block(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    (tmp_path / "page.md").write_text("Text\n\n```sh\nls\n```\n\n<!-- not run: why -->\n```sh\nls\n```\n")
    with pytest.raises(AssertionError, match=r"lines \[3\] are neither run"):
        test_every_code_block_is_run_or_says_why_not("page.md")


def test_readme_python_block_is_the_one_test_readme_runs():
    (block,) = [b for b in code_blocks("README.md") if b[1] == "python"]
    assert block[2] == "<!-- run by tests/test_readme.py -->"


@pytest.mark.slow
def test_methods_objective_example_runs_in_a_fresh_process(tmp_path):
    """docs/methods.md's weighted-terms example, after `import kdkeras` only, on two small models."""
    (example,) = blocks_run_by_this_file("docs/methods.md", "python")
    script = tmp_path / "example.py"
    script.write_text(
        "import numpy as np\nimport keras\nimport kdkeras\n\n"
        "keras.utils.set_random_seed(0)\n"
        "def small():\n"
        "    return kdkeras.models.get_model('cnn_small', input_shape=(28, 28, 1), num_classes=2, filters=[4, 8, 16])\n"
        "distiller = kdkeras.Distiller(student=small(), teacher=small())\n"
        + example
        + "x = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1)).astype('float32')\n"
        "y = np.array([0, 1] * 8)\n"
        "print(sorted(distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = eval(result.stdout.strip().splitlines()[-1])
    # Two terms: each logs its own loss beside the weighted distillation loss.
    assert {"loss", "student_loss", "distillation_loss", "knowledge_distillation_loss", "dist_loss"} <= set(logs)


def test_experiments_sample_config_is_a_valid_config(tmp_path):
    """docs/experiments.md's commented sample is a complete config that validates as documented."""
    (sample,) = blocks_run_by_this_file("docs/experiments.md", "toml")
    path = tmp_path / "sample.toml"
    path.write_text(sample)
    config = kdkeras.config.load_config(str(path))
    assert (config.name, config.data["loader"], config.teacher.model) == ("quickstart", "medmnist", "resnet18")
    assert (config.distill.alpha, config.distill.temperature, config.distill.objective) == (0.1, 4.0, "hinton")


@pytest.mark.parametrize("page", ["docs/transfer-sets.md", "docs/inference.md"])
def test_config_fragments_extend_the_quickstart(page, tmp_path):
    """A page's TOML fragment, laid over the quickstart, is a valid config that keeps its values."""
    (fragment,) = blocks_run_by_this_file(page, "toml")
    quickstart = os.path.join(ROOT, "experiments", "quickstart.toml")
    head = f'extends = "{quickstart}"\nname = "fragment"\n'
    # Top-level keys must precede the first table of the fragment.
    path = tmp_path / "fragment.toml"
    path.write_text(head + fragment)
    config = kdkeras.config.load_config(str(path))
    if page == "docs/transfer-sets.md":
        assert (config.labeled_fraction, config.distill.transfer_set) == (0.05, "train")
    else:
        assert config.evaluate.operating_point == {"sensitivity": 0.95}
        assert config.evaluate.gradcam_layers == {"teacher": "stage4_block2_out"}


def test_site_lists_every_page_and_an_api_page_per_package():
    yaml = pytest.importorskip("yaml")  # PyYAML comes with mkdocs (the docs and dev extras)
    site = yaml.safe_load(open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8"))

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(site["nav"]))
    on_disk = {
        os.path.relpath(os.path.join(folder, n), DOCS).replace(os.sep, "/")
        for folder, _, names in os.walk(DOCS) for n in names if n.endswith(".md")
    }
    assert on_disk - listed == set(), "pages missing from mkdocs.yml's nav"
    for package in API_PACKAGES:
        text = open(os.path.join(DOCS, "api", f"{package}.md"), encoding="utf-8").read()
        assert f"::: kdkeras.{package}\n" in text


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs and mkdocstrings are not installed: pip install -e '.[docs]'",
)
def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: no broken link, no unrendered docstring, no page outside the nav."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, "\n".join(
        line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line
    )[-4000:]
    api = (tmp_path / "site" / "api" / "distillation" / "index.html").read_text(encoding="utf-8")
    assert "KnowledgeDistillation" in api and "Softening temperature" in api  # rendered from the docstring


def test_license_is_apache_2():
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202
    assert re.search(r"^license = Apache-2.0$", open(os.path.join(ROOT, "setup.cfg")).read(), re.M)


def changelog_versions():
    """`[(version, date or "unreleased"), ...]`, newest first, from CHANGELOG.md's headings."""
    changelog = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    return re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2}|unreleased)$", changelog, re.M)


def test_version_is_the_changelogs_newest_entry():
    # An unreleased entry on top means main carries its development version (PEP 440 `.devN`), so
    # a wheel built from main never claims to be the release before it.
    (newest, date), *_ = changelog_versions()
    expected = rf"{re.escape(newest)}\.dev\d+" if date == "unreleased" else re.escape(newest)
    assert re.fullmatch(expected, kdkeras.__version__), (kdkeras.__version__, newest, date)


def test_citation_file_is_cff_1_2_of_the_newest_release():
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load(open(os.path.join(ROOT, "CITATION.cff"), encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(citation)
    released = [(version, date) for version, date in changelog_versions() if date != "unreleased"]
    assert (str(citation["version"]), str(citation["date-released"])) == released[0]
    assert citation["license"] == "Apache-2.0"


def test_changelog_names_every_moved_module():
    changelog = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    for old, new in kdkeras._MOVED.items():
        assert f"`kdkeras.{old}`" in changelog and f"`{new}`" in changelog, old
