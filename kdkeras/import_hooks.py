"""Running code around the import of a module kdkeras does not own (TensorFlow, Keras).

`around_import(name, wrapper)` puts a finder first on `sys.meta_path` that,
asked for `name` once, finds it as the other finders do and runs its module
through `wrapper(exec_module, module)`: kdkeras hides TensorFlow's start-up
lines (`kdkeras.quiet`) and registers with Keras's object registry
(`kdkeras.serializable`) without importing either at `import kdkeras`.
"""

import importlib.abc
import importlib.util
import sys


class _Around(importlib.abc.MetaPathFinder):
    def __init__(self, name, wrapper):
        self.name = name
        self.wrapper = wrapper

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # once: the other finders locate the real module
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module
            spec.loader.exec_module = lambda module: self.wrapper(exec_module, module)
        return spec


def around_import(name, wrapper):
    """Runs the first import of module `name` as `wrapper(exec_module, module)`.

    Args:
        name: Full module name, e.g. `"tensorflow"`; it must not be imported yet.
        wrapper: Callable that must call `exec_module(module)` once.
    """
    if not any(isinstance(f, _Around) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _Around(name, wrapper))
