// Runs AG-UI runs with the official client (@ag-ui/client HttpAgent, whose event verifier checks every
// stream) and prints, as one JSON line, what each run showed. Spec (argv[2], JSON):
// {url, headers, threadId, runs: [{message?, runId?, cancelUrl?, cancelAfterContent?, resume?}]}
// `resume` ({status, payload?}) answers every interrupt the previous run ended with.
import { HttpAgent } from "@ag-ui/client";

const spec = JSON.parse(process.argv[2]);
const agent = new HttpAgent({ url: spec.url, headers: spec.headers || {}, threadId: spec.threadId });
const results = [];
for (const run of spec.runs) {
  if (run.message !== undefined) {
    agent.messages.push({ id: `user-${results.length}-${Date.now()}`, role: "user", content: run.message });
  }
  const seen = {
    types: [], text: "", toolCalls: [], toolResults: [], outcome: null, error: null, runId: null,
    subagents: [], lanes: {}, laneOrder: [], interrupts: [], result: null,
  };
  let contents = 0;
  let cancelling = null;
  const subscriber = {
    onEvent({ event }) {
      seen.types.push(event.type);
      if (event.type === "RUN_STARTED") seen.runId = event.runId;
      if (event.type === "SUBAGENT_STARTED") seen.subagents.push({ id: event.subagentRunId, name: event.name });
      if (event.type === "SUBAGENT_FINISHED" || event.type === "SUBAGENT_ERROR") {
        const lane = seen.subagents.find((s) => s.id === event.subagentRunId);
        if (lane) Object.assign(lane, { end: event.type, result: event.result ?? null, error: event.message ?? null });
      }
      if (event.type === "TEXT_MESSAGE_CONTENT") {
        if (event.subagentRunId) {
          seen.lanes[event.subagentRunId] = (seen.lanes[event.subagentRunId] || "") + event.delta;
          seen.laneOrder.push(event.subagentRunId);
        }
        seen.text += event.delta;
        contents += 1;
        if (run.cancelUrl && contents === run.cancelAfterContent && !cancelling) {
          cancelling = fetch(run.cancelUrl, { method: "POST", headers: spec.headers || {} });
        }
      }
      if (event.type === "TOOL_CALL_START") seen.toolCalls.push({ id: event.toolCallId, name: event.toolCallName, args: "" });
      if (event.type === "TOOL_CALL_ARGS") seen.toolCalls[seen.toolCalls.length - 1].args += event.delta;
      if (event.type === "TOOL_CALL_RESULT") seen.toolResults.push({ id: event.toolCallId, content: event.content });
      if (event.type === "RUN_FINISHED") {
        seen.outcome = (event.outcome && event.outcome.type) || "success";
        seen.interrupts = (event.outcome && event.outcome.interrupts) || [];
        seen.result = event.result ?? null;
      }
      if (event.type === "RUN_ERROR") seen.error = event.message;
    },
  };
  try {
    const parameters = run.runId ? { runId: run.runId } : {};
    if (run.resume) {
      parameters.resume = agent.pendingInterrupts.map((interrupt) => ({ interruptId: interrupt.id, ...run.resume }));
    }
    await agent.runAgent(parameters, subscriber);
  } catch (error) {
    seen.thrown = String((error && error.message) || error);
  }
  if (cancelling) await cancelling;
  results.push(seen);
}
process.stdout.write(JSON.stringify({ threadId: agent.threadId, results }) + "\n");
