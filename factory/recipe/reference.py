"""The recipe reference: Markdown generated from the schema, checked in as ``recipes/REFERENCE.md``.

Every dataclass reachable from :class:`~factory.recipe.schema.Recipe` gets a section headed by its dotted key, in
recipe order, with one table row per key: its type, its default as YAML shows it, the constraint its field metadata
sets (in the words the loader's error messages use) and the comments written above and beside the field in the
source. Tagged unions (``{kind: ..., ...}``) list every registered kind with its own settings, ``{"registry": F}``
fields the names registered in ``F``, and the deploy target file schema (:mod:`factory.recipe.targets`) follows.
Nothing is written by hand here: a new field, comment or registered kind shows up when the reference is regenerated,
and ``tests/test_recipe_reference.py`` fails while the checked-in file is stale.

Regenerate with ``python -m factory.recipe.reference`` (``make docs``); ``--check`` only compares.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from factory.recipe.loader import UNION_FAMILIES
from factory.recipe.schema import Range, Recipe
from factory.recipe.targets import TargetConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "recipes" / "REFERENCE.md"
COMMAND = "python -m factory.recipe.reference"

_INTRO = (
    "A recipe is a YAML file (`factory build RECIPE`, `factory check RECIPE`); each section below is one mapping of "
    "it, headed by its dotted key, and each row one key of that mapping. A key left out takes its default; "
    "`required` marks one without. `*` in a heading stands for any name of a mapping or any item of a list. A link "
    "in the type column leads to a nested mapping's section, to the kinds a `{kind: ..., ...}` mapping can take, or "
    "to the names a key accepts. The constraint is what `factory check` enforces on each value (on each item of a "
    "list); settings that are checked together are named under a section's text."
)

_COMMENT_FREE = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
_BASE_TYPES = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null"}


@dataclass(frozen=True)
class Root:
    """One dataclass tree of the reference: a part of the document with its own heading."""

    part: str  # the part's heading, e.g. "Recipe"
    intro: str  # Markdown under the part's heading
    cls: type  # the top-level dataclass
    prefix: str = ""  # Markdown naming the file its keys live in ("" for the recipe), e.g. "Target file"
    top: str = "Top level"  # heading of the top-level section when ``prefix`` is empty


@dataclass
class _Node:
    """One section: a dataclass at a dotted path, with the instance its defaults come from (None: the class's)."""

    cls: type
    instance: Any
    prefix: str
    path: str
    top: str
    children: dict[str, _Node] = field(default_factory=dict)
    canonical: _Node | None = None  # an identical section shown instead of this one
    also: list[str] = field(default_factory=list)  # where else an identical section applies

    @property
    def label(self) -> str:
        return _label(self.prefix, self.path) if (self.prefix or self.path) else self.top

    @property
    def shown(self) -> _Node:
        return self.canonical or self


def _label(prefix: str, path: str) -> str:
    """How a key is named in the text: ```data.world``` in a recipe, ``Target file: `transport` ``."""
    if not prefix:
        return f"`{path}`"
    return f"{prefix}: `{path}`" if path else prefix


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------------------------------------------
# What the source says: docstrings and field comments
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _source_notes(cls: type) -> tuple[str, dict[str, str]]:
    """The class's own docstring, and the comment of each field it declares (lines above, then same-line ones)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is kept (an interactive session)
        return "", {}
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef):
        return "", {}
    comments: dict[int, str] = {}
    code: set[int] = set()  # lines holding code (a multi-line string covers each of its lines)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in _COMMENT_FREE:
            code.update(range(tok.start[0], tok.end[0] + 1))
    notes: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above, line = [], stmt.lineno - 1
        while line in comments and line not in code:
            above.insert(0, comments[line])
            line -= 1
        beside = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in comments]
        notes[stmt.target.id] = " ".join(text for text in above + beside if text)
    return ast.get_docstring(node) or "", notes


def _field_note(cls: type, name: str) -> str:
    """The comment of field ``name``, from the class of ``cls``'s MRO that declares it."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return _source_notes(klass)[1].get(name, "")
    return ""


def _doc(obj: Any) -> str:
    """The docstring ``obj`` itself has (never a dataclass's generated signature, never a base class's)."""
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        return _source_notes(obj)[0]
    return inspect.cleandoc(obj.__doc__) if isinstance(getattr(obj, "__doc__", None), str) else ""


def _paragraphs(text: str) -> list[str]:
    """Docstring paragraphs, each on one line (a bullet list keeps a line per item)."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if lines[0].startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.startswith("- ") or not items:
                    items.append(line)
                else:
                    items[-1] += " " + line
            out.append("\n".join(_markdown(i) for i in items))
        else:
            out.append(_markdown(" ".join(lines)))
    return out


def _markdown(text: str) -> str:
    """Docstring or comment text as Markdown: reST roles and double backticks become code, the rest is escaped."""
    text = re.sub(r":[a-z]+:`~([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", text)  # ~ shows the last part
    text = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", text)
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(
        p if p.startswith("`") else p.replace("<", "&lt;").replace("*", r"\*").replace("~", r"\~") for p in parts
    )


# --------------------------------------------------------------------------------------------------------------
# Types, defaults and constraints as a reader sees them
# --------------------------------------------------------------------------------------------------------------


def _registry(family: str) -> Any:
    module, attribute = UNION_FAMILIES[family]
    return getattr(importlib.import_module(module), attribute)


def _nested(tp: Any) -> tuple[type | None, bool]:
    """The dataclass a field's type holds (itself, a union's alternative, a list's item, a dict's value).

    Returns:
        The dataclass (or None), and whether it sits in a container (its key then reads ``key.*``).
    """
    if dataclasses.is_dataclass(tp):
        return tp, False
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        found = [a for a in args if dataclasses.is_dataclass(a)]
        return (found[0] if found else None), False
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1], True
    return None, False


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def yaml_text(value: Any) -> str:
    """A value as YAML writes it on one line: ``0.001``, ``null``, ``[1]``, ``{kind: onnx, opset: 18}``."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, sort_keys=False, width=1 << 30, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


