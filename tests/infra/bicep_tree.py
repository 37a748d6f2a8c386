"""Helpers for the static checks of infra/: parse Bicep templates and read their expressions.

No Bicep CLI runs here, so the templates are parsed with pycep-parser and the tests read the
parsed tree. pycep-parser returns identifiers and string literals alike as plain strings;
``render`` turns the expression trees it returns for operators and functions back into short
Bicep-like text so that assertions read like the templates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"

_BINARY_OPERATORS = {
    "equals": "==",
    "not_equals": "!=",
    "and": "&&",
    "or": "||",
    "greater_than": ">",
    "greater_than_or_equals": ">=",
    "less_than": "<",
    "less_than_or_equals": "<=",
    "add": "+",
    "minus": "-",
    "multiply": "*",
    "divide": "/",
    "modulo": "%",
    "coalesce": "??",
}


def bicep_files() -> list[Path]:
    """Every Bicep file under infra/, main.bicep first."""
    files = sorted(INFRA.rglob("*.bicep"))
    return sorted(files, key=lambda path: (path.name != "main.bicep", str(path)))


def parse_bicep(path: Path) -> dict[str, Any]:
    """Parse one Bicep file with pycep-parser."""
    return BicepParser().parse(file_path=path)


def render(expr: Any) -> str:
    """Render a pycep expression as compact Bicep-like text (``a.b``, ``f(x, y)``, ``c ? t : f``)."""
    if isinstance(expr, str):
        return expr
    if expr is None:
        return "null"
    if isinstance(expr, bool):
        return "true" if expr else "false"
    if isinstance(expr, int | float):
        return str(expr)
    if isinstance(expr, list):
        return "[" + ", ".join(render(item) for item in expr) + "]"
    if isinstance(expr, Mapping):
        if set(expr) == {"operator"}:
            return _render_operator(expr["operator"])
        if set(expr) == {"function"}:
            function = expr["function"]
            arguments = [render(value) for value in (function.get("parameters") or {}).values() if value is not None]
            return f"{_camel(function['type'])}({', '.join(arguments)})"
        return "{" + ", ".join(f"{key}: {render(value)}" for key, value in expr.items()) + "}"
    raise TypeError(f"unexpected expression {expr!r}")


def _render_operator(operator: Mapping[str, Any]) -> str:
    kind, operands = operator["type"], operator["operands"]
    if kind == "property_accessor":
        return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
    if kind == "index_accessor":
        return f"{render(operands['operand_1'])}[{render(operands['operand_2'])}]"
    if kind == "conditional":
        return f"{render(operands['condition'])} ? {render(operands['true_value'])} : {render(operands['false_value'])}"
    if kind == "not":
        return f"!{render(operands['bool_value'])}"
    if kind in _BINARY_OPERATORS:
        return f"{render(operands['operand_1'])} {_BINARY_OPERATORS[kind]} {render(operands['operand_2'])}"
    raise ValueError(f"operator {kind!r} has no rendering yet")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


def merged_parts(expr: Any, variables: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(condition, literal)`` for every array or object literal that a ``concat(...)`` or
    ``union(...)`` of variables and ``cond ? [...] : []`` branches contributes; the condition is
    ``""`` for unconditional parts.
    """
    if isinstance(expr, str) and expr in variables:
        yield from merged_parts(variables[expr]["value"], variables)
    elif isinstance(expr, Mapping) and set(expr) == {"function"} and expr["function"]["type"] in ("concat", "union"):
        for argument in expr["function"]["parameters"].values():
            if argument is not None:
                yield from merged_parts(argument, variables)
    elif isinstance(expr, Mapping) and set(expr) == {"operator"} and expr["operator"]["type"] == "conditional":
        operands = expr["operator"]["operands"]
        condition = render(operands["condition"])
        for branch, guard in (("true_value", condition), ("false_value", "!" + condition)):
            for inner, literal in merged_parts(operands[branch], variables):
                yield (f"{guard} && {inner}" if inner else guard), literal
    elif isinstance(expr, list | Mapping):
        if expr:
            yield "", expr
    else:
        raise ValueError(f"cannot expand {render(expr)} into literals")


def resource_body(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a resource or module, below any loop or condition wrapper pycep adds."""
    config = resource["config"]
    while "loop_type" in config or set(config) == {"condition", "config"}:
        config = config["config"]
    return config


def resource_condition(resource: Mapping[str, Any]) -> str | None:
    """The ``if (...)`` condition of a resource or module, rendered; None when unconditional."""
    config = resource["config"]
    condition = config.get("condition") if ("loop_type" in config or set(config) == {"condition", "config"}) else None
    return None if condition is None else render(condition)


def decorator(declaration: Mapping[str, Any], kind: str) -> Any:
    """The argument of one decorator (``description``, ``allowed``, ``min_length``...) or None."""
    for item in declaration.get("decorators", []):
        if item["type"] == kind:
            return item["argument"]
    return None


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """The resources of one type in a template, by symbolic name."""
    return {name: res for name, res in template.get("resources", {}).items() if res["type"] == resource_type}


def only_resource(template: Mapping[str, Any], resource_type: str) -> dict[str, Any]:
    """The one resource of a type in a template."""
    found = resources_of_type(template, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.values()))
