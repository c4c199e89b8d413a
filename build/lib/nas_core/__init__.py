"""MoCA-NAS engine: multi-objective architecture search over modular blocks, usable without Streamlit.

Example::

    from nas_core import SearchConfig, run_search, load_config, build_model

    result = run_search(SearchConfig(dataset="digits", trials=5, workspace="moca_runs"))
    model = build_model(load_config(result.best_config))
"""

from __future__ import annotations

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
    **dict.fromkeys(("Architecture", "BlockSpec", "HeadSpec", "ModelConfig", "TrainingRecipe"), "nas_core.genotype"),
    **dict.fromkeys(("OBJECTIVES", "SAMPLERS", "SearchConfig", "SearchResult", "run_search"), "nas_core.search"),
    **dict.fromkeys(("REGISTRY", "RunnerSnapshot", "SearchRunner", "get_registry"), "nas_core.runner"),
    **dict.fromkeys(("build_model", "export_model", "load_config", "retrain"), "nas_core.export"),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nas_core' has no attribute {name!r}")
    import importlib

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
