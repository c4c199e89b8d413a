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
from nas_core.genotype import Architecture, BlockSpec, HeadSpec, ModelConfig, TrainingRecipe  # noqa: E402
from nas_core.search import OBJECTIVES, SAMPLERS, SearchConfig, SearchResult, run_search  # noqa: E402
from nas_core.runner import REGISTRY, RunnerSnapshot, SearchRunner, get_registry  # noqa: E402
from nas_core.export import build_model, export_model, load_config, retrain  # noqa: E402

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
