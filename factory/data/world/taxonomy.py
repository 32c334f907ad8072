"""The group taxonomy of the procedural face world: how each group's identities look, vary and are photographed.

A taxonomy is a YAML file (the built-in one is ``procedural.yaml`` next to this module, :data:`DEFAULT_TAXONOMY`)
with a ``defaults`` block and a ``groups`` list. Per group it sets the mean and spread of every identity attribute
(:data:`FEATURES`, skin/hair/iris :data:`COLOURS`) and the strength of every capture nuisance (:data:`NUISANCES`);
the renderer's ``mapping`` turns those into the distribution of ``w`` per group. :func:`load_taxonomy` validates the
file strictly, so a typo names its file and dotted key instead of silently falling back to a default.

How hard a group is to recognise is data too, three knobs per group (:data:`DIFFICULTY_KNOBS`): ``nuisance``
(capture conditions), ``identity_spread`` (how different its people are from each other) and ``within_identity``
(how different one person looks from photo to photo). :func:`apply_difficulty` changes them on top of a taxonomy,
which is how a recipe builds a world where one group is harder by a known amount.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

DEFAULT_TAXONOMY = Path(__file__).parent / "procedural.yaml"

# Identity features: name -> (fallback mean, fallback std, lowest, highest). The fallback mean/std also define the
# units of w (w = (value - mean) / std), so w is "typical identity deviations", whatever the taxonomy says.
FEATURES: dict[str, tuple[float, float, float, float]] = {
    "face_width": (37.0, 1.8, 30.0, 44.0),  # half-width of the face ellipse
    "face_height": (49.0, 2.0, 42.0, 56.0),  # half-height
    "face_centre_y": (58.0, 1.2, 54.0, 62.0),
    "jaw": (0.30, 0.10, 0.0, 0.6),  # narrowing of the face towards the chin (fraction of the width)
    "ear_size": (7.0, 1.0, 4.0, 10.0),
    "eye_width": (5.6, 0.5, 4.0, 7.5),  # half-width of the eye opening
    "eye_aspect": (0.50, 0.07, 0.25, 0.8),  # opening height / half-width
    "eye_spacing": (0.0, 0.8, -2.5, 2.5),  # offset of each eye from the template, outwards
    "eye_height": (0.0, 0.7, -2.0, 2.0),
    "eye_tilt": (0.0, 0.07, -0.25, 0.25),  # slope, outer corner up
    "iris_size": (0.58, 0.05, 0.4, 0.75),  # iris radius / eye half-width
    "brow_height": (9.0, 1.2, 5.5, 13.0),  # above the eye centre
    "brow_thickness": (2.3, 0.5, 1.0, 4.5),
    "brow_length": (1.25, 0.15, 0.8, 1.7),  # half-length / eye half-width
    "brow_arch": (1.5, 0.7, -0.5, 3.5),
    "brow_tilt": (0.0, 0.08, -0.3, 0.3),
    "nose_width": (5.5, 0.8, 3.5, 8.5),  # nostril half-spacing
    "nose_length": (15.0, 2.0, 9.0, 21.0),  # bridge length above the tip
    "nose_tip": (0.0, 1.0, -3.0, 3.0),
    "nostril_size": (1.0, 0.15, 0.6, 1.5),
    "mouth_width": (14.0, 1.3, 10.0, 18.0),  # half-width
    "mouth_height": (0.0, 1.0, -3.0, 3.0),
    "lip_upper": (2.2, 0.5, 0.8, 4.5),
    "lip_lower": (3.0, 0.6, 1.0, 5.5),
    "smile": (0.0, 0.7, -2.0, 2.0),  # resting mouth-corner lift
    "lip_tint": (0.0, 1.0, -2.5, 2.5),  # redder (+) or browner (-) lips
    "hairline": (24.0, 3.5, 8.0, 34.0),  # y of the front hairline at the centre; near the top = bald
    "hair_volume": (5.0, 2.0, 0.0, 12.0),
    "hair_length": (50.0, 14.0, 30.0, 112.0),  # y where side hair ends
    "hair_droop": (8.0, 3.0, 0.0, 20.0),  # how far the hairline falls towards the temples
    "fringe": (0.0, 1.0, -2.0, 2.0),  # wavy bangs (amplitude)
    "parting": (0.0, 1.0, -2.5, 2.5),  # asymmetric hairline
    "beard": (-1.2, 0.8, -3.0, 1.5),  # density = max(beard, 0)
    "freckles": (-1.0, 0.8, -3.0, 1.5),  # density = max(freckles, 0)
    "blush": (0.12, 0.06, 0.0, 0.4),
    "mole_size": (-0.6, 1.0, -3.0, 2.0),  # radius = 1.2 * max(mole_size, 0)
    "mole_x": (0.0, 14.0, -28.0, 28.0),
    "mole_y": (78.0, 10.0, 60.0, 100.0),
}
COLOURS = ("skin", "hair", "iris")
NUISANCES = ("pose", "expression", "lighting", "colour_cast", "blur", "background", "noise")
# The keys of a group that say how hard it is; everything else says how it looks.
DIFFICULTY_KNOBS = ("nuisance", "identity_spread", "within_identity")


@dataclass(frozen=True)
class ColourSpec:
    """Distribution of one colour over a group's identities (0..255 RGB units)."""

    mean_rgb: tuple[float, float, float]
    lightness_std: float
    warmth_std: float
    tint_std: float