_REQUIRED = object()


def _default(f: dataclasses.Field, instance: Any) -> Any:
    """The value a field takes when a recipe leaves it out (a union's default is given as plain data)."""
    if "default" in f.metadata:
        return f.metadata["default"]
    if instance is not None:
        return getattr(instance, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _REQUIRED


def _defaults(cls: type, instance: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.init:
            value = _default(f, instance)
            out[f.name] = "<required>" if value is _REQUIRED else _plain(value)
    return out


class _Symbol:
    """A bound given as a function (the CPUs of this machine), shown as ``low`` or ``high``, never evaluated.

    The range's ``note`` says what it stands for (``{high} is the number of CPUs this process may use``), and the
    reference reads the same on every machine.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def range_text(rng: Range, integer: bool) -> str:
    """:meth:`Range.describe`, a bound given as a function shown as ``low`` or ``high``."""
    symbolic = {
        key: (lambda name=("low" if key[0] == "g" else "high"): _Symbol(name)) if callable(bound) else bound
        for key, bound in (("gt", rng.gt), ("ge", rng.ge), ("lt", rng.lt), ("le", rng.le))
    }
    return dataclasses.replace(rng, **symbolic).describe(integer)


def _plain_type(tp: Any) -> Any:
    """The scalar type a field's metadata applies to: ``int`` for ``int | None`` and ``list[int]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        plain = [a for a in args if a is not type(None) and not dataclasses.is_dataclass(a)]
        return _plain_type(plain[0]) if len(plain) == 1 else None
    if origin is list and args:
        return _plain_type(args[0])
    if origin is dict and len(args) == 2:
        return _plain_type(args[1])
    return tp


# --------------------------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------------------------


def _anchor_key(what: Any) -> Any:
    return ("section", id(what)) if isinstance(what, _Node) else what


def _slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


class _Document:
    """The reference for some dataclass trees: sections, then the kinds and names their keys refer to."""

    def __init__(self, roots: Sequence[Root]) -> None:
        self.roots = roots
        self.nodes: dict[str, list[_Node]] = {}  # part -> its sections, in reading order
        self.unions: dict[str, list[str]] = {}  # union family -> where it is used, in order of first use
        self.names: dict[str, list[str]] = {}  # registry family -> where its names are used
        self.members: dict[str, list[tuple[str, list[_Node]]]] = {}  # union family -> (kind, its sections)
        self.seen: dict[tuple[type, str], _Node] = {}  # identical sections are shown once
        for root in roots:
            self.nodes[root.part] = []
            self._build(root.cls, root.cls(), root.prefix, "", root.top, self.nodes[root.part], ())
        done: set[str] = set()
        while pending := [f for f in self.unions if f not in done]:
            for family in pending:
                done.add(family)
                registry = _registry(family)
                self.members[family] = []
                for kind in registry.names():
                    cls, sections = registry.get(kind), []
                    self._build(cls, cls(), f"`{family}` kind `{kind}`", "", "", sections, ())
                    self.members[family].append((kind, sections))
        self.anchors = self._anchors()

    def _build(
        self, cls: type, instance: Any, prefix: str, path: str, top: str, out: list[_Node], parents: tuple[type, ...]
    ) -> _Node:
        node = _Node(cls, instance, prefix, path, top)
        key = (cls, yaml_text(_defaults(cls, instance)))
        if key in self.seen:
            node.canonical = self.seen[key]
            node.canonical.also.append(node.label)
        else:
            self.seen[key] = node
            out.append(node)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            where = _label(prefix, _join(path, f.name))
            if f.metadata.get("union"):
                self.unions.setdefault(f.metadata["union"], []).append(where)
            if f.metadata.get("registry"):
                self.names.setdefault(f.metadata["registry"], []).append(where)
            child, contained = _nested(hints[f.name])
            if child is None or child in parents:  # a dataclass inside itself is linked to, not walked again
                continue
            value = None if contained else _default(f, instance)
            sub = _join(path, f.name) + (".*" if contained else "")
            made = value if isinstance(value, child) else None
            node.children[f.name] = self._build(child, made, prefix, sub, top, out, (*parents, cls))
        return node

    def _headings(self) -> list[tuple[int, str, Any]]:
        """Every heading in reading order: (level, text, what it heads)."""
        out: list[tuple[int, str, Any]] = []
        for root in self.roots:
            out.append((2, root.part, root.part))
            out += [(3, node.label, node) for node in self.nodes[root.part]]
        if self.members:
            out.append((2, "Kinds", "kinds"))
            for family, members in self.members.items():
                out.append((3, f"`{family}` kinds", ("union", family)))
                out += [(4, node.label, node) for _, nodes in members for node in nodes]
        if self.names:
            out.append((2, "Names", "names"))
            out += [(3, f"`{family}` names", ("names", family)) for family in self.names]
        return out

    def _anchors(self) -> dict[Any, str]:
        """Each heading's anchor, numbered as GitHub numbers a repeated one."""
        used: dict[str, int] = {}
        anchors = {}
        for _, text, what in self._headings():
            slug = _slug(text)
            count = used.get(slug, 0)
            used[slug] = count + 1
            anchors[_anchor_key(what)] = f"{slug}-{count}" if count else slug
        return anchors

    def link(self, what: Any, text: str) -> str:
        """A link to the heading of ``what``: a section, a part, ``("union", family)`` or ``("names", family)``."""
        return f"[{text}](#{self.anchors[_anchor_key(what)]})"

    # ----------------------------------------------------------------------------------------------------------

    def type_text(self, tp: Any, meta: Any, node: _Node, name: str) -> str:
        """A field's type: ``float``, ``"cpu" | "cuda"``, ``list[int]``, links to nested sections and kinds."""
        family = meta.get("union")
        if tp is Any and family:
            return self.link(("union", family), family)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Literal:
            return "`" + " | ".join(f'"{a}"' if isinstance(a, str) else yaml_text(a) for a in args) + "`"
        if origin in (Union, types.UnionType):
            return " | ".join(self.type_text(a, meta, node, name) for a in args)
        if origin is list:
            return f"list[{self.type_text(args[0] if args else Any, meta, node, name)}]"
        if origin is dict:
            key, value = args if len(args) == 2 else (Any, Any)
            return f"dict[{self.type_text(key, {}, node, name)}, {self.type_text(value, meta, node, name)}]"
        if dataclasses.is_dataclass(tp):
            child = node.children.get(name)
            return self.link(child.shown, "mapping") if child else "mapping"
        if tp in _BASE_TYPES:
            return f"`{_BASE_TYPES[tp]}`"
        return "`any`" if tp is Any else f"`{getattr(tp, '__name__', tp)}`"

    def constraint(self, tp: Any, meta: Any) -> str:
        """What the field's metadata requires, in the words of the loader's messages."""
        parts = []
        plain = _plain_type(tp)
        if meta.get("range") is not None:
            parts.append(_markdown(range_text(meta["range"], integer=plain is int)))
        elif plain is float:
            parts.append("a finite number")
        if meta.get("pattern") is not None:
            parts.append(_markdown(meta["pattern"][1]))
        if meta.get("path"):
            parts.append("an existing file or folder, relative to the file that sets it")
        if meta.get("registry"):
            family = meta["registry"]
            parts.append(f"a registered {self.link(('names', family), family)} name")
        if meta.get("union"):
            kinds = ", ".join(f"`{k}`" for k in _registry(meta["union"]).names())
            parts.append(f"a mapping whose `kind` is one of {kinds}")
        text = "; ".join(parts)
        contained = typing.get_origin(tp) in (list, dict)
        return f"each: {text}" if text and contained else text

    def section(self, level: int, node: _Node) -> list[str]:
        lines = [f"{'#' * level} {node.label}", ""]
        doc, _ = _source_notes(node.cls)
        lines += [p + "\n" for p in _paragraphs(doc)]
        check = getattr(node.cls, "check", None)
        if callable(check) and _doc(check):
            lines += [f"Checked together: {_paragraphs(_doc(check))[0]}", ""]
        if node.also:
            lines += ["The same keys, with the same defaults, at " + ", ".join(node.also) + ".", ""]
        lines += table_rows(self.rows(node))
        return [*lines, ""]

    def rows(self, node: _Node) -> list[tuple[str, ...]]:
        hints = typing.get_type_hints(node.cls)
        rows = []
        for f in dataclasses.fields(node.cls):
            if not f.init:
                continue
            tp = hints[f.name]
            value = _default(f, node.instance)
            if value is _REQUIRED:
                default = "required"
            elif dataclasses.is_dataclass(value) and f.name in node.children:
                default = "(its section)"
            else:
                default = f"`{yaml_text(value)}`"
            rows.append(
                (
                    f"`{f.name}`",
                    self.type_text(tp, f.metadata, node, f.name),
                    default,
                    self.constraint(tp, f.metadata),
                    _markdown(_field_note(node.cls, f.name)),
                )
            )
        return rows

    def render(self, title: str, intro: Sequence[str]) -> str:
        lines = [f"# {title}", ""]
        for paragraph in intro:
            lines += [paragraph, ""]
        headings = self._headings()
        contents = []
        for level, text, what in headings:
            if level == 2:
                contents.append([f"- {self.link(what, text)}:"])
            elif level == 3:
                contents[-1].append(self.link(what, text.replace("`", "")))
        lines += [f"{items[0]} {' · '.join(items[1:])}".rstrip(":") for items in contents] + [""]
        for level, text, what in headings:
            if isinstance(what, _Node):
                lines += self.section(level, what)
            elif level == 2:
                lines += [f"## {text}", ""]
                root = next((r for r in self.roots if r.part == what), None)
                if root and root.intro:
                    lines += [root.intro, ""]
                elif what == "kinds":
                    lines += [
                        "A key of these types is a mapping whose `kind` picks one of the kinds listed; its other "
                        "keys are that kind's settings (a key of another kind is an error).",
                        "",
                    ]
                elif what == "names":
                    lines += ["The names a key of these types accepts.", ""]
            elif what[0] == "union":
                lines += self.family_intro(text, what[1], self.unions[what[1]])
            else:
                lines += self.family_intro(text, what[1], self.names[what[1]])
                registry = _registry(what[1])
                rows = [(f"`{n}`", (_paragraphs(_doc(registry.get(n))) or [""])[0]) for n in registry.names()]
                lines += [*table_rows(rows, ("name", "description")), ""]
        return "\n".join(lines).rstrip("\n") + "\n"

    def family_intro(self, heading: str, family: str, used: list[str]) -> list[str]:
        module, attribute = UNION_FAMILIES[family]
        return [f"### {heading}", "", f"Used at {', '.join(used)}. Registered in `{module}.{attribute}`.", ""]


def table_rows(
    rows: Sequence[Sequence[str]], header: Sequence[str] = ("key", "type", "default", "constraint", "description")
) -> list[str]:
    """A Markdown table (``|`` inside a cell escaped, as GitHub's tables need even in code spans)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def render(roots: Sequence[Root], title: str = "Reference", intro: Sequence[str] = ()) -> str:
    """Markdown for some dataclass trees (each a part of the document), with the kinds and names they use.

    Args:
        roots: the trees, in the order their parts appear.
        title: the document's title.
        intro: paragraphs under the title.

    Returns:
        The document, ending with one newline; the same text for the same schema on any machine.
    """
    return _Document(roots).render(title, intro)


def generate() -> str:
    """The recipe reference: the recipe's sections, then deploy target files, then kinds and names."""
    from factory.recipe import targets

    target_intro = _paragraphs(_doc(targets))[0]
    roots = [
        Root("Recipe", "", Recipe),
        Root("Deploy target files", target_intro, TargetConfig, prefix="Target file"),
    ]
    header = (
        f"_Generated from the schema (`factory/recipe/schema.py`, `factory/recipe/targets.py` and the registered "
        f"kinds) by `{COMMAND}` (`make docs`): do not edit by hand. `make test` fails while it is stale._"
    )
    return render(roots, "Recipe reference", [header, _INTRO])


def _excerpt(line: str | None, at: int) -> str:
    """A quoted window of ``line`` around column ``at`` (a contents line can be long)."""
    if line is None:
        return "the end of the file"
    start = max(0, at - 40)
    text = ("…" if start else "") + line[start : at + 80] + ("…" if len(line) > at + 80 else "")
    return repr(text)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check(path: Path, expected: str, command: str = COMMAND) -> str | None:
    """Why the file at ``path`` differs from ``expected`` (its first differing line), or None when it is current."""
    if not path.is_file():
        return f"{_shown(path)} does not exist: generate it with `{command}`"
    found = path.read_text(encoding="utf-8")
    if found == expected:
        return None
    old, new = found.splitlines(), expected.splitlines()
    n = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    was, should = (lines[n] if n < len(lines) else None for lines in (old, new))
    at = next((i for i, (a, b) in enumerate(zip(was or "", should or "", strict=False)) if a != b), 0)
    if was is not None and should is not None and at == 0 and was[:1] == should[:1]:
        at = min(len(was), len(should))  # one line is the start of the other
    return (
        f"{_shown(path)} is stale: line {n + 1} is {_excerpt(was, at)}, the schema gives {_excerpt(should, at)}. "
        f"Regenerate it with `{command}` and commit the result"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m factory.recipe.reference [--check] [--out PATH]``: write (or check) the recipe reference."""
    parser = argparse.ArgumentParser(prog=COMMAND, description="Generate the recipe reference from the schema.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not what the schema gives")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        command = COMMAND if args.out == DEFAULT_OUT else f"{COMMAND} --out {args.out}"
        problem = check(args.out, text, command)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
