"""Configuration and rules files in YAML: parsed keeping every value's line, checked by pydantic schemas.

Every file a person edits (the recommender config, tag rules, reminder rules, eval configs) goes through here,
so every mistake is reported the same way: the file, the line and the rule or key at fault, never a traceback.

- :func:`load` / :func:`read` parse with yaml's composer (safe: no Python objects), refuse duplicate keys (yaml
  would silently keep the last value; a person almost never means that), non-scalar keys and non-standard tags,
  and return a :class:`Document`: plain Python data plus a :class:`Locator` from each path (a tuple of mapping
  keys and list indices) to its line.
- :func:`validate` runs a pydantic model (or any type a ``TypeAdapter`` takes) over a document and turns the first
  validation error into the caller's error class, naming file, line and the rule or key. It works through
  discriminated unions: the union's tag that pydantic puts in an error's location is not in the data, and is
  skipped when the error is located.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from data.errors import ConfigError, YiwangError

Key = str | int
PathT = tuple[Key, ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class Locator:
    """Lines of a parsed document (1-based).

    ``keys[path]`` is the line of a mapping entry's key, or of a list item's start; ``nodes[path]`` is where the
    value itself starts (for ``when:`` followed by an indented block, the line after the key).
    """

    keys: dict[PathT, int]
    nodes: dict[PathT, int]
    has_lines: bool = True  # False for data that did not come from text (a dict, a JSON file): no line to name

    def located(self, path: Sequence[Key]) -> PathT:
        """The longest prefix of ``path`` that is in the document."""
        path = tuple(path)
        while path and path not in self.keys:
            path = path[:-1]
        return path

    def line(self, path: Sequence[Key]) -> int | None:
        """The key's line of ``path`` (or of its longest located prefix)."""
        return self.keys.get(self.located(path), 1) if self.has_lines else None

    def node_line(self, path: Sequence[Key]) -> int | None:
        """The line where the value at ``path`` (or at its longest located prefix) starts."""
        return self.nodes.get(self.located(path), 1) if self.has_lines else None


@dataclass(frozen=True)
class Document:
    data: Any
    locator: Locator
    source: str
    text: str

    @classmethod
    def from_data(cls, data: Any, source: str) -> "Document":
        """Data that did not come from YAML text (errors then name the file and key, without a line)."""
        return cls(data, Locator({}, {}, has_lines=False), source, "")


# -- how an error names its place ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Where a problem is: ``path`` into the data, its line, the rule it sits in when the file is a list of named
    rules, and ``field``: the path inside that rule (or the whole path) to name in the message."""

    source: str
    line: int | None
    path: PathT
    rule: str | None = None
    field: PathT = ()


def colon_style(fault: Fault) -> str:
    """``FILE:LINE: rule 'ID': field 'a.b': ``; the reminder rules' style."""
    line = f":{fault.line}" if fault.line is not None else ""
    rule = f" rule {fault.rule!r}:" if fault.rule is not None else ""
    field = f" field {dotted(fault.field)!r}:" if fault.field else ""
    return f"{fault.source}{line}:{rule}{field} "


def key_style(fault: Fault) -> str:
    """``FILE:LINE: a.b: ``; the configs' style (a config has no rules, its keys are the names)."""
    line = f":{fault.line}" if fault.line is not None else ""
    field = f" {dotted(fault.field)}:" if fault.field else ""
    return f"{fault.source}{line}:{field} "


def comma_style(fault: Fault) -> str:
    """``FILE, rule 'ID', line LINE: field 'a.b': ``; the tag rules' style."""
    rule = f", rule {fault.rule!r}" if fault.rule is not None else ""
    line = f", line {fault.line}" if fault.line is not None else ""
    field = f"field {dotted(fault.field)!r}: " if fault.field else ""
    return f"{fault.source}{rule}{line}: {field}"


@dataclass(frozen=True)
class Rules:
    """The file is a list of named rules under ``list_key`` (``rules: [{id: ...}, ...]``): errors inside one name it."""

    list_key: str = "rules"
    id_key: str = "id"


# -- parsing -----------------------------------------------------------------------------------------------------------


