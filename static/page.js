// What the app's pages (chat.html, workflow.html) share: the function key in a header, a small
// Markdown renderer and a Server-Sent Events reader. Each page has a script tag with this file as its
// source, which the app's page routes replace with this file's text (http_api._pages.html_page):
// the served page is one response; a page opened from disk loads the file from beside it. Inlined,
// this text must never hold a closing script tag.
"use strict";

// A function key, when the page was opened with one (?code=...), goes along with every API call in
// the x-functions-key header, never in a URL: host request logs record URLs.
function apiHeaders(extra) {
  const headers = { ...(extra || {}) };
  const key = new URLSearchParams(location.search).get("code");
  if (key) headers["x-functions-key"] = key;
  return headers;
}

// A small Markdown renderer for the model's answers: paragraphs, headings, lists, emphasis, inline and
// fenced code, links. Everything is HTML-escaped first, so no markup from the model or the user is ever
// interpreted; only http(s) links become links. A heading of level n becomes <h{n + shift}> (at most
// <h6>), below the titles the page puts above the text.
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function inlineMarkdown(escaped) {
  const codes = [];
  let html = escaped.replace(/`([^`\n]+)`/g, (_, code) => { codes.push(code); return `\u0000${codes.length - 1}\u0000`; });
  html = html
    .replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (_, label, url) =>
      /^https?:\/\//i.test(url) ? `<a href="${url}" rel="noopener noreferrer" target="_blank">${label}</a>` : label)
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w*])\*([^*\n]+)\*(?![\w*])/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>");
  return html.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

function markdownToHtml(text, shift) {
  const lines = escapeHtml(text).split("\n");
  const out = [];
  let paragraph = [];
  let list = null;  // "ul" or "ol" while inside a list
  const flush = () => {
    if (paragraph.length) out.push(`<p>${inlineMarkdown(paragraph.join("\n")).replace(/\n/g, "<br>")}</p>`);
    paragraph = [];
    if (list) { out.push(`</${list}>`); list = null; }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^```/.test(line)) {
      flush();
      const code = [];
      for (i++; i < lines.length && !/^```/.test(lines[i]); i++) code.push(lines[i]);
      out.push(`<pre><code>${code.join("\n")}</code></pre>`);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+\.\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const level = Math.min(heading[1].length + shift, 6);
      out.push(`<h${level}>${inlineMarkdown(heading[2])}</h${level}>`);
    } else if (bullet || numbered) {
      const kind = bullet ? "ul" : "ol";
      if (paragraph.length || list !== kind) flush();
      if (!list) { out.push(`<${kind}>`); list = kind; }
      out.push(`<li>${inlineMarkdown((bullet || numbered)[1])}</li>`);
    } else if (!line.trim()) {
      flush();
    } else {
      if (list) flush();
      paragraph.push(line);
    }
  }
  flush();
  return out.join("");
}

// Server-Sent Events from a fetch body: blank-line separated blocks of id/event/data lines.
async function readEvents(body, onEvent, ended) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    while (!ended()) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = { id: null, event: "message", data: [] };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "id") event.id = value;
          else if (field === "event") event.event = value;
          else if (field === "data") event.data.push(value);
        }
        if (!event.data.length) continue;  // a retry hint or a comment: no event, as EventSource does
        onEvent({ ...event, data: event.data.join("\n") });
        if (ended()) return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
