"""The checks config validation runs on model names and sizes, registered in `kdkeras.registry.CHECKS`.

`kdkeras.config` sits below the model zoo, so it reads these by name instead of
importing `kdkeras.models`.
"""

from kdkeras import registry
from kdkeras.models import applications, hub
from kdkeras.models import files as model_files
from kdkeras.models.registry import get_spec, list_models


@registry.CHECKS.register("model_name")
def model_name_problem(name):
    """Why `name` names no model (a sentence), or None for a model file, a family name or a zoo entry."""
    if model_files.is_model_path(name):
        problem = model_files.check_model_path(name)
        if problem is not None:
            return f"{problem} A model of your own is a .keras or .h5 file or a SavedModel folder."
        return None
    if name.startswith((applications.PREFIX, hub.PREFIX)):
        try:
            get_spec(name)
        except ValueError as error:
            return str(error)
        return None
    if name not in registry.MODELS:
        return (f"is unknown. Allowed: {', '.join(sorted(registry.MODELS.names()))}, keras:<Application>, "
                "hub:<preset> or the path of a model file (`kdkeras list`).")
    return None


@registry.CHECKS.register("model_size")
def model_size_problem(name, size):
    """`(minimum px, [models of the same role that take min(size)])` when `name` needs larger images, else None."""
    if model_files.is_model_path(name):
        return None  # a model file declares its own input, checked when it is loaded
    spec = get_spec(name)
    if min(size) >= spec.min_input_size:
        return None
    fits = [s.name for s in list_models(spec.role) if s.min_input_size <= min(size)]
    return spec.min_input_size, spec.role, fits
