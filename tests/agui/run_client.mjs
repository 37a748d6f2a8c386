// Runs AG-UI runs with the official client (@ag-ui/client HttpAgent, whose event verifier checks every
// stream) and prints, as one JSON line, what each run showed. Spec (argv[2], JSON):
// {url, headers, threadId, runs: [{message, runId?, cancelUrl?, cancelAfterContent?}]}
import { HttpAgent } from "@ag-ui/client";

const spec = JSON.parse(process.argv[2]);
const agent = new HttpAgent({ url: spec.url, headers: spec.headers || {}, threadId: spec.threadId });
const results = [];
for (const run of spec.runs) {
  agent.messages.push({ id: `user-${results.length}-${Date.now()}`, role: "user", content: run.message });
  const seen = { types: [], text: "", toolCalls: [], toolResults: [], outcome: null, error: null, runId: null };
  let contents = 0;
  let cancelling = null;
  const subscriber = {
    onEvent({ event }) {
      seen.types.push(event.type);
      if (event.type === "RUN_STARTED") seen.runId = event.runId;
      if (event.type === "TEXT_MESSAGE_CONTENT") {
        seen.text += event.delta;
        contents += 1;
        if (run.cancelUrl && contents === run.cancelAfterContent && !cancelling) {
          cancelling = fetch(run.cancelUrl, { method: "POST", headers: spec.headers || {} });
        }
      }
      if (event.type === "TOOL_CALL_START") seen.toolCalls.push({ id: event.toolCallId, name: event.toolCallName, args: "" });
      if (event.type === "TOOL_CALL_ARGS") seen.toolCalls[seen.toolCalls.length - 1].args += event.delta;
      if (event.type === "TOOL_CALL_RESULT") seen.toolResults.push({ id: event.toolCallId, content: event.content });
      if (event.type === "RUN_FINISHED") seen.outcome = (event.outcome && event.outcome.type) || "success";
      if (event.type === "RUN_ERROR") seen.error = event.message;
    },
  };
  try {
    await agent.runAgent(run.runId ? { runId: run.runId } : {}, subscriber);
  } catch (error) {
    seen.thrown = String((error && error.message) || error);
  }
  if (cancelling) await cancelling;
  results.push(seen);
}
process.stdout.write(JSON.stringify({ threadId: agent.threadId, results }) + "\n");