@dataclass(frozen=True)
class GroupSpec:
    """One demographic group of the procedural world: how its identities look, vary and are photographed.

    Attributes:
        name: neutral group name (used in benchmark files, keys and reports).
        colours: skin/hair/iris colour distributions.
        features: ``name -> (mean, std)`` per identity feature (see :data:`FEATURES`).
        identity_spread: multiplies every identity standard deviation (< 1: identities look more alike).
        nuisance: multipliers of the base nuisance strengths (see :data:`NUISANCES`).
        nuisance_spread: per-identity standard deviation of those multipliers (and of ``within_identity``).
        within_identity: per-image jitter of the identity attributes, as a fraction of the world's typical
            spread between identities of each attribute (0: a person's attributes are the same in every photo).
    """

    name: str
    colours: Mapping[str, ColourSpec] = field(hash=False)
    features: Mapping[str, tuple[float, float]] = field(hash=False)
    identity_spread: float = 1.0
    nuisance: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(NUISANCES, 1.0), hash=False)
    nuisance_spread: float = 0.1
    within_identity: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (for provenance records)."""
        return {
            "name": self.name,
            "identity_spread": self.identity_spread,
            "nuisance_spread": self.nuisance_spread,
            "within_identity": self.within_identity,
            "colours": {
                k: {
                    "mean_rgb": list(c.mean_rgb),
                    "lightness_std": c.lightness_std,
                    "warmth_std": c.warmth_std,
                    "tint_std": c.tint_std,
                }
                for k, c in self.colours.items()
            },
            "features": {k: list(v) for k, v in self.features.items()},
            "nuisance": dict(self.nuisance),
        }


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message names the file and the dotted key."""


_REPR = reprlib.Repr()
# A few items, two levels: an aliased YAML value (anchors within anchors) has an exponentially long full repr.
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def _shown(value: Any) -> str:
    return _REPR.repr(value)


