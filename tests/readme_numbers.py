"""The README's numbers about defaults, tied to the keys of config.yaml they come from.

A number the README states about a default carries the key right after it, as an HTML comment
that Markdown does not show::

    averaged over 15<!--cfg:control.pv_window_s--> s
    increases at most every 4<!--cfg:writes.min_increase_interval_s / 60--> minutes

The comment holds a key path of ``config.yaml`` or a small arithmetic expression of key paths and
numbers (``+ - * /``, parentheses), for numbers the README derives from a default. The number
right before the comment must be that value as ``canonical`` writes it (``0.95``, ``4``, ``600``;
thousands separators are allowed). ``tests/unit/test_readme_numbers.py`` fails when they drift;
after re-tuning a default,

    python -m tests.readme_numbers --write

rewrites every marked number from ``config.yaml`` (the other README tables come from
``venus-prio simulate``). A new section needs nothing but its markers.
"""

from __future__ import annotations

import argparse
import ast
import math
import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Match, Optional, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG = ROOT / "config.yaml"

# A number (digits, optional thousands separators and decimals) directly followed by the marker.
MARKED = re.compile(r"(?P<number>-?\d[\d,]*(?:\.\d+)?)?<!--\s*cfg:(?P<expr>.*?)\s*-->")

_OPERATORS: Dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class MarkerError(ValueError):
    """A marker that names no key of config.yaml, or an expression outside the small grammar."""


@dataclass(frozen=True)
class Marked:
    """One marked number: where it is, what it shows, and what config.yaml says it is."""

    line: int
    expr: str
    keys: List[str]
    shown: Optional[str]  # None: no number right before the marker
    value: float

    @property
    def expected(self) -> str:
        return canonical(self.value)

    @property
    def ok(self) -> bool:
        return self.shown is not None and self.shown.replace(",", "") == self.expected


def canonical(value: float) -> str:
    """Return how the README writes ``value``: a whole number without decimals, else ``%g``."""
    value = round(value, 9)  # 0.2 * 100 is 20.000000000000004 in binary floating point
    if value == math.floor(value):
        return str(int(value))
    return f"{value:g}"


def _key_path(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_key_path(node.value)}.{node.attr}"
    raise MarkerError(f"not a key path: {ast.dump(node)}")


def lookup(config: Mapping[str, Any], path: str) -> float:
    """Return the number at a dotted key path of the raw config.yaml mapping."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MarkerError(f"{path}: not a key set in config.yaml")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise MarkerError(f"{path}: not a number in config.yaml ({node!r})")
    return float(node)


def evaluate(expr: str, config: Mapping[str, Any]) -> Tuple[float, List[str]]:
    """Return the value of a marker expression and the key paths it uses."""
    keys: List[str] = []

    def value(node: ast.AST) -> float:
        if isinstance(node, (ast.Name, ast.Attribute)):
            path = _key_path(node)
            keys.append(path)
            return lookup(config, path)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise MarkerError(f"{expr!r}: only key paths, numbers and + - * / are allowed")

    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise MarkerError(f"{expr!r}: {exc.msg}") from exc
    return value(tree.body), keys


def load_defaults(path: Path = CONFIG) -> Mapping[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, Mapping), f"{path}: not a mapping"
    return data


def marked_numbers(text: str, config: Mapping[str, Any]) -> List[Marked]:
    """Return every marked number of ``text``; raise MarkerError for a broken marker."""
    found = []
    for match in MARKED.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        try:
            value, keys = evaluate(match.group("expr"), config)
        except MarkerError as exc:
            raise MarkerError(f"README.md line {line}: {exc}") from exc
        found.append(Marked(line, match.group("expr"), keys, match.group("number"), value))
    return found


def rewrite(text: str, config: Mapping[str, Any]) -> str:
    """Return ``text`` with every marked number set to its value from config.yaml."""

    def replace(match: Match[str]) -> str:
        value, _ = evaluate(match.group("expr"), config)
        shown = canonical(value)
        number = match.group("number") or ""
        if "," in number and "." not in shown:
            shown = f"{int(shown):,}"
        return shown + match.group(0)[len(number) :]

    return MARKED.sub(replace, text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.readme_numbers",
        description="Check (or --write) the README's marked numbers against config.yaml.",
    )
    parser.add_argument("--write", action="store_true", help="rewrite README.md in place")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    config = load_defaults()
    if args.write:
        README.write_text(rewrite(text, config), encoding="utf-8")
    wrong = [m for m in marked_numbers(README.read_text(encoding="utf-8"), config) if not m.ok]
    for m in wrong:
        print(f"README.md:{m.line}: {m.shown} should be {m.expected} ({m.expr})", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
