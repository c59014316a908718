"""Declarative checks for the JSON files and headers SEGA reads from users (manifests, clips, avatar headers).

Why a schema and not ad-hoc ``try/except``: a hostile or damaged file can put any JSON value in any
field (a string where a number goes, ``1e308``, ``NaN``, a list nested 10,000 deep, a million
entries). Reading code that trusts the shape then fails with ``TypeError``, ``OverflowError``,
``RecursionError`` or ``ZeroDivisionError`` tracebacks far from the file. Each file type gets one
schema here, checked once on read; code after the check may trust types and ranges.

A spec is one of the small classes below; ``validate(value, spec, where)`` raises ``SchemaError``
(a ``SegaError``) with a one-line message naming the field path, e.g.
``manifest.json: camera.fov_deg: must be a number in [1, 170], got 0``.

``load_json(path, max_bytes, what)`` reads a JSON file with a size cap and turns every decoding
failure (bad UTF-8, bad JSON, nesting deeper than the parser allows, NaN/Infinity literals)
into a ``SchemaError``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SegaError

MAX_JSON_DEPTH = 64  # deeper nesting than any SEGA file has is refused before a recursive check sees it
SHOWN_VALUE_CHARS = 60  # a bad value is quoted in the message up to this many characters


class SchemaError(SegaError, ValueError):
    """A file whose content does not match its schema (the message names the file and the field)."""


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def _fail(where: str, what: str, value: Any) -> SchemaError:
    return SchemaError(f"{where}: {what}, got {_show(value)}")


@dataclass(frozen=True)
class Num:
    """A JSON number (bool is not a number) in [lo, hi]; ``integer``: a whole number."""

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False

    def check(self, value: Any, where: str) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(value, float):
            ok = math.isfinite(value) and (not self.integer or value.is_integer())
        if not ok or not (self.lo <= value <= self.hi):
            kind = "a whole number" if self.integer else "a number"
            raise _fail(where, f"must be {kind} in [{self.lo:g}, {self.hi:g}]", value)


@dataclass(frozen=True)
class Str:
    """A string of at most ``max_len`` characters; optionally one of ``choices`` or matching ``pattern``."""

    max_len: int = 256
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # re.fullmatch

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise _fail(where, f"must be a string of at most {self.max_len} characters", value)
        if self.choices is not None and value not in self.choices:
            raise _fail(where, f"must be one of {list(self.choices)}", value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _fail(where, "has an unexpected form", value)


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise _fail(where, "must be true or false", value)


@dataclass(frozen=True)
class Const:
    """Exactly this value (e.g. a format name)."""

    value: Any

    def check(self, value: Any, where: str) -> None:
        if type(value) is not type(self.value) or value != self.value:
            raise _fail(where, f"must be {_show(self.value)}", value)


@dataclass(frozen=True)
class Arr:
    """A list of ``min_len`` .. ``max_len`` items, each matching ``item``."""

    item: Any
    min_len: int = 0
    max_len: int = 1024

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list) or not (self.min_len <= len(value) <= self.max_len):
            n = f"{self.min_len}" if self.min_len == self.max_len else f"{self.min_len} to {self.max_len}"
            raise _fail(where, f"must be a list of {n} items", value)
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


@dataclass(frozen=True)
class Obj:
    """A JSON object with ``required`` and ``optional`` keys; other keys are allowed (and not looked at)
    unless ``closed``. Readers only look at the keys named here."""

    required: dict[str, Any] = field(default_factory=dict)
    optional: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    max_keys: int = 256

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict) or len(value) > self.max_keys:
            raise _fail(where, f"must be an object of at most {self.max_keys} keys", value)
        missing = [k for k in self.required if k not in value]
        if missing:
            raise SchemaError(f"{where}: lacks required keys {missing}")
        if self.closed:
            extra = sorted(str(k) for k in value if k not in self.required and k not in self.optional)
            if extra:
                raise SchemaError(f"{where}: unknown keys {extra[:5]}")
        for k, spec in self.required.items():
            spec.check(value[k], f"{where}.{k}")
        for k, spec in self.optional.items():
            if k in value:
                spec.check(value[k], f"{where}.{k}")


@dataclass(frozen=True)
class Map:
    """A JSON object of at most ``max_keys`` entries with keys matching ``key`` and values matching ``value``."""

    key: Str
    value: Any
    min_keys: int = 0
    max_keys: int = 1024

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict) or not (self.min_keys <= len(value) <= self.max_keys):
            raise _fail(where, f"must be an object of {self.min_keys} to {self.max_keys} entries", value)
        for k, v in value.items():
            self.key.check(k, f"{where} key")
            self.value.check(v, f"{where}.{k}")


@dataclass(frozen=True)
class Nullable:
    """``null`` or ``spec``."""

    spec: Any

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            self.spec.check(value, where)


@dataclass(frozen=True)
class Any_:
    """Anything (a field kept for information only, never read as a number or a path)."""

    def check(self, value: Any, where: str) -> None:
        return None


def depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a JSON value, counted without recursion; stops counting past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def validate(value: Any, spec: Any, where: str) -> Any:
    """Check ``value`` against ``spec``; returns ``value`` or raises ``SchemaError`` naming ``where``."""
    if depth(value) > MAX_JSON_DEPTH:
        raise SchemaError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep")
    spec.check(value, where)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str | bytes, what: str) -> Any:
    """JSON text -> value, every decoding failure as ``SchemaError`` (NaN / Infinity literals refused)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError as err:
        raise SchemaError(f"{what} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except RecursionError as err:
        raise SchemaError(f"{what} is nested too deeply to read") from err
    except ValueError as err:  # json.JSONDecodeError, the NaN refusal, int strings over Python's digit limit
        raise SchemaError(f"{what} is not valid JSON: {str(err).splitlines()[0][:200]}") from err


def load_json(path: str | Path, max_bytes: int, what: str | None = None) -> Any:
    """Read a JSON file of at most ``max_bytes`` bytes (checked before reading) -> value."""
    path = Path(path)
    what = what or path.name
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SchemaError(f"{what} is {size} bytes, over the {max_bytes}-byte limit")
        data = path.read_bytes()
    except OSError as err:
        raise SchemaError(f"cannot read {what}: {err.strerror or err}") from err
    return parse_json(data, what)


__all__ = ["Any_", "Arr", "Bool", "Const", "Map", "Nullable", "Num", "Obj", "SchemaError", "Str", "depth", "load_json", "parse_json", "validate"]