def _number(value: Any, where: str, path: Path, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaxonomyError(f"{path}: {where}: expected a number, got {_shown(value)}")
    if not math.isfinite(value):  # YAML reads .nan and .inf as floats; either would poison every face rendered
        raise TaxonomyError(f"{path}: {where}: expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise TaxonomyError(f"{path}: {where}: must be >= {minimum}, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str, path: Path, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaxonomyError(f"{path}: {where}: expected a mapping, got {type(value).__name__}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise TaxonomyError(f"{path}: {where}.{key}: unknown key (expected one of {', '.join(allowed)})")
    return value


_SECTION_KEYS = ("identity_spread", "nuisance_spread", "within_identity", "colours", "features", "nuisance")
_COLOUR_KEYS = ("mean_rgb", "lightness_std", "warmth_std", "tint_std")


def _merge_section(base: dict[str, Any], raw: Any, where: str, path: Path) -> dict[str, Any]:
    """``base`` updated with one validated ``defaults`` or group block (group values win key by key)."""
    raw = _mapping(raw, where, path, _SECTION_KEYS + (("name",) if where.startswith("groups") else ()))
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key in ("identity_spread", "nuisance_spread", "within_identity"):
        if key in raw:
            out[key] = _number(raw[key], f"{where}.{key}", path, minimum=0.0)
    colours = _mapping(raw.get("colours"), f"{where}.colours", path, COLOURS)
    for name, spec in colours.items():
        at = f"{where}.colours.{name}"
        spec = _mapping(spec, at, path, _COLOUR_KEYS)
        merged = dict(out["colours"].get(name, {}))
        for key, value in spec.items():
            if key == "mean_rgb":
                if not isinstance(value, list) or len(value) != 3:
                    raise TaxonomyError(f"{path}: {at}.mean_rgb: expected [r, g, b], got {_shown(value)}")
                merged[key] = tuple(_number(v, f"{at}.mean_rgb", path, minimum=0.0) for v in value)
            else:
                merged[key] = _number(value, f"{at}.{key}", path, minimum=0.0)
        out["colours"][name] = merged
    for name, value in _mapping(raw.get("features"), f"{where}.features", path, tuple(FEATURES)).items():
        at = f"{where}.features.{name}"
        if not isinstance(value, list) or len(value) != 2:
            raise TaxonomyError(f"{path}: {at}: expected [mean, std], got {_shown(value)}")
        out["features"][name] = (_number(value[0], at, path), _number(value[1], at, path, minimum=0.0))
    for name, value in _mapping(raw.get("nuisance"), f"{where}.nuisance", path, NUISANCES).items():
        out["nuisance"][name] = _number(value, f"{where}.nuisance.{name}", path, minimum=0.0)
    return out


def load_taxonomy(path: str | Path | None = None) -> list[GroupSpec]:
    """Read a group taxonomy (default: the built-in ``factory/data/world/procedural.yaml``).

    The file has a ``defaults`` block and a ``groups`` list; each group overrides any subset of the defaults, and
    any feature left out everywhere falls back to the renderer's own (:data:`FEATURES`).

    Args:
        path: YAML file; ``None`` for the built-in taxonomy.

    Returns:
        The groups, in file order (this order is the group index used everywhere).

    Raises:
        FileNotFoundError: the file does not exist.
        TaxonomyError: invalid YAML or an unknown/ill-typed key; the message names the file and the dotted key.
    """
    path = Path(path) if path is not None else DEFAULT_TAXONOMY
    if not path.is_file():
        raise FileNotFoundError(f"taxonomy file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TaxonomyError(f"{path}: not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text: byte at offset {err.start} (expected a UTF-8 YAML file)"
        raise TaxonomyError(f"{path}: {problem}") from None
    except RecursionError:  # the YAML composer recurses once per nesting level
        raise TaxonomyError(f"{path}: nested too deeply to read (expected a taxonomy)") from None
    doc = _mapping(doc, "(top level)", path, ("defaults", "groups"))
    base: dict[str, Any] = {
        "identity_spread": 1.0,
        "nuisance_spread": 0.1,
        "within_identity": 0.0,
        "colours": {},
        "features": {k: (v[0], v[1]) for k, v in FEATURES.items()},
        "nuisance": dict.fromkeys(NUISANCES, 1.0),
    }
    base = _merge_section(base, doc.get("defaults"), "defaults", path)
    groups_raw = doc.get("groups")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise TaxonomyError(f"{path}: groups: expected a non-empty list of groups")
    groups: list[GroupSpec] = []
    for i, raw in enumerate(groups_raw):
        where = f"groups[{i}]"
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name.isidentifier():
            raise TaxonomyError(f"{path}: {where}.name: expected an identifier-like string, got {_shown(name)}")
        if any(g.name == name for g in groups):
            raise TaxonomyError(f"{path}: {where}.name: duplicate group name {name!r}")
        merged = _merge_section(base, raw, where, path)
        colours = {}
        for colour in COLOURS:
            spec = merged["colours"].get(colour, {})
            missing = [k for k in _COLOUR_KEYS if k not in spec]
            if missing:
                raise TaxonomyError(f"{path}: {where}.colours.{colour}: missing {', '.join(missing)}")
            colours[colour] = ColourSpec(**spec)
        groups.append(
            GroupSpec(
                name=name,
                colours=colours,
                features=merged["features"],
                identity_spread=merged["identity_spread"],
                nuisance=merged["nuisance"],
                nuisance_spread=merged["nuisance_spread"],
                within_identity=merged["within_identity"],
            )
        )
    return groups


class DifficultyChange(Protocol):
    """How much harder one group is made (the recipe's ``data.world.difficulty.<group>``, any object with these)."""

    nuisance: float  # multiplies every nuisance strength of the group
    identity_spread: float  # multiplies the group's identity spread
    within_identity: float  # standard deviation of an extra, independent per-image jitter


def apply_difficulty(groups: list[GroupSpec], changes: Mapping[str, DifficultyChange]) -> list[GroupSpec]:
    """``groups`` with some made harder (or easier) by known amounts; the others are returned unchanged.

    ``nuisance`` and ``identity_spread`` multiply the taxonomy's values. ``within_identity`` is the size of a
    jitter drawn independently of the taxonomy's own, so the two add in variance: the group's jitter becomes
    ``sqrt(taxonomy² + change²)`` (equal to the change when the taxonomy declares none).

    Raises:
        ValueError: a change names a group the taxonomy does not have (the message lists the groups it has), or a
            multiplier is negative (a spread must also stay above 0).
    """
    known = [g.name for g in groups]
    unknown = [name for name in changes if name not in known]
    if unknown:
        raise ValueError(f"no group {', '.join(map(repr, unknown))} in the taxonomy (groups: {', '.join(known)})")
    out = []
    for spec in groups:
        change = changes.get(spec.name)
        if change is None:
            out.append(spec)
            continue
        if change.nuisance < 0 or change.identity_spread <= 0 or change.within_identity < 0:
            raise ValueError(
                f"difficulty of {spec.name!r}: nuisance {change.nuisance!r}, identity_spread "
                f"{change.identity_spread!r}, within_identity {change.within_identity!r} (expected >= 0, > 0, >= 0)"
            )
        out.append(
            replace(
                spec,
                nuisance={k: v * change.nuisance for k, v in spec.nuisance.items()},
                identity_spread=spec.identity_spread * change.identity_spread,
                within_identity=math.hypot(spec.within_identity, change.within_identity),
            )
        )
    return out
