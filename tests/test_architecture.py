"""The library's shape: size limits, import layers, and one home for each default.

Size: modules up to 500 lines, functions up to 80. A function may be longer
when a comment right above its `def` (or its decorators) says why, starting
with `# Long function:`; a module, when one of its lines starts with
`# Long module:`. `KNOWN_EXCEPTIONS` lists code still being split; an entry
that is back within the limits fails the test too, so the list only shrinks.

Imports: `LAYERS` orders the package's groups from the utilities up to the
command line (docs/architecture.md draws it). A module imports only from its
own layer or below, and no chain of imports comes back to where it started;
imports inside functions count, so a late import cannot hide either. The one
import by name is a registry's first lookup (`kdkeras.registry`), which
imports the packages that fill it: that is how the config checks names
without importing the library.

Defaults: each value in `DEFAULTS` is written as a default once in the
package (a parameter default, a module or class constant, or an
`x if x is None else ...` fallback); every other place reads that one.
"""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kdkeras"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
FUNCTION_REASON = "# Long function:"
MODULE_REASON = "# Long module:"

# "path" for a module, "path::qualified.name" for a function.
KNOWN_EXCEPTIONS = {
}


def oversized(package):
    """Every module and function of `package` over the limits without a written reason.

    Args:
        package: Folder of a Python package.

    Returns:
        Sorted keys, `"path"` for a module and `"path::qualified.name"` for a
        function, paths relative to the package's parent, each with its
        length: `{key: lines}`.
    """
    found = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package.parent).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(line.startswith(MODULE_REASON) for line in lines):
            found[name] = len(lines)
        for qualname, node in _functions(ast.parse("\n".join(lines))):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _has_reason(lines, node):
                found[f"{name}::{qualname}"] = length
    return found


