"""A tool result as the text a stream entry carries."""

from __future__ import annotations

import json
from typing import Any


def result_text(content: Any) -> str:
    """The result of an Agent Framework function-result content as text.

    Text stays as it is; anything else is JSON (or its ``str`` where JSON cannot hold it). A
    result that failed gives its exception's message.
    """
    result = getattr(content, "result", None)
    if result is None and getattr(content, "exception", None):
        return f"error: {content.exception}"
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)
