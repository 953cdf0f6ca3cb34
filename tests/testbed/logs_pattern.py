"""CloudWatch Logs JSON filter patterns, the subset eic-proxy and examples/terraform/audit.tf use.

``{ ($.a.b = "x") && (($.c = "y") || ($.c != "z*")) }``: selectors ``$.path.to.field``, ``=`` and
``!=`` against a quoted string (``*`` matches any run of characters) or a number, ``&&`` binding tighter
than ``||``, parentheses. A selector that names no field matches neither ``=`` nor ``!=``.
Used by the fake AWS (FilterLogEvents honours the pattern, as CloudWatch does) and by the tests of
the metric filters in examples/terraform/audit.tf.
"""
from __future__ import annotations

import fnmatch
import json
import re
from typing import Any, Callable

_TOKEN = re.compile(r'\s*(\{|\}|\(|\)|&&|\|\||!=|=|\$\.[A-Za-z0-9_.\[\]]+|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)')
_MISSING = object()

Matcher = Callable[[Any], bool]


def compile_pattern(text: str) -> Matcher:
    tokens = _tokens(text)
    if tokens[:1] != ["{"] or tokens[-1:] != ["}"]:
        raise ValueError(f"not a JSON filter pattern: {text!r}")
    pos, expr = _or(tokens, 1)
    if pos != len(tokens) - 1:
        raise ValueError(f"unexpected {tokens[pos]!r} in {text!r}")
    return expr


def matches(pattern: str, message: str) -> bool:
    try:
        doc = json.loads(message)
    except ValueError:
        return False
    return compile_pattern(pattern)(doc)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read {text[pos:pos + 20]!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _chain(t: list[str], i: int, op: str, operand: Callable[[list[str], int], tuple[int, Matcher]],
           combine: Callable[[Any], bool]) -> tuple[int, Matcher]:
    """``operand (op operand)*``: one level of the grammar."""
    i, first = operand(t, i)
    parts = [first]
    while i < len(t) and t[i] == op:
        i, nxt = operand(t, i + 1)
        parts.append(nxt)
    return i, (lambda doc: combine(p(doc) for p in parts)) if len(parts) > 1 else first


def _or(t: list[str], i: int) -> tuple[int, Matcher]:
    return _chain(t, i, "||", _and, any)


def _and(t: list[str], i: int) -> tuple[int, Matcher]:
    return _chain(t, i, "&&", _atom, all)


def _atom(t: list[str], i: int) -> tuple[int, Matcher]:
    if t[i] == "(":
        i, inner = _or(t, i + 1)
        if t[i] != ")":
            raise ValueError("missing )")
        return i + 1, inner
    selector, op, value = t[i], t[i + 1], t[i + 2]
    if not selector.startswith("$.") or op not in ("=", "!="):
        raise ValueError(f"expected $.selector = value, got {t[i:i + 3]}")
    path = selector[2:].split(".")
    want = json.loads(value)

    def test(doc: Any) -> bool:
        got: Any = doc
        for key in path:
            got = got.get(key, _MISSING) if isinstance(got, dict) else _MISSING
        if got is _MISSING or got is None:
            return False
        if isinstance(want, str):
            equal = fnmatch.fnmatchcase(str(got), want.replace("[", "[[]"))
        else:
            try:
                equal = float(got) == float(want)
            except (TypeError, ValueError):
                equal = False
        return equal if op == "=" else not equal

    return i + 3, test
