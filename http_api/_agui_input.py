"""An AG-UI 1.0 ``RunAgentInput`` as this app's turn: checked, with a reason for whatever is refused.

``threadId`` is the session id and ``runId`` the turn's correlation id (both must be valid ids of
this app); the last ``user`` message is the turn's message, because the durable agent keeps the
conversation itself (earlier messages of the input are history it already has). Frontend-defined
``tools`` are refused (400): a durable turn runs in a worker, not in the request, so a call the
browser must answer cannot be waited for inside it; an empty ``tools`` list is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ag_ui.core import Message, RunAgentInput, UserMessage
from azurefunctions.extensions.http.fastapi import Request
from pydantic import ValidationError

from valkey_buffer import InvalidIdError, validate_id

from ._errors import RequestError
from ._run_input import MAX_MESSAGE_CHARS, RunInput, _json_object, _read_body


@dataclass(frozen=True)
class AguiRun:
    """A checked AG-UI run request.

    Attributes:
        session_id: ``threadId``.
        correlation_id: ``runId``.
        message: The last user message's text.
        messages: The input's messages (a ``MESSAGES_SNAPSHOT`` repeats them).
    """

    session_id: str
    correlation_id: str
    message: str
    messages: tuple[Message, ...]

    def run_input(self) -> RunInput:
        """The turn this run starts, in the terms of the app's other routes."""
        return RunInput(message=self.message, session_id=self.session_id, wait_for_response=False)


async def parse_agui_input(req: Request) -> AguiRun:
    """Read and check a ``RunAgentInput`` body.

    Raises:
        RequestError: 400 for a body that is not a ``RunAgentInput``, ids that are not valid, no
            user message, or frontend tools; 413 for a body or message too large.
    """
    run = await read_run_agent_input(req)
    message = last_user_text(run)
    if not message:
        raise RequestError("The run has no user message with text: the last user message is the turn's message.")
    return AguiRun(run.thread_id, run.run_id, message, tuple(run.messages))


async def read_run_agent_input(req: Request) -> RunAgentInput:
    """Read a ``RunAgentInput`` body whose ``threadId`` and ``runId`` are valid ids, without frontend tools.

    Raises:
        RequestError: 400 for a body that is not a ``RunAgentInput``, ids that are not valid, or
            frontend tools; 413 for a body too large.
    """
    body = _json_object(await _read_body(req))
    try:
        run = RunAgentInput.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors()[:3]
        )
        raise RequestError(f"The body is not an AG-UI RunAgentInput: {problems}.") from None
    try:
        validate_id(run.thread_id, "threadId")
        validate_id(run.run_id, "runId")
    except InvalidIdError as error:
        raise RequestError(str(error)) from None
    if run.tools:
        raise RequestError(
            "Frontend-defined tools are not supported: a durable turn runs in a worker and cannot wait for the "
            "browser to answer a call. Send the run without 'tools'."
        )
    return run


def last_user_text(run: RunAgentInput) -> str:
    """The text of the input's last user message ('' without one).

    Raises:
        RequestError: 413 for a message longer than the app takes.
    """
    users = [message for message in run.messages if isinstance(message, UserMessage)]
    message = _text(users[-1]) if users else ""
    if len(message) > MAX_MESSAGE_CHARS:
        raise RequestError(f"The message is longer than {MAX_MESSAGE_CHARS} characters.", 413)
    return message


def _text(message: UserMessage) -> str:
    if isinstance(message.content, str):
        return message.content.strip()
    # Multimodal content: the text parts, joined (the agent takes text).
    return "".join(getattr(part, "text", "") or "" for part in message.content).strip()
