"""A function app's orchestrator and activity functions, and how their payloads and activities run here.

Payloads keep the Functions form: an orchestrator's and an activity's input and output travel
through the backend as the JSON text the SDK produced, so custom objects (``to_json``/``from_json``)
arrive as the SDK wrote them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.durable_functions.models.utils.df_serialization import df_dumps, df_loads
from durabletask import task as dt

from ._indexing import functions_of

_ORCHESTRATION_TRIGGER = "orchestrationTrigger"
_ACTIVITY_TRIGGER = "activityTrigger"


@dataclass(frozen=True)
class OrchestrationFunctions:
    """The orchestrator and activity functions of a function app, by name."""

    orchestrators: dict[str, Callable[[Any], str]]
    activities: dict[str, tuple[Callable[..., Any], str]]  # name -> (user function, its input parameter)


def orchestration_functions_of(app: Any) -> OrchestrationFunctions:
    """Index the app's orchestration and activity triggers, as the Python worker does through ``get_functions()``."""
    orchestrators: dict[str, Callable[[Any], str]] = {}
    activities: dict[str, tuple[Callable[..., Any], str]] = {}
    for function in functions_of(app):
        trigger = function.get_trigger()
        kind = str(getattr(trigger, "type", "") or "")
        name = function.get_function_name() or function.get_user_function().__name__
        if kind == _ORCHESTRATION_TRIGGER:
            orchestrators[name] = function.get_user_function()
        elif kind == _ACTIVITY_TRIGGER:
            activities[name] = (function.get_user_function(), trigger.name)
    return OrchestrationFunctions(orchestrators, activities)


def to_payload(value: Any) -> str | None:
    """A client's input as it travels through the backend to a bridged orchestrator: the SDK's JSON text."""
    return df_dumps(value) if value is not None else None


def from_payload(value: Any) -> Any:
    """A bridged orchestrator's input or output, read back from the backend, as the Functions client returns it."""
    return json.loads(value) if isinstance(value, str) else value


def loads_text(value: Any) -> str | None:
    # What the backend hands back for a payload this module sent as JSON text.
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def activity_runner(name: str, function: Callable[..., Any], input_param: str) -> Callable[[Any, Any], str]:
    """A Durable Task activity that calls a Functions activity the way the Python worker does.

    The input arrives as the JSON text the orchestrator's SDK wrote and is decoded with the SDK's
    serializer; the result goes back as JSON text, as the worker's activity output converter writes it.
    """
    wants_context = "context" in inspect.signature(function).parameters and input_param != "context"

    def run(ctx: dt.ActivityContext, input_json: Any) -> str:
        text = loads_text(input_json)
        value = df_loads(text) if text is not None else None
        kwargs: dict[str, Any] = {input_param: value}
        if wants_context:
            kwargs["context"] = ctx
        result = function(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return df_dumps(result)

    run.__name__ = name
    return run


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
