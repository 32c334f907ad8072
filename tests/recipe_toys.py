"""Toy schema for the recipe loader's tests: a tagged-union family of config dataclasses and a recipe that uses it.

The real schema has no list or union fields yet, so the validator's support for them is exercised here. Tests point
``UNION_FAMILIES["toy"]`` at this module's ``TOYS`` and swap ``Shelf`` in for the loader's ``Recipe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from factory.recipe import Recipe
from factory.registry import Registry

TOYS: Registry[type] = Registry("toy")
BROKEN: Registry[type] = Registry("broken")


@TOYS.register("book")
@dataclass
class Book:
    """A member with a cross-field check."""

    kind: str = "book"
    title: str = ""
    pages: int = 100
    first_page: int = 1
    tags: list[str] = field(default_factory=list)

    def check(self, fail: Callable[[str, str], None]) -> None:
        """The first page must be inside the book."""
        if self.first_page > self.pages:
            fail("first_page", f"got {self.first_page} (expected at most pages, {self.pages})")


@TOYS.register("lamp")
@dataclass
class Lamp:
    """A member without a check."""

    kind: str = "lamp"
    watts: float = 5.0
    colour: Literal["warm", "cold"] = "warm"


@TOYS.register("poster")
@dataclass
class Poster:
    """A member with a required field."""

    image: str
    kind: str = "poster"


@BROKEN.register("plain")
@dataclass
class Plain:
    """Registered without a ``kind`` field: a schema bug the loader refuses."""

    size: int = 1


@dataclass
class Row:
    """A plain nested dataclass, used as a list item."""

    label: str = ""
    width: float = 1.0


@dataclass
class Shelf(Recipe):
    """The real recipe plus list and union fields."""

    sizes: list[int] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    items: list[Any] = field(default_factory=lambda: [Book(title="Dune")], metadata={"union": "toy"})
    light: Any = field(default_factory=Lamp, metadata={"union": "toy"})
    spare: Any | None = field(default=None, metadata={"union": "toy"})
    odd: Any | None = field(default=None, metadata={"union": "broken"})
