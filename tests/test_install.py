"""kdkeras installed from its wheel works outside the clone, as the README tells users.

The test builds the wheel from a copy of the sources (the build writes `build/`
and `*.egg-info` beside them), installs it without dependencies into a fresh
virtualenv that borrows this environment's third-party packages (TensorFlow is
not installed twice, nothing is downloaded), and runs the `kdkeras` console
script from an empty working directory.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What `pip wheel .` reads: setup.cfg names README.md as the long description.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "kdkeras", "experiments")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`(venv_bin, work_dir, wheel)`: kdkeras installed from its wheel into a fresh venv."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        origin = os.path.join(REPO, name)
        if os.path.isdir(origin):
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    wheels = root / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(wheels), str(source)], cwd=root)
    (wheel,) = wheels.glob("kdkeras-*.whl")

    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
    # A plain path line, not a site dir: this environment's own .pth files (an
    # editable kdkeras among them) are not processed, so only the wheel's kdkeras exists.
    pth = os.path.join(purelib.strip(), "borrowed_dependencies.pth")
    with open(pth, "w", encoding="utf-8") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        cwd=root)
    work = root / "work"
    work.mkdir()
    return bin_dir, work, wheel


def run(command, cwd, check=True):
    """Runs `command` without this session's PYTHONPATH; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout if check else result


def test_wheel_carries_every_package_and_the_experiments(installed):
    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {
        os.path.relpath(folder, REPO).replace(os.sep, ".")
        for folder, _, files in os.walk(os.path.join(REPO, "kdkeras"))
        if "__init__.py" in files
    }
    missing = sorted(p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names)
    assert not missing, f"add {missing} to setup.cfg [options] packages"
    experiments = sorted(f for f in os.listdir(os.path.join(REPO, "experiments")) if f.endswith(".toml"))
    assert experiments and all(f"kdkeras/experiments/{f}" in names for f in experiments)
    assert "kdkeras/data/bundled/pneumoniamnist.npz" in names


def test_installed_kdkeras_is_the_wheel_not_the_clone(installed):
    bin_dir, work, _ = installed
    where = run([str(bin_dir / "python"), "-c", "import kdkeras, kdkeras.config as c; "
                 "print(kdkeras.__file__); print(c.search_path())"], cwd=work).splitlines()
    assert where[0].startswith(str(bin_dir.parent)), where
    assert "kdkeras/experiments" in where[1].replace(os.sep, "/")


def test_console_script_lists_models_and_trains_the_quickstart_teacher(installed):
    bin_dir, work, _ = installed
    kdkeras = str(bin_dir / "kdkeras")
    models = run([kdkeras, "models"], cwd=work, check=False)
    assert models.returncode == 0, models.stderr[-3000:]
    assert "cnn_small" in models.stdout and "resnet18" in models.stdout
    assert "oneDNN" not in models.stderr  # TensorFlow's start-up lines stay hidden

    teacher = run([kdkeras, "teacher", "--config", "quickstart", "--limit", "64", "--epochs", "1"], cwd=work,
                  check=False)
    assert teacher.returncode == 0, teacher.stdout[-2000:] + teacher.stderr[-3000:]
    assert "\r" not in teacher.stdout  # not a terminal: one line per epoch, no progress bars
    out = work / "runs" / "quickstart"
    assert (out / "teacher.keras").exists() and (out / "teacher_metrics.json").exists()
    assert not (work / "experiments").exists()  # the config came from the package


def test_a_local_experiments_folder_shadows_the_shipped_one(installed):
    bin_dir, work, _ = installed
    mine = work.parent / "mine"
    (mine / "experiments").mkdir(parents=True)
    (mine / "experiments" / "quickstart.toml").write_text("name = 'mine'\n")
    result = run([str(bin_dir / "python"), "-c", "from kdkeras import config; print(config.resolve_path('quickstart'))"],
                 cwd=mine)
    assert result.strip() == os.path.join(".", "experiments", "quickstart.toml")