def _functions(tree, prefix=""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qualname = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield qualname, node
            yield from _functions(node, f"{qualname}.")


def _has_reason(lines, node):
    """Whether the comment block right above the function (and its decorators) gives a reason."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1  # 0-based line of the def
    above = first - 1
    while above >= 0 and lines[above].strip().startswith("#"):
        text = lines[above].strip()
        if text.startswith(FUNCTION_REASON) and text[len(FUNCTION_REASON):].strip():
            return True
        above -= 1
    return False


def test_no_module_or_function_over_the_limits_without_a_reason():
    found = oversized(PACKAGE)
    new = {key: lines for key, lines in found.items() if key not in KNOWN_EXCEPTIONS}
    assert not new, (
        f"Over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function: {new}. "
        f"Split it, or write why right above the def (`{FUNCTION_REASON} ...`) or in the module "
        f"(`{MODULE_REASON} ...`)."
    )
    fixed = sorted(set(KNOWN_EXCEPTIONS) - set(found))
    assert not fixed, f"Within the limits now: remove {fixed} from KNOWN_EXCEPTIONS."


@pytest.mark.parametrize("reason", ["", "# Long function: one table of 90 rows reads best in one place.\n"])
def test_a_long_function_fails_unless_a_comment_gives_the_reason(tmp_path, reason):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (package / "mod.py").write_text(f"class Model:\n{reason.replace('#', '    #')}    @staticmethod\n    def fit():\n{body}")
    found = oversized(package)
    assert found == ({} if reason else {"pkg/mod.py::Model.fit": MAX_FUNCTION_LINES + 1})


def test_a_long_module_fails_unless_it_gives_the_reason(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized(package) == {"pkg/mod.py": MAX_MODULE_LINES + 1}
    (package / "mod.py").write_text("# Long module: generated table.\n" + "x = 1\n" * MAX_MODULE_LINES)
    assert oversized(package) == {}


# Lowest first. A group is a subpackage or a top-level module; the root
# package `kdkeras` itself is the public facade (its lazy `__getattr__`), so
# inside the package only `from kdkeras import __version__` may name it.
LAYERS = (
    ("utilities", (
        "kdkeras.argtypes", "kdkeras.files", "kdkeras.formatting", "kdkeras.registry", "kdkeras.scores", "kdkeras.runs",
        "kdkeras.records", "kdkeras.quiet", "kdkeras.import_hooks", "kdkeras.serializable",
    )),
    ("statistics and config schema", ("kdkeras.stats", "kdkeras.config")),
    ("data and models", ("kdkeras.data", "kdkeras.models")),
    ("numbers and the Distiller", ("kdkeras.evaluation", "kdkeras.distillation")),
    ("figures, sections and devices", ("kdkeras.reporting", "kdkeras.distribute")),
    ("workflow", ("kdkeras.workflow",)),
    ("products", ("kdkeras.export", "kdkeras.predict", "kdkeras.predict_inputs")),
    ("command line", ("kdkeras.cli", "kdkeras.__main__")),
    ("benchmarks and generated references", ("kdkeras.bench", "kdkeras.reference")),
)
# name, the value, and the word every name it is bound to contains. The
# benchmarks (kdkeras/bench) are not searched: they pin their settings, so a
# changed library default cannot silently change a recorded benchmark.
DEFAULTS = (
    ("distillation temperature", 4.0, "temperature"),
    ("distillation weight alpha", 0.1, "alpha"),
    ("bootstrap resamples", 2000, "resamples"),
    ("calibration bins", 15, "bins"),
)


def modules(package):
    """`{dotted name: path}` of every module of `package`."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(package):
    """`{module: {(imported module, line, inside a function)}}` for imports within `package`.

    `from a import b` counts as importing `a.b` when that is a module, else `a`;
    importing `a.b.c` also runs `a.b`'s `__init__`, so it counts too (a cycle
    through a package's `__init__` is a cycle). The root package is left out:
    its lazy `__getattr__` is the public facade, above everything.
    """
    names = modules(package)
    root = package.name
    graph = {}
    for name, path in names.items():
        graph[name] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, in_function in _imports(tree):
            if name == root and in_function:
                continue
            for target in _targets(node, name, path.name == "__init__.py", names):
                for module in _with_parents(target, name, names):
                    graph[name].add((module, node.lineno, in_function))
    return graph


def _with_parents(target, importer, names):
    """`target` and the packages above it that importing it runs, but not `importer`'s own."""
    parts = target.split(".")
    chain = [".".join(parts[:n]) for n in range(2, len(parts) + 1)]
    return [m for m in chain if m in names and m != importer and not importer.startswith(m + ".")]


def _imports(tree, in_function=False):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        yield from _imports(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _targets(node, name, is_package, names):
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
            base = ".".join(parts + ([node.module] if node.module else []))
        candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
    for candidate in candidates:
        while candidate and candidate not in names:
            candidate = candidate.rpartition(".")[0]
        if candidate:
            yield candidate


def layer_of(module):
    """The index of the layer that holds `module`, or None for the root package."""
    for index, (_, groups) in enumerate(LAYERS):
        if any(module == group or module.startswith(group + ".") for group in groups):
            return index
    return None


def upward_imports(graph):
    """`"a -> b (line n)"` for each import of a module from a higher layer."""
    found = []
    for module, targets in sorted(graph.items()):
        for target, line, in_function in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                late = ", inside a function" if in_function else ""
                found.append(f"{module} -> {target} (line {line}{late}): {LAYERS[low][0]} imports {LAYERS[high][0]}")
    return found


def cycles(graph):
    """Each set of modules that import each other, directly or through others (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target, _, _ in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while module not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def default_literals(package, value, word):
    """`"path:line"` of each place `value` is written as the default of a name containing `word`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "bench":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for bound, default in _bindings(node):
                if word in bound.lower() and _is_literal(default, value):
                    found.append(f"{path.relative_to(package.parent).as_posix()}:{default.lineno}")
    return found


def _bindings(node):
    """(name, default expression) pairs that give a name its default value."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = node.args
        positional = args.posonlyargs + args.args
        yield from zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults)
        yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        yield node.target.id, node.value
    elif isinstance(node, ast.Assign):
        yield from ((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))
    elif isinstance(node, ast.Call) and len(node.args) == 3 and getattr(node.func, "id", None) == "getattr":
        yield from _named_default(node.args[1], node.args[2])  # getattr(obj, "alpha", 0.1)
    elif isinstance(node, ast.Call) and len(node.args) == 2 and getattr(node.func, "attr", None) == "get":
        yield from _named_default(node.args[0], node.args[1])  # options.get("alpha", 0.1)
    elif isinstance(node, ast.IfExp) and isinstance(node.test, ast.Compare):
        # `4.0 if temperature is None else temperature`: a fallback is a default too.
        test = node.test
        if isinstance(test.left, ast.Name) and isinstance(test.ops[0], (ast.Is, ast.IsNot)):
            yield test.left.id, node.body if isinstance(test.ops[0], ast.Is) else node.orelse


def _named_default(key, default):
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        yield key.value, default


def _is_literal(node, value):
    return (
        isinstance(node, ast.Constant)
        and not isinstance(node.value, bool)
        and isinstance(node.value, (int, float))
        and node.value == value
    )


def test_no_import_cycle():
    found = cycles(import_graph(PACKAGE))
    assert not found, (
        f"Modules that import each other: {found}. Move what both need into the lower one "
        "(or a module below both); an import inside a function does not break a cycle."
    )


def test_no_import_from_a_higher_layer():
    found = upward_imports(import_graph(PACKAGE))
    assert not found, "Imports running up the layers (see LAYERS):\n" + "\n".join(found)


def test_every_module_is_in_a_layer():
    unplaced = sorted(m for m in modules(PACKAGE) if m != PACKAGE.name and layer_of(m) is None)
    assert not unplaced, f"Add {unplaced} to a group of LAYERS (and to docs/architecture.md)."


def test_the_root_package_is_imported_only_for_its_version():
    names = modules(PACKAGE)
    found = []
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE.name and not node.level:
                found += [
                    f"{name}:{node.lineno} imports {a.name}" for a in node.names
                    if a.name != "__version__" and f"{PACKAGE.name}.{a.name}" not in names
                ]
    assert not found, f"Import these from their modules, not the lazy facade: {found}."


@pytest.mark.parametrize("name, value, word", DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_each_default_is_written_once(name, value, word):
    found = default_literals(PACKAGE, value, word)
    assert len(found) == 1, (
        f"The {name} default {value!r} is written at {found}: keep one named constant "
        "and read it everywhere else."
    )


def test_the_checks_see_late_imports_cycles_and_fallbacks(tmp_path):
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("def f():\n    from pkg.cli import main\n")
    (package / "cli.py").write_text(
        "from pkg.low import a\n\ndef main(temperature=4.0, **kw):\n"
        "    return g(t=4.0 if temperature is None else temperature, u=kw.get('temperature', 4.0))\n"
    )
    graph = import_graph(package)
    assert graph["pkg.low.a"] == {("pkg.cli", 2, True)}
    assert graph["pkg.cli"] == {("pkg.low", 1, False), ("pkg.low.a", 1, False)}
    assert cycles(graph) == [["pkg.cli", "pkg.low.a"]]
    assert default_literals(package, 4.0, "temperature") == ["pkg/cli.py:3", "pkg/cli.py:4", "pkg/cli.py:4"]


def test_the_architecture_page_matches_the_tree():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)*(?:\.py|/))`", page))
    # A bare file name (`report.py` in the row of reporting/) is looked for anywhere in the package.
    missing = sorted(
        p for p in named
        if not (PACKAGE / p).exists() and not (PACKAGE.parent / p).exists() and ("/" in p or not any(PACKAGE.rglob(p)))
    )
    assert not missing, f"docs/architecture.md names {missing}, which are not in the tree."
    rows = [line for line in page.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(LAYERS), "docs/architecture.md's layer table has one row per LAYERS entry"
    for row, (_, groups) in zip(reversed(rows), LAYERS):
        for group in groups:
            short = group.removeprefix(f"{PACKAGE.name}.")
            assert f"`{short}/`" in row or f"`{short}.py`" in row, f"{group} is not in the row {row!r}"
