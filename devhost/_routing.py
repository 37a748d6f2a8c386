"""Azure Functions route templates (``agents/{name}/run``) matched the way the Functions host matches them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

# The constraints the Functions host accepts most often; any other constraint is accepted as a plain
# parameter rather than rejected, so an unusual template still serves instead of failing at start-up.
_CONSTRAINTS: dict[str, re.Pattern[str]] = {
    "int": re.compile(r"-?\d+"),
    "long": re.compile(r"-?\d+"),
    "alpha": re.compile(r"[A-Za-z]+"),
    "bool": re.compile(r"(?i)true|false"),
}


@dataclass(frozen=True)
class _Segment:
    literal: str | None = None
    name: str | None = None
    constraint: str | None = None
    optional: bool = False
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        if self.literal is not None:
            return value.lower() == self.literal.lower()
        if self.constraint == "guid":
            try:
                uuid.UUID(value)
            except ValueError:
                return False
            return True
        pattern = _CONSTRAINTS.get(self.constraint or "")
        return pattern is None or pattern.fullmatch(value) is not None

    @property
    def precedence(self) -> int:
        # ASP.NET routing prefers literals over constrained parameters over plain ones.
        if self.literal is not None:
            return 0
        if self.catch_all:
            return 4
        if self.optional:
            return 3
        return 1 if self.constraint else 2


def _parse_segment(text: str) -> _Segment:
    if not (text.startswith("{") and text.endswith("}")):
        return _Segment(literal=text)
    inner = text[1:-1]
    catch_all = inner.startswith("*")
    inner = inner.lstrip("*")
    optional = inner.endswith("?")
    inner = inner.rstrip("?")
    name, _, constraint = inner.partition(":")
    return _Segment(name=name, constraint=constraint.lower() or None, optional=optional, catch_all=catch_all)


class RouteTemplate:
    """One Functions route template, with the host's route prefix already applied.

    Args:
        template: The route as registered on the function (``agents/{name}/run``).
        prefix: The host's route prefix (``api`` unless ``host.json`` says otherwise).
    """

    def __init__(self, template: str, prefix: str = "api") -> None:
        parts = [p for p in (prefix.strip("/"), template.strip("/")) if p]
        self.template = "/" + "/".join(parts)
        self._segments = [_parse_segment(s) for s in "/".join(parts).split("/") if s]

    @property
    def precedence(self) -> tuple[int, ...]:
        """A sort key: more specific templates first, as the Functions host orders them."""
        return tuple(s.precedence for s in self._segments)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Match a request path; return the route parameters or None.

        Args:
            raw_path: The path exactly as sent (still percent-encoded), so an encoded ``/`` inside a
                parameter stays inside that parameter instead of splitting it.

        Returns:
            The decoded parameter values by name, or None when the path does not match.
        """
        values = [unquote(v) for v in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        params: dict[str, str] = {}
        for index, segment in enumerate(self._segments):
            if segment.catch_all:
                rest = "/".join(values[index:])
                if rest and segment.name:
                    params[segment.name] = rest
                return params
            if index >= len(values):
                if segment.optional:
                    continue
                return None
            value = values[index]
            if not value or not segment.accepts(value):
                return None
            if segment.name:
                params[segment.name] = value
        return params if len(values) <= len(self._segments) else None
