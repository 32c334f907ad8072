"""Recipes: typed, strictly validated YAML that describes one build from data to release.

The schema (one dataclass per section) lives in :mod:`factory.recipe.schema`; reading YAML with locations,
``extends`` and ``--set`` overrides in :mod:`factory.recipe.reading`; validation against the schema with located
errors in :mod:`factory.recipe.loader`.
"""

from factory.recipe.loader import RecipeError, RecipeIssue, load_recipe
from factory.recipe.schema import (
    CompressConfig,
    DataConfig,
    DeployConfig,
    DistillConfig,
    ExportConfig,
    GatesConfig,
    Recipe,
    ReleaseConfig,
    TeacherConfig,
    TrainConfig,
    ValidateConfig,
    WorldConfig,
)

__all__ = [
    "CompressConfig",
    "DataConfig",
    "DeployConfig",
    "DistillConfig",
    "ExportConfig",
    "GatesConfig",
    "Recipe",
    "RecipeError",
    "RecipeIssue",
    "ReleaseConfig",
    "TeacherConfig",
    "TrainConfig",
    "ValidateConfig",
    "WorldConfig",
    "load_recipe",
]
