"""The sample workflow ``trip_planner``: two agents research at once, a writer drafts, a person approves.

The graph, as Agent Framework builds it (each agent is an ``AgentExecutor``; the other steps are
executors that the durable host runs as activities)::

    intake ──┬─> DestinationResearcher ──┐
             └─> BudgetPlanner ──────────┴─> brief ─> PlanWriter ─> approval ─┐
                                                          ^                   │ rejected, with feedback
                                                          └───────────────────┘

``brief`` sits between the fan-in and the writer because the durable host cannot fan in straight
into an agent. ``approval`` asks a person through ``ctx.request_info`` with the draft as the
request's data and :class:`PlanReview` (``{"approved": bool, "feedback": str}``) as the response
type. An approval yields the plan as the workflow's output; a rejection sends the writer back with
the feedback, at most ``max_revisions`` times (the app setting ``TRIP_PLANNER_MAX_REVISIONS``),
after which the last draft is the output, marked as not approved.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent_framework import (
    Agent,
    AgentExecutor,
    AgentExecutorResponse,
    AgentMiddleware,
    BaseChatClient,
    Executor,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
)

from ._tools import estimate_trip_budget, get_destination_weather

TRIP_PLANNER_NAME = "trip_planner"
MAX_REVISIONS_SETTING = "TRIP_PLANNER_MAX_REVISIONS"
DEFAULT_MAX_REVISIONS = 3
_ROUND_KEY = "trip_planner.round"

RESEARCHER_NAME = "DestinationResearcher"
BUDGET_PLANNER_NAME = "BudgetPlanner"
WRITER_NAME = "PlanWriter"

_RESEARCHER_INSTRUCTIONS = """\
You research a trip's destination: the typical weather for the dates (use get_destination_weather),
what is worth seeing, and what to pack. Answer in one short paragraph of plain text."""

_BUDGET_INSTRUCTIONS = """\
You plan a trip's budget and logistics: how to get there and around, where to stay, and a rough
budget (use estimate_trip_budget when nights or travellers are known). One short paragraph."""

_WRITER_INSTRUCTIONS = """\
You write a traveller's trip plan from a destination brief and a budget brief: a short day-by-day
plan in plain text. When you are given feedback on a draft, rewrite the plan to address it."""


@dataclass
class PlanDraft:
    """The request a person answers: the writer's draft and which round of review it is (1 for the first)."""

    draft: str
    round: int


@dataclass
class PlanReview:
    """A person's answer to a :class:`PlanDraft`: approve it, or ask for changes with feedback."""

    approved: bool
    feedback: str = ""


def max_revisions_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``TRIP_PLANNER_MAX_REVISIONS`` (default 3): how many times a rejected draft is rewritten.

    Raises:
        ValueError: If the setting is not a whole number from 0 to 20.
    """
    raw = (environ if environ is not None else os.environ).get(MAX_REVISIONS_SETTING, "").strip()
    if not raw:
        return DEFAULT_MAX_REVISIONS
    if not raw.isdigit() or not 0 <= int(raw) <= 20:
        raise ValueError(f"{MAX_REVISIONS_SETTING} must be a whole number from 0 to 20, not {raw!r}.")
    return int(raw)


class Intake(Executor):
    """The start: hands the traveller's request to both researchers at once (the fan-out)."""

    @handler
    async def start(self, request: str, ctx: WorkflowContext[str]) -> None:
        """Send the request on unchanged."""
        await ctx.send_message(request)


class Brief(Executor):
    """The fan-in: combines both researchers' answers into the writer's brief."""

    @handler
    async def combine(self, answers: list[AgentExecutorResponse], ctx: WorkflowContext[str]) -> None:
        """Send the writer one message that quotes every researcher's answer."""
        parts = [f"{answer.executor_id}: {answer.agent_response.text}" for answer in answers]
        await ctx.send_message("Write the trip plan from these briefs. " + " ".join(parts))


class Approval(Executor):
    """Asks a person to approve the writer's draft; a rejection sends the writer back with the feedback."""

    def __init__(self, *, max_revisions: int, id: str = "approval") -> None:
        super().__init__(id=id)
        self.max_revisions = max_revisions

    @handler
    async def review(self, written: AgentExecutorResponse, ctx: WorkflowContext) -> None:
        """Ask for a review of the draft; the round is counted in the workflow's shared state."""
        round_ = int(ctx.get_state(_ROUND_KEY, 0) or 0) + 1
        ctx.set_state(_ROUND_KEY, round_)
        await ctx.request_info(PlanDraft(draft=written.agent_response.text, round=round_), PlanReview)

    @response_handler
    async def reviewed(
        self, request: PlanDraft, review: PlanReview, ctx: WorkflowContext[str, dict[str, object]]
    ) -> None:
        """Yield the approved plan, or ask the writer for a revision while rounds are left."""
        if review.approved or request.round > self.max_revisions:
            await ctx.yield_output({"plan": request.draft, "approved": review.approved, "rounds": request.round})
            return
        await ctx.send_message(
            f"Revise the plan (draft {request.round}) with this feedback: {review.feedback or 'make it better'}"
        )


def build_trip_planner(
    client: BaseChatClient,
    *,
    middleware: Sequence[AgentMiddleware] = (),
    max_revisions: int = DEFAULT_MAX_REVISIONS,
) -> Workflow:
    """Build the ``trip_planner`` workflow.

    Args:
        client: The chat client every agent of the workflow uses.
        middleware: Agent middleware for each agent (failure reporting, cancellation, tracing).
        max_revisions: How many times a rejected draft is rewritten; after that the last draft is the
            output, with ``approved`` false.

    Returns:
        The workflow, named ``trip_planner``; its agents become entities
        ``dafx-trip_planner-{agent name}`` and it runs as the orchestration ``dafx-trip_planner``.

    Raises:
        ValueError: If ``max_revisions`` is negative.
    """
    if max_revisions < 0:
        raise ValueError("max_revisions must not be negative.")

    def agent(name: str, instructions: str, tools: list[object]) -> AgentExecutor:
        built = Agent(client=client, name=name, instructions=instructions, tools=tools, middleware=list(middleware))
        return AgentExecutor(built, id=name)

    researcher = agent(RESEARCHER_NAME, _RESEARCHER_INSTRUCTIONS, [get_destination_weather])
    budget = agent(BUDGET_PLANNER_NAME, _BUDGET_INSTRUCTIONS, [estimate_trip_budget])
    writer = agent(WRITER_NAME, _WRITER_INSTRUCTIONS, [])
    intake, brief, approval = Intake(id="intake"), Brief(id="brief"), Approval(max_revisions=max_revisions)
    return (
        WorkflowBuilder(name=TRIP_PLANNER_NAME, start_executor=intake, output_from=[approval])
        .add_fan_out_edges(intake, [researcher, budget])
        .add_fan_in_edges([researcher, budget], brief)
        .add_edge(brief, writer)
        .add_edge(writer, approval)
        .add_edge(approval, writer)
        .build()
    )