def load(text: str, source: str, *, error: type[YiwangError] = ConfigError,
         style: Callable[[Fault], str] = colon_style, rules: Rules | None = None) -> Document:
    """Parse YAML text; an empty document gives ``data=None``. Raises ``error`` naming ``source`` and the line
    (and, with ``rules``, the rule a duplicate key sits in)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: the reader refuses the whole text before parsing
        line = text[: exc.position].count("\n") + 1
        raise error(style(Fault(source, line, ())) + f"not valid YAML: {exc.reason} (character #x{exc.character:04x})"
                    ) from None
    keys: dict[PathT, int] = {}
    nodes: dict[PathT, int] = {}
    duplicates: list[tuple[PathT, int, str]] = []  # reported once the whole rule (and so its id) is read

    def fail(line: int, msg: str):
        raise error(style(Fault(source, line, ())) + msg)

    def convert(node: yaml.Node, path: PathT) -> Any:
        nodes[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                fail(node.start_mark.line + 1, f"unsupported YAML tag {node.tag!r}")
            out: dict = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    fail(line, "a key must be a plain word, not a list or mapping")
                if key_node.tag == "tag:yaml.org,2002:merge":
                    fail(line, "merge keys (<<) are not supported: write the keys out")
                key = scalar(key_node)
                if key in out:
                    # yaml would silently keep the last value; a person almost never means that
                    duplicates.append((path + (key,), line, f"duplicate key {key!r} (first on line {keys[path + (key,)]})"))
                    continue
                keys[path + (key,)] = line
                out[key] = convert(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                fail(node.start_mark.line + 1, f"unsupported YAML tag {node.tag!r}")
            items = []
            for i, item in enumerate(node.value):
                keys[path + (i,)] = item.start_mark.line + 1
                items.append(convert(item, path + (i,)))
            return items
        return scalar(node)

    def scalar(node: yaml.ScalarNode) -> Any:
        # yaml's own constructors, so `true`, `30`, `2026-01-01` and `null` get their usual types.
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            # The resolver picks a type from the text's shape and the constructor then refuses the value
            # (`2026-13-45`, `!!int abc`, `!!bool x`): yaml lets Python's own error through.
            why = f" ({exc})" if isinstance(exc, ValueError) else ""
            fail(node.start_mark.line + 1, f"not valid YAML: {node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}{why}")

    try:
        try:
            root = loader.get_single_node()
            data = None if root is None else convert(root, ())
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(style(Fault(source, mark.line + 1 if mark else 1, ())) + f"not valid YAML: {problem}") from None
    keys[()] = 1
    nodes.setdefault((), 1)
    doc = Document(data, Locator(keys, nodes), source, text)
    if duplicates:
        path, line, msg = duplicates[0]
        fault = fault_at(doc, path, rules=rules)
        raise error(style(replace(fault, line=line, field=fault.field[:-1])) + msg)
    return doc


def read(path: Path | str, *, error: type[YiwangError] = ConfigError, style: Callable[[Fault], str] = colon_style,
         source: str | None = None, rules: Rules | None = None) -> Document:
    """Read and parse a file; a missing or non-UTF-8 file is ``error`` too."""
    path = Path(path)
    source = str(path) if source is None else source
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{source}: no such file") from None
    except IsADirectoryError:
        raise error(f"{source}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise error(style(Fault(source, line, ())) + "not UTF-8 text") from None
    return load(text, source, error=error, style=style, rules=rules)


# -- validation --------------------------------------------------------------------------------------------------------


def validate(model: Any, doc: Document | str, source: str | None = None, *, error: type[YiwangError] = ConfigError,
             style: Callable[[Fault], str] = colon_style, rules: Rules | None = None, line_at: str = "key",
             context: dict | None = None, phrases: dict[str, str] | None = None) -> Any:
    """Validate a document (or YAML text) against ``model``; return the validated value.

    ``model`` is a pydantic model class, a ``TypeAdapter`` or any type a TypeAdapter accepts. The first error
    becomes ``error`` reading e.g. ``tag_rules.yaml:42: rule 'marriage': field 'when': ...``. ``line_at`` picks
    the line: ``"key"`` the line of the offending key, ``"mapping"`` the first line of the mapping holding it.
    ``context`` is passed to pydantic validators (``info.context``). ``phrases`` rewords an error type, e.g.
    ``{"extra_forbidden": "unknown field {key!r}"}`` (placeholders: ``key``, ``got`` and the error's context).
    """
    if isinstance(doc, str):
        doc = load(doc, source or "<text>", error=error, style=style, rules=rules)
    adapter = model if isinstance(model, TypeAdapter) else None
    try:
        if adapter is not None:
            return adapter.validate_python(doc.data, context=context)
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(doc.data, context=context)
        return TypeAdapter(model).validate_python(doc.data, context=context)
    except ValidationError as exc:
        raise error(explain(exc, doc, style=style, rules=rules, line_at=line_at, phrases=phrases)) from None


def data_path(loc: Sequence[Key], data: Any) -> PathT:
    """An error location as a path into the data: union tags and validator names (not in the data) are dropped;
    the last element is kept even when absent (a missing key)."""
    out: list[Key] = []
    here = data
    loc = list(loc)
    for i, part in enumerate(loc):
        if isinstance(here, dict) and part in here:
            out.append(part)
            here = here[part]
        elif isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            out.append(part)
            here = here[part]
        elif i == len(loc) - 1 and isinstance(here, dict) and isinstance(part, str):
            out.append(part)  # a missing key
        # else: a union member's tag or a validator's name, which pydantic adds to the location
    return tuple(out)


def where(doc: Document, path: Sequence[Key], *, style: Callable[[Fault], str] = colon_style,
          rules: Rules | None = None, line_at: str = "key", field: Sequence[Key] | None = None) -> str:
    """The message prefix naming file, line, rule and field of ``path``: for checks made after validation (against
    reference data, across fields), so they read like the schema's own errors. ``field=()`` names no field."""
    return style(fault_at(doc, path, rules=rules, line_at=line_at, field=field))


def fault_at(doc: Document, path: Sequence[Key], *, rules: Rules | None = None, line_at: str = "key",
             field: Sequence[Key] | None = None) -> Fault:
    """The :class:`Fault` of a path into ``doc``; ``field`` overrides the field named (default: the path inside
    the rule, or the whole path)."""
    path = tuple(path)
    loc = doc.locator
    if line_at == "mapping":
        located = loc.located(path)
        holder = located if located == path and isinstance(_get(doc.data, path), dict) else path[:-1]
        line = loc.node_line(holder)
    else:
        line = loc.line(path)
    rule, rule_path = None, ()
    if rules is not None and len(path) >= 2 and path[0] == rules.list_key and isinstance(path[1], int):
        rule_path = path[:2]
        item = _get(doc.data, rule_path)
        rid = item.get(rules.id_key) if isinstance(item, dict) else None
        rule = rid if isinstance(rid, str) else f"#{path[1] + 1}"
    return Fault(doc.source, line, path, rule, path[len(rule_path):] if field is None else tuple(field))


def explain(exc: ValidationError, doc: Document, *, style: Callable[[Fault], str] = colon_style,
            rules: Rules | None = None, line_at: str = "key", phrases: dict[str, str] | None = None) -> str:
    """The first error of ``exc`` as one line naming file, line, rule and field.

    A missing key gives way to an unknown key in the same mapping: that is a misspelling, and the misspelling is
    the news.
    """
    errors = exc.errors(include_url=False)
    err = errors[0]
    if err["type"] == "missing":
        err = next((e for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == err["loc"][:-1]), err)
    path = data_path(err["loc"], doc.data)
    kind = err["type"]
    if kind == "union_tag_invalid":
        # point at the tag's own key (pydantic locates the error at the union's mapping)
        tag_key = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
        holder = _get(doc.data, path) if path in doc.locator.keys else None
        if isinstance(holder, dict) and tag_key in holder:
            path += (tag_key,)
    fault = fault_at(doc, path, rules=rules, line_at=line_at)
    last = None
    if kind in ("missing", "extra_forbidden") and fault.field:
        # the message names the key itself; the field named is the mapping holding it
        last = fault.field[-1]
        fault = replace(fault, field=fault.field[:-1])
        if line_at == "mapping":  # the mapping holding the key, even when the key's own value is a mapping
            fault = replace(fault, line=doc.locator.node_line(path[:-1]))
    if phrases and kind in phrases:
        return style(fault) + phrases[kind].format(key=last, got=_show(err.get("input")), **(err.get("ctx") or {}))
    return style(fault) + _message(err, last)


def _message(err: dict, key: Key | None) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = f", got {_show(value)}"
    if kind == "missing":
        return f"missing field {key!r}"
    if kind == "extra_forbidden":
        return f"unknown key {key!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number" + got
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "must be a number" + got
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false" + got
    if kind in ("string_type", "str_type"):
        return "must be text" + got
    if kind in ("list_type", "tuple_type", "set_type"):
        return "must be a list" + got
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        return "must be a mapping (key: value lines)" + got
    if kind in ("date_type", "date_parsing", "date_from_datetime_parsing"):
        return "must be a date (YYYY-MM-DD)" + got
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}" + got
    if kind == "enum":
        return f"expected {ctx.get('expected')}" + got
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
                "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}[kind]
        bound = ctx.get(sign[0])
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {sign[1]} {bound}" + got
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "union_tag_invalid":
        return (f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {ctx.get('tag')!r}; "
                f"expected one of {ctx.get('expected_tags')}")
    if kind == "union_tag_not_found":
        return f"missing field {ctx.get('discriminator', 'kind').strip(chr(39))!r}"
    if kind in ("value_error", "assertion_error"):
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        return msg
    if kind == "string_pattern_mismatch":
        return f"does not match the pattern {ctx.get('pattern')!r}" + got
    msg = err["msg"]
    return msg[:1].lower() + msg[1:] + got


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def dotted(path: Sequence[Key]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _get(data: Any, path: Sequence[Key]) -> Any:
    for part in path:
        data = data[part]
    return data
