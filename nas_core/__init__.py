"""MoCA-NAS engine: multi-objective architecture search over modular blocks, usable without Streamlit.

Example::

    from nas_core import SearchConfig, run_search, load_config, build_model

    result = run_search(SearchConfig(dataset="digits", trials=5, workspace="moca_runs"))
    model = build_model(load_config(result.best_config))
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

__version__ = "0.1.0"

from nas_core.errors import (  # noqa: E402
    ConfigError,
    DatasetError,
    ExportError,
    LibraryError,
    NasCoreError,
    RegistryError,
    SearchBusyError,
    SearchSpaceError,
    TunnelError,
)

# The rest of the public API loads on first use (PEP 562): ``python -m nas_core`` must install its
# Ctrl-C/SIGTERM handlers before torch is imported, so a signal during start-up is a clean stop too.
_LAZY = {
    **dict.fromkeys(("Architecture", "BlockSpec", "HeadSpec", "ModelConfig", "TrainingRecipe"), "nas_core.schema.config"),
    "OBJECTIVES": "nas_core.schema.objectives",
    **dict.fromkeys(("SAMPLERS", "SearchConfig", "SearchResult", "run_search"), "nas_core.search"),
    **dict.fromkeys(("REGISTRY", "RunnerSnapshot", "SearchRunner", "get_registry"), "nas_core.jobs"),
    **dict.fromkeys(("build_model", "load_config"), "nas_core.deploy.config"),
    "export_model": "nas_core.deploy.exporters",
    "retrain": "nas_core.deploy.retraining",
}

# Modules that moved when the flat package became subpackages: the old dotted path imports the new module
# itself (same object, so attributes and monkeypatching behave as before). evaluate.py and export.py, split
# across several subpackages, are re-exporting modules of their own.
_MOVED = {
    "nas_core.genotype": "nas_core.schema.config",
    "nas_core.budget": "nas_core.schema.budget",
    "nas_core.faults": "nas_core.workspace.faults",
    "nas_core.owners": "nas_core.workspace.owners",
    "nas_core.assemble": "nas_core.model.assembly",
    "nas_core.recipes": "nas_core.training.recipes",
    "nas_core.pareto": "nas_core.results.pareto",
    "nas_core.moca": "nas_core.fidelities.cached",
    "nas_core.proxies": "nas_core.fidelities.zero_cost",
    "nas_core.mo_pruning": "nas_core.search.mo_pruning",
    "nas_core.seeds": "nas_core.search.seeds",
    "nas_core.claims": "nas_core.search.claims",
    "nas_core.workers": "nas_core.search.workers",
    "nas_core.final_training": "nas_core.search.final_training",
    "nas_core.runner": "nas_core.jobs",
    "nas_core.dashboard": "nas_core.views",
    "nas_core.tunnel": "nas_core.serve",
    "nas_core.storages": "nas_core.workspace.storage",
    "nas_core.workspace_config": "nas_core.workspace.config",
    "nas_core.fleet": "nas_core.views.fleet",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path (``nas_core.moca``) to the module that now holds its code."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(_MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import machinery sets the alias spec on it; exec_module puts it back
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the new module is already imported."""
        alias = module.__spec__
        if alias is not None and alias.loader_state is not None:
            module.__spec__ = alias.loader_state


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name: str) -> object:
    if f"nas_core.{name}" in _MOVED:  # ``nas_core.moca`` as an attribute, before anything imported it
        return importlib.import_module(f"nas_core.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nas_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "__version__",
    "Architecture",
    "BlockSpec",
    "ConfigError",
    "DatasetError",
    "ExportError",
    "HeadSpec",
    "LibraryError",
    "ModelConfig",
    "NasCoreError",
    "OBJECTIVES",
    "REGISTRY",
    "RegistryError",
    "RunnerSnapshot",
    "SAMPLERS",
    "SearchBusyError",
    "SearchConfig",
    "SearchResult",
    "SearchRunner",
    "SearchSpaceError",
    "TrainingRecipe",
    "TunnelError",
    "build_model",
    "export_model",
    "get_registry",
    "load_config",
    "retrain",
    "run_search",
]
