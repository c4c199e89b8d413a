"""What is written down: the architecture JSON (ModelConfig and friends), the objectives, the budget plan.

The bottom layer above errors/registry/blocks: everything else reads and writes these types.
"""

from __future__ import annotations

from nas_core.schema.budget import FINAL_SHARE, BudgetPlan, plan_budget
from nas_core.schema.config import (
    SCHEMA_VERSION,
    Architecture,
    BlockSpec,
    DatasetRef,
    HeadSpec,
    ModelConfig,
    TrainingRecipe,
    parse_augmentation,
)
from nas_core.schema.objectives import OBJECTIVES, Objective

__all__ = [
    "SCHEMA_VERSION",
    "Architecture",
    "BlockSpec",
    "BudgetPlan",
    "DatasetRef",
    "FINAL_SHARE",
    "HeadSpec",
    "ModelConfig",
    "OBJECTIVES",
    "Objective",
    "TrainingRecipe",
    "parse_augmentation",
    "plan_budget",
]
