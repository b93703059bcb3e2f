"""Files kdkeras saves load in a fresh process after `import keras, kdkeras`, and that import stays light."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import serializable
from kdkeras.models import get_model

PACKAGE = pathlib.Path(kdkeras.__file__).parent
# Classes whose constructor needs arguments; every other registered class is built with none.
ARGUMENTS = {
    "kdkeras>FeatureMatch": {"student_layer": "s", "teacher_layer": "t"},
    "kdkeras>FunctionLoss": {"fn": keras.losses.mean_squared_error},  # a Keras function survives a save
    "kdkeras>LogitsAUC": {"num_classes": 3},
    "kdkeras>ApplicationPreprocessing": {"family": "densenet"},
    "kdkeras>InputView": {"target_shape": (16, 16, 1)},
}
SAVED_AS_FILE = {"kdkeras>Distiller"}  # a whole model: round-tripped as a .keras file below


def _fresh_python(code, tmp_path):
    """Runs `code` in a new interpreter that imports this checkout's kdkeras; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_serializable_modules_list_every_module_that_registers_a_class():
    registering = set()
    for path in PACKAGE.rglob("*.py"):
        decorators = [d for node in ast.walk(ast.parse(path.read_text())) for d in getattr(node, "decorator_list", ())]
        if any("register_keras_serializable" in ast.unparse(d) for d in decorators):
            registering.add(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    assert registering == set(serializable.MODULES)


def test_lookup_of_a_kdkeras_name_imports_the_registering_modules(monkeypatch):
    calls = []
    monkeypatch.setattr(serializable, "register_all", lambda: calls.append(1))
    lookup = serializable._RegisteringDict({"kdkeras>Known": object})
    assert "kdkeras>Known" in lookup and calls == []
    assert "other>Missing" not in lookup and calls == []
    assert "kdkeras>Missing" not in lookup and calls == [1]


def test_import_kdkeras_imports_neither_keras_nor_tensorflow(tmp_path):
    out = _fresh_python(
        "import sys, kdkeras; print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))",
        tmp_path,
    )
    assert out.strip() == "[]"


def _registered_objects():
    serializable.register_all()
    names = sorted(n for n in keras.saving.get_custom_objects() if n.startswith(serializable.PREFIX))
    objects = {}
    for name in names:
        if name not in SAVED_AS_FILE:
            cls = keras.saving.get_registered_object(name)
            objects[name] = keras.saving.serialize_keras_object(cls(**ARGUMENTS.get(name, {})))
    return names, objects


@pytest.mark.slow
def test_every_saved_kind_loads_after_import_keras_kdkeras(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    labels = np.arange(8) % 2
    student = get_model("dsnet", (32, 32, 1), num_classes=2)
    teacher = get_model("mobilenetv2_tiny", (32, 32, 1), num_classes=2)  # the larger at 32 px
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="adam", distillation_terms=["knowledge_distillation", "dist"])
    distiller.fit(images, labels, epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    student.save(tmp_path / "student.keras")
    teacher.save(tmp_path / "teacher.keras")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", student.predict(images, verbose=0))
    names, objects = _registered_objects()
    (tmp_path / "objects.json").write_text(json.dumps(objects))

    out = _fresh_python(
        "import json, keras, kdkeras, numpy as np\n"
        "loaded = {n: keras.saving.deserialize_keras_object(c) for n, c in json.load(open('objects.json')).items()}\n"
        "d = keras.models.load_model('distiller.keras')\n"
        "s = keras.models.load_model('student.keras')\n"
        "t = keras.models.load_model('teacher.keras')\n"
        "x = np.load('images.npy')\n"
        "print(json.dumps({'objects': {n: type(o).__name__ for n, o in loaded.items()},\n"
        "  'distiller': type(d).__name__, 'teacher': t.name,\n"
        "  'gap': float(np.abs(s.predict(x, verbose=0) - np.load('expected.npy')).max()),\n"
        "  'distilled_gap': float(np.abs(d.student.predict(x, verbose=0) - np.load('expected.npy')).max())}))\n",
        tmp_path,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["objects"] == {name: name.split(">")[1] for name in objects}
    assert set(result["objects"]) | SAVED_AS_FILE == set(names)
    assert result["distiller"] == "Distiller"
    assert result["teacher"] == teacher.name
    assert result["gap"] < 1e-5 and result["distilled_gap"] < 1e-5
