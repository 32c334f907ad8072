"""The files a recipe takes from its user (teacher checkpoints, generators, datasets), and their declared licences.

A release records the licence of each: the factory cannot read a licence off a checkpoint, so the user declares it
in ``release.licences`` under the input's recipe key, and ``release.commercial_use`` refuses a recipe whose inputs
are not all declared as allowing commercial use (:func:`licence_problems`, run by ``factory check`` and every
build).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from factory.recipe.schema import LicenceSpec, Recipe


def supplied_inputs(recipe: Recipe) -> dict[str, str]:
    """Every file the recipe names that carries someone's licence, by its dotted recipe key, in recipe order.

    Fields with ``{"path": True}`` metadata count, unless they are marked ``"licensed": False`` (a taxonomy or a
    group mapping the user writes, a signing key). A field holding several paths gives one key each
    (``teacher.checkpoints.alpha``).
    """
    return _walk(recipe)[0]


def input_fields(recipe: Recipe) -> list[str]:
    """The keys of every licensed path field of the recipe's sections, set or not (``teacher.checkpoints``)."""
    return _walk(recipe)[1]


def _walk(recipe: Recipe) -> tuple[dict[str, str], list[str]]:
    found: dict[str, str] = {}
    fields: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                value, key = getattr(obj, f.name), prefix + f.name
                if f.metadata.get("path"):
                    if f.metadata.get("licensed", True):
                        fields.append(key)
                        found.update(_paths(value, key))
                else:
                    walk(value, key + ".")
        elif isinstance(obj, list):
            for i, item in enumerate(obj):
                walk(item, f"{prefix}{i}.")
        elif isinstance(obj, dict):
            for name, item in obj.items():
                walk(item, f"{prefix}{name}.")

    walk(recipe, "")
    return found, fields


def _paths(value: Any, key: str) -> dict[str, str]:
    if isinstance(value, str):
        return {key: value}
    if isinstance(value, dict):
        return {f"{key}.{k}": v for k, v in value.items() if isinstance(v, str)}
    if isinstance(value, list):
        return {f"{key}.{i}": v for i, v in enumerate(value) if isinstance(v, str)}
    return {}


def declared_licence(licences: dict[str, LicenceSpec], key: str) -> tuple[str, LicenceSpec] | None:
    """The declaration covering input ``key``: its own, or the nearest one above it (``teacher.checkpoints``)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in licences:
            return prefix, licences[prefix]
    return None


def licence_problems(recipe: Recipe) -> list[tuple[str, str]]:
    """``(recipe key, message)`` for each licence declaration or commercial-use claim the recipe cannot make."""
    inputs = supplied_inputs(recipe)
    licences = recipe.release.licences
    problems = []
    # A declaration may name an input the recipe leaves unset (an override switched it off), not a key it cannot
    # hold: that is a typo, and the input it meant would go undeclared.
    keys = [*input_fields(recipe), *inputs]
    for key in licences:
        if not any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in keys):
            known = ", ".join(dict.fromkeys(keys)) or "none"
            problems.append((f"release.licences.{key}", f"not an input this recipe can take (its inputs: {known})"))
    if recipe.release.commercial_use:
        undeclared = []
        for key in inputs:
            declared = declared_licence(licences, key)
            if declared is None:
                undeclared.append(key)
            elif not declared[1].commercial:
                problems.append(
                    (
                        f"release.licences.{declared[0]}",
                        f"{declared[1].licence} does not allow commercial use, and release.commercial_use is true "
                        f"(expected an input whose licence allows it, or commercial_use: false)",
                    )
                )
        if undeclared:
            problems.append(
                (
                    "release.commercial_use",
                    f"true, but the licence of {', '.join(undeclared)} is not declared (expected release.licences "
                    "to say, for each, whether it allows commercial use)",
                )
            )
    return problems


def licence_record(recipe: Recipe) -> dict[str, Any]:
    """What the manifest records: intended commercial use and, per input, its file and declared licence."""
    licences = recipe.release.licences
    inputs = {}
    for key, path in supplied_inputs(recipe).items():
        declared = declared_licence(licences, key)
        spec = None if declared is None else dataclasses.asdict(declared[1])
        inputs[key] = {"path": path, "licence": spec}
    return {"commercial_use": recipe.release.commercial_use, "model_licence": recipe.release.licence, "inputs": inputs}
