"""The marker of a cancelled turn's response: an Agent Framework reasoning content with a fixed text.

It is how the stream's end and the committed status both know the turn was stopped. The durable
entity persists it with the answer (as content of a type it does not know) and replays it to the
model with the partial answer on the next turn, where it tells the model its last answer was cut
short. The stream buffer learns of it through the hook it is given (``is_cancelled_response``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent_framework import AgentResponse, Content

from ._af_compat import reasoning_text

CANCELLED_MARKER_TEXT = "[stopped: the turn was cancelled]"
"""The text of the reasoning content that marks a cancelled turn's response."""


def cancelled_marker() -> Content:
    """The content that marks a response as the answer of a cancelled turn (see the module)."""
    return Content.from_text_reasoning(text=CANCELLED_MARKER_TEXT)


def is_cancelled_marker(content: Any) -> bool:
    """Whether ``content`` (an Agent Framework or a durable state content) is the cancellation marker."""
    return reasoning_text(content) == CANCELLED_MARKER_TEXT


def marks_cancelled(messages: Iterable[Any]) -> bool:
    """Whether any of ``messages`` (with ``contents``) carries the cancellation marker."""
    return any(is_cancelled_marker(content) for message in messages for content in message.contents)


def is_cancelled_response(response: AgentResponse) -> bool:
    """Whether an agent's final response is a cancelled turn's (the stream buffer's ``is_cancelled_response``)."""
    return marks_cancelled(response.messages)
