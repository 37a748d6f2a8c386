"""JSON with comments, as VS Code reads ``.vscode/*.json`` and ``devcontainer.json``: comments, trailing commas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# One token at a time: a string (kept whole, so "//" or "," inside it is left alone), a comment, a
# comma that only whitespace or comments separate from a closing bracket, or any other character.
_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<trailing_comma>,(?=(?:\s|//[^\n]*|/\*.*?\*/)*[\]}]))
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_jsonc(text: str) -> str:
    """The strict JSON left once comments and trailing commas are removed (line breaks are kept)."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "comment":
            out.append("\n" * match.group().count("\n"))  # error positions still point at the right line
        elif kind != "trailing_comma":
            out.append(match.group())
    return "".join(out)


def load_jsonc(path: Path) -> Any:
    """Parse a JSON-with-comments file.

    Raises:
        ValueError: When what is left after removing comments and trailing commas is not JSON (the
            message names the file, line and column).
    """
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(strip_jsonc(text))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}, column {error.colno}: {error.msg}") from error
