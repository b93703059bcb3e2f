"""Config resolution, once, on raw TOML tables: `extends`, then overrides, then inheritance.

1. `read_tables(path)` follows `extends` from the file to its root and lays
   each child over its parent, table by table (`lay_over`). A child table that
   names another `loader`, or says `replace = true`, replaces the parent's
   table instead: TOML cannot delete an inherited key.
2. `resolve(tables, overrides)` applies the dotted-key overrides
   (`{"student.epochs": 3}`) to those tables,
3. then lets `[distill]` take `[student]`'s training budget
   (`INHERITED_BY_DISTILL`) where it does not set a key itself, so an
   override of `student.epochs` reaches the distilled student too.

Every key remembers the file (or override) it came from (`Origins`), so an
error names the file a user must edit.
"""

import copy
import os
import tomllib

from kdkeras.config.paths import resolve_path
from kdkeras.config.schema import INHERITED_BY_DISTILL, ConfigError

# Deeper chains are a mistake (a loop through differently spelled paths, or generated files):
# real configs extend one or two others.
MAX_EXTENDS_DEPTH = 32
# Tables a dotted override may create when the config has none yet.
TABLES = ("data", "teacher", "student", "distill", "sweep", "evaluate")
OVERRIDES = "overrides"  # the origin of an overridden key


class Origins(dict):
    """Where each key came from: `{(table, key): file}`, `table` None for the top level."""

    def where(self, source, table, key):
        """`source`, or `source (from <file>)` when the key was inherited or overridden."""
        origin = self.get((table, key), source)
        if origin == source:
            return source
        return f"{source} ({'set by an override' if origin == OVERRIDES else f'inherited via extends from {origin}'})"


def read_tables(path):
    """The raw tables of config file `path` with its `extends` chain laid under it.

    Returns:
        `(tables, origins)`: the merged TOML data (without `extends`; `name`
        defaults to the file's stem, never the parent's), and an `Origins`.

    Raises:
        ConfigError: for an unreadable file, invalid TOML, an `extends` loop or
            a chain longer than `MAX_EXTENDS_DEPTH`.
    """
    chain = [path]
    files = [_read_toml(path)]
    while "extends" in files[-1]:
        parent = files[-1].pop("extends")
        if not isinstance(parent, str) or not parent:
            raise ConfigError(f"{chain[-1]}: extends = {parent!r} must name an experiment or a .toml path.")
        # A relative path is read beside the file that names it, as an include would be.
        beside = os.path.join(os.path.dirname(chain[-1]), parent)
        parent_path = resolve_path(beside if os.path.exists(beside) else parent)
        seen = [os.path.realpath(p) for p in chain]
        if os.path.realpath(parent_path) in seen:
            loop = " -> ".join((*chain[seen.index(os.path.realpath(parent_path)):], parent_path))
            raise ConfigError(f"{path}: `extends` loops: {loop}. Remove `extends` from one of these files.")
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise ConfigError(
                f"{path}: `extends` chains more than {MAX_EXTENDS_DEPTH} files ({chain[0]} -> ... -> "
                f"{chain[-1]}). Extend a config that holds the shared keys directly."
            )
        chain.append(parent_path)
        files.append(_read_toml(parent_path))
    tables, origins = {}, Origins()
    for file_path, raw in zip(reversed(chain), reversed(files)):
        tables = lay_over(tables, raw, origins, file_path)
    if "name" not in files[0]:
        # A child's runs must not land in its parent's run folder.
        tables["name"] = os.path.splitext(os.path.basename(path))[0]
        origins[(None, "name")] = path
    return tables, origins


def _read_toml(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} line {line}: byte {data[e.start:e.start + 1]!r} is not UTF-8, which TOML "
            "requires. Save the file as UTF-8."
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def lay_over(base, child, origins, child_path):
    """`child`'s tables laid over `base`'s: merged key by key, or replaced.

    A table replaces the parent's when it sets `replace = true` or names a
    different `loader` (another loader takes other arguments); `options`
    tables and non-table values are always replaced.
    """
    merged = dict(base)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(value, dict) and key != "options":
            value = dict(value)
            replace = value.pop("replace", False)
            if not isinstance(replace, bool):
                raise ConfigError(f"{child_path}: [{key}] replace = {replace!r} must be true or false.")
            if replace or not isinstance(old, dict) or value.get("loader", old.get("loader")) != old.get("loader"):
                old = {}
                for stale in [k for k in origins if k[0] == key]:
                    del origins[stale]
            merged[key] = {**old, **value}
            origins.update({(key, k): child_path for k in value})
        else:
            merged[key] = value
            origins[(None, key)] = child_path
    return merged


def resolve(tables, overrides=None, origins=None):
    """Tables with `overrides` applied, then `[distill]`'s inherited budget filled in.

    Args:
        tables: Raw config tables (after `extends`); not modified.
        overrides: Dotted keys to values, e.g. `{"student.epochs": 3}`.
        origins: The `Origins` of `tables`; overridden keys are recorded in it.

    Returns:
        New tables, ready for validation.
    """
    tables = copy.deepcopy(tables)
    origins = Origins() if origins is None else origins
    for dotted, value in (overrides or {}).items():
        node, table = tables, None
        *parents, leaf = dotted.split(".")
        for part in parents:
            if node.get(part) is None and node is tables and part in TABLES:
                node[part] = {}
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"Override {dotted!r}: {part!r} is not a config table.")
            node, table = node[part], part if table is None else table
        node[leaf] = copy.deepcopy(value)
        origins[(table, leaf)] = OVERRIDES
    student, distill = tables.get("student"), tables.get("distill", {})
    if isinstance(student, dict) and isinstance(distill, dict):
        # The distilled student trains on the student's budget unless [distill] says otherwise:
        # a fair comparison by default, and no repeated lines.
        inherited = {k: v for k, v in student.items() if k in INHERITED_BY_DISTILL and k not in distill}
        for key in inherited:
            if ("student", key) in origins:
                origins[("distill", key)] = origins[("student", key)]
        tables["distill"] = {**inherited, **distill}
    return tables
