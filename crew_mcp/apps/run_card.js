// The crew-mcp run card: a hand-written JSON-RPC client over postMessage (the MCP Apps protocol, host only), the
// data flow (tool result → app_run_view long polls → app_decide) and the rendering. Inlined into run_card.html by
// crew_mcp.apps.card_html(), after markdown.js (which provides el() and renderMarkdown()).

const PROTOCOL_VERSION = "2026-01-26";
const WAIT_SECONDS = 25;      // one bounded long poll (app_run_view returns early on any change)
const MIN_POLL_GAP_MS = 2000; // between two polls that brought nothing new
const MAX_POLLS = 240;        // then stop following until the person asks (about 100 minutes at most)
const REQUEST_TIMEOUT_MS = 180000;
const ACTIVE = new Set(["running", "unknown", "waiting_for_human"]);
const STATES = {
  running: ["Running", "info"], waiting_for_human: ["Needs your review", "warning"],
  completed: ["Completed", "success"], failed: ["Failed", "danger"], cancelled: ["Cancelled", "danger"],
  not_found: ["Not found", "danger"], unknown: ["Unknown", ""], unconfirmed: ["Unconfirmed", "warning"],
  kickoff_failed: ["Kickoff failed", "danger"],
};

const $ = (id) => document.getElementById(id);
const state = {
  host: { capabilities: {}, context: {} },
  card: null,        // the last CardView (or a RunView wrapped as one)
  review: null,      // {task_id, token} from app_run_view's result _meta
  canCall: false,    // the host proxies tools/call to crew-mcp
  generation: 0,     // bumped by each decision, so an older poll never overwrites a newer answer
  following: -1,     // the generation the follow loop serves (-1: none)
  stopped: false,
  busy: false,
  rendered: new Map(),
};

// ------------------------------------------------------------------ JSON-RPC over postMessage (host only)
const rpc = { nextId: 1, pending: new Map() };

function post(message) { window.parent.postMessage(message, "*"); }

// A host may hold a tools/call while it asks the person to allow it, so the bound is generous; without one a lost
// answer would leave the card "following" forever.
function request(method, params, timeoutMs = REQUEST_TIMEOUT_MS) {
  const id = rpc.nextId++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      rpc.pending.delete(id);
      reject(new Error("The host did not answer " + method + " in time."));
    }, timeoutMs);
    rpc.pending.set(id, {
      resolve: (value) => { clearTimeout(timer); resolve(value); },
      reject: (error) => { clearTimeout(timer); reject(error); },
    });
    post({ jsonrpc: "2.0", id, method, params });
  });
}

function notify(method, params) { post({ jsonrpc: "2.0", method, params: params || {} }); }

function answer(id, result, error) {
  post(error ? { jsonrpc: "2.0", id, error } : { jsonrpc: "2.0", id, result });
}

window.addEventListener("message", (event) => {
  if (event.source !== window.parent) return;   // only the host may speak to the card
  const msg = event.data;
  if (!msg || typeof msg !== "object" || msg.jsonrpc !== "2.0") return;
  if (typeof msg.method === "string") {
    if (msg.id !== undefined && msg.id !== null) onRequest(msg); else onNotification(msg.method, msg.params || {});
    return;
  }
  const waiting = rpc.pending.get(msg.id);
  if (!waiting) return;
  rpc.pending.delete(msg.id);
  if (msg.error) waiting.reject(new Error(String(msg.error.message || "The host refused the request.")));
  else waiting.resolve(msg.result);
});

function onRequest(msg) {
  if (msg.method === "ping") return answer(msg.id, {});
  if (msg.method === "ui/resource-teardown") { state.stopped = true; return answer(msg.id, {}); }
  answer(msg.id, null, { code: -32601, message: "Method not found: " + msg.method });
}

function onNotification(method, params) {
  if (method === "ui/notifications/tool-result") onToolResult(params);
  else if (method === "ui/notifications/tool-input") onToolInput(params.arguments || {});
  else if (method === "ui/notifications/host-context-changed") applyContext(params);
  else if (method === "ui/notifications/tool-cancelled") {
    if (!state.card) showNotice("The tool call was cancelled" + (params.reason ? ": " + params.reason : "."), "danger");
  }
}

async function callTool(name, args) {
  const result = await request("tools/call", { name, arguments: args });
  if (!result || result.isError) throw new Error(textOf(result) || name + " failed.");
  return result;
}

function textOf(result) {
  const parts = (result && Array.isArray(result.content) ? result.content : []).filter((c) => c && c.type === "text");
  return parts.map((c) => String(c.text)).join("\n").replace(/^Error executing tool \w+: /, "");
}

// ------------------------------------------------------------------------------------- host context
const VAR_NAME = /^--[a-z0-9-]{1,64}$/;
const VAR_VALUE = /^[^;{}<>\\]{1,200}$/;

function applyContext(ctx) {
  Object.assign(state.host.context, ctx || {});
  const root = document.documentElement;
  const theme = state.host.context.theme;
  if (theme === "dark" || theme === "light") root.dataset.theme = theme;
  else root.dataset.theme = matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  const vars = (ctx && ctx.styles && ctx.styles.variables) || {};
  for (const [name, value] of Object.entries(vars)) {
    if (VAR_NAME.test(name) && typeof value === "string" && VAR_VALUE.test(value)) root.style.setProperty(name, value);
  }
}

function watchSize() {
  let queued = false, lastW = 0, lastH = 0;
  const measure = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      const root = document.documentElement, before = root.style.height;
      root.style.height = "max-content";
      const height = Math.ceil(root.getBoundingClientRect().height);
      root.style.height = before;
      const width = Math.ceil(window.innerWidth);
      if (width !== lastW || height !== lastH) {
        lastW = width; lastH = height;
        notify("ui/notifications/size-changed", { width, height });
      }
    });
  };
  measure();
  const observer = new ResizeObserver(measure);
  observer.observe(document.documentElement);
  observer.observe(document.body);
}

// ------------------------------------------------------------------------------------------- data flow
function onToolInput(args) {
  if (!state.card && typeof args.kickoff_id === "string" && args.kickoff_id) {
    $("run-id").textContent = "Run " + args.kickoff_id;
  }
}

function onToolResult(result) {
  const data = result && result.structuredContent;
  if (!result || result.isError || !data) {
    $("crew").textContent = "No run to show";
    showNotice(textOf(result) || "The tool returned no run.", "danger");
    finishLoading();
    return;
  }
  const card = data.run ? data : { run: data, inputs: {}, input_names: [], fingerprint: "" };
  accept(card, result._meta, state.generation);
  if (card.run.kickoff_id) refresh();
}

function accept(card, meta, generation) {
  if (generation !== state.generation) return false;
  const review = meta && meta["crew-mcp/review"];
  const previous = state.card;
  state.card = card;
  // A notice describes the last action; once the run has moved on it is history (the decisions list keeps it).
  // Errors stay until the person acts (Refresh, or a new decision).
  if (previous && previous.fingerprint !== card.fingerprint && $("notice").dataset.tone !== "danger") showNotice("");
  const waiting = card.run.state === "waiting_for_human" && card.run.pending;
  state.review = waiting && review && review.token && review.task_id === card.run.pending.task_id ? review : null;
  render(previous);
  return true;
}

async function refresh(manual) {
  $("refresh").hidden = true;
  if (manual) showNotice("");
  state.stopped = false;
  const id = state.card && state.card.run.kickoff_id;
  if (!id || !state.canCall) { render(state.card); return; }
  const generation = state.generation;
  try {
    const result = await callTool("app_run_view", { kickoff_id: id });
    accept(result.structuredContent, result._meta, generation);
  } catch (err) {
    showNotice("Could not read the run from crew-mcp: " + err.message, "danger");
    $("refresh").hidden = false;
    return;
  }
  follow();
}

// One loop per generation: after a decision a new loop starts at once, while the old one's last poll (which may
// wait on the paused run for a while) ends quietly when it returns.
async function follow() {
  const mine = state.generation;
  if (state.following === mine) return;
  state.following = mine;
  let polls = 0;
  try {
    while (!state.stopped && state.card && ACTIVE.has(state.card.run.state) && mine === state.generation) {
      if (++polls > MAX_POLLS) {
        showNotice("Stopped following this run. Refresh to see where it is.", "");
        $("refresh").hidden = false;
        break;
      }
      const generation = state.generation, since = state.card.fingerprint || "", started = Date.now();
      const result = await callTool("app_run_view", {
        kickoff_id: state.card.run.kickoff_id, wait_seconds: WAIT_SECONDS, since,
      });
      if (!accept(result.structuredContent, result._meta, generation)) break;
      // Never spin: an answer that came back at once with nothing new waits out the gap before the next poll.
      const gap = MIN_POLL_GAP_MS - (Date.now() - started);
      if (state.card.fingerprint === since && gap > 0) await new Promise((r) => setTimeout(r, gap));
    }
  } catch (err) {
    if (mine === state.generation) {
      showNotice("Lost track of the run: " + err.message, "danger");
      $("refresh").hidden = false;
    }
  } finally {
    if (state.following === mine) state.following = -1;
    render(state.card);
  }
}

async function decide(approve) {
  const card = state.card, review = state.review;
  if (!card || !review || state.busy) return;
  const box = $("feedback");
  const feedback = box.value.trim();
  if (!approve && !feedback) {
    const error = $("feedback-error");
    error.textContent = "Tell the crew what to change before rejecting.";
    error.hidden = false;
    box.setAttribute("aria-invalid", "true");
    box.focus();
    return;
  }
  state.busy = approve ? "approve" : "reject";
  render(card);
  const generation = ++state.generation;
  try {
    const result = await callTool("app_decide", {
      kickoff_id: card.run.kickoff_id, task_id: review.task_id, approve, feedback, review_token: review.token,
    });
    box.value = "";
    state.busy = false;
    accept(result.structuredContent, result._meta, generation);
    showNotice(result.structuredContent.notice || (approve ? "Approved." : "Rejected."), "success", true);
  } catch (err) {
    state.busy = false;
    showNotice(err.message, "danger", true);
    render(card);
    refresh();
    return;
  }
  follow();
}

// ------------------------------------------------------------------------------------------ rendering
function render(previous) {
  const card = state.card;
  if (!card) return;
  const run = card.run;
  finishLoading();
  document.title = "Crew run: " + run.crew;
  $("crew").textContent = run.crew;
  $("eyebrow").textContent = "CrewAI crew";
  const started = when(run.created_at);
  $("run-id").textContent = [run.kickoff_id ? "Run " + run.kickoff_id : "No kickoff_id yet", started && "started " + started]
    .filter(Boolean).join(" · ");
  const [label, tone] = STATES[run.state] || [run.state, ""];
  const badge = $("state");
  badge.hidden = false;
  badge.textContent = label;
  badge.dataset.tone = tone;
  badge.dataset.live = String(state.following >= 0 && run.state === "running");
  if (!previous || previous.run.state !== run.state) announce(label);
  renderProgress(run);
  renderInputs(card);
  renderReview(run, previous);
  renderResult(run);
  renderHistory(run);
  $("updated").textContent = "Updated " + clock(new Date());
}

function finishLoading() {
  $("skeleton").hidden = true;
  $("card").setAttribute("aria-busy", "false");
}

function renderProgress(run) {
  const p = run.progress || {};
  const section = $("progress"), bar = $("bar"), text = $("progress-text");
  const total = Number.isFinite(p.total) && p.total > 0 ? p.total : null;
  const done = run.state === "completed" && total ? total : Math.max(0, Number(p.completed) || 0);
  section.hidden = !total && !p.current_task;
  bar.hidden = !total;
  if (total) {
    bar.setAttribute("aria-valuemax", String(total));
    bar.setAttribute("aria-valuenow", String(Math.min(done, total)));
    bar.firstElementChild.style.width = Math.round((100 * Math.min(done, total)) / total) + "%";
    bar.dataset.tone = run.state === "completed" ? "success" : run.state === "failed" ? "danger" : "";
  }
  text.replaceChildren();
  if (total) text.append(`${Math.min(done, total)} of ${total} task${total === 1 ? "" : "s"} done`);
  const now = run.state === "running" ? "Now: " : run.state === "waiting_for_human" ? "Paused at: " : null;
  if (now && p.current_task) {
    if (total) text.append(" · ");
    text.append(now, bold(p.current_task));
    if (p.current_agent) text.append(" by ", bold(p.current_agent));
  }
}

function renderInputs(card) {
  const values = card.inputs || {};
  const names = (card.input_names && card.input_names.length ? card.input_names : Object.keys(values)).slice();
  const box = $("inputs"), body = $("inputs-body");
  box.hidden = names.length === 0;
  if (!names.length) return;
  $("inputs-summary").textContent = `Inputs (${names.length})`;
  const key = JSON.stringify([names, values]);
  if (state.rendered.get("inputs") === key) return;
  state.rendered.set("inputs", key);
  const dl = el("dl", "kv");
  for (const name of names) {
    dl.append(el("dt", "", name), el("dd", "", name in values ? values[name] : "—"));
  }
  body.replaceChildren(dl);
  if (!Object.keys(values).length) body.append(el("p", "muted", "Values are not kept by this server's run ledger."));
}

function renderReview(run, previous) {
  const section = $("review");
  const pending = run.state === "waiting_for_human" ? run.pending : null;
  section.hidden = !pending;
  if (!pending) { state.rendered.delete("review"); return; }
  $("review-title").textContent = "Review: " + pending.task_id;
  const agent = run.progress && run.progress.current_agent;
  $("review-sub").textContent = [agent ? "by " + agent : "", pending.since ? "waiting since " + when(pending.since) : ""]
    .filter(Boolean).join(" · ");
  const revised = (run.decisions || []).some((d) => d.task_id === pending.task_id && !d.approve);
  if (revised) $("review-title").textContent = "Revised output: " + pending.task_id;
  markdownInto($("review-output"), "review", pending.output || "(The crew did not include the output of this task.)");
  const canDecide = Boolean(state.review) && state.canCall && !state.busy;
  $("approve").disabled = !canDecide;
  $("reject").disabled = !canDecide;
  $("feedback").disabled = state.busy;
  $("approve").textContent = state.busy === "approve" ? "Approving…" : "Approve";
  $("reject").textContent = state.busy === "reject" ? "Rejecting…" : "Reject";
  let hint = "Your decision goes straight to the crew and is recorded as yours.";
  if (!state.canCall) hint = "This host does not let the card reach crew-mcp: decide in the chat instead.";
  else if (!state.review) hint = "Loading the review…";
  $("decide-hint").textContent = hint;
  const wasWaiting = previous && previous.run.state === "waiting_for_human" && previous.run.pending
    && previous.run.pending.output === pending.output;
  if (!wasWaiting) announce((revised ? "Revised output of " : "Output of ") + pending.task_id + " is ready for your review.");
}

function renderResult(run) {
  const out = run.output;
  const failed = run.state === "failed" || run.state === "kickoff_failed" || run.state === "cancelled";
  const section = $("result");
  const text = out && (out.text || (out.json ? JSON.stringify(out.json, null, 2) : ""));
  section.hidden = !(run.state === "completed" && text) && !(failed && run.error);
  if (!section.hidden) {
    section.dataset.tone = failed ? "" : "done";
    $("result-title").textContent = failed ? "What went wrong" : "Result";
    $("result-sub").textContent = run.usage && run.usage.total_tokens ? run.usage.total_tokens.toLocaleString() + " tokens" : "";
    markdownInto($("result-output"), "result", failed ? run.error : text);
  }
  const tasks = (out && out.tasks) || [];
  const box = $("tasks");
  box.hidden = !tasks.length;
  if (!tasks.length) return;
  $("tasks-summary").textContent = `Task outputs (${tasks.length})`;
  const key = JSON.stringify(tasks);
  if (state.rendered.get("tasks") === key) return;
  state.rendered.set("tasks", key);
  const body = $("tasks-body");
  body.replaceChildren();
  for (const task of tasks) {
    const head = el("h3", "", task.task_id || "task");
    if (task.agent) head.append(" ", el("span", "sub", "· " + task.agent));
    const md = el("div", "md");
    md.append(renderMarkdown(task.output || "(no output)"));
    body.append(el("div", "task", head, md));
  }
}

function renderHistory(run) {
  const decisions = run.decisions || [];
  $("history").hidden = !decisions.length;
  const list = $("history-list");
  const key = JSON.stringify(decisions);
  if (state.rendered.get("history") === key) return;
  state.rendered.set("history", key);
  list.replaceChildren();
  for (const d of decisions) {
    const mark = el("span", "mark", d.approve ? "✓" : "↺");
    mark.dataset.tone = d.approve ? "success" : "danger";
    mark.setAttribute("aria-hidden", "true");
    const what = el("span", "what", d.approve ? "Approved " : "Rejected ", bold(d.task_id));
    if (d.feedback) what.append(" — “" + d.feedback + "”");
    list.append(el("li", "", mark, what, el("span", "meta", [who(d), when(d.at)].filter(Boolean).join(" · "))));
  }
}

function who(d) {
  if (d.by === "human" && d.via === "app") return "a person, in this card";
  if (d.by === "human" && d.via === "elicitation") return "a person, in a form";
  if (d.by === "human" && d.via === "inbox") return "a person, in the approvals inbox";
  if (d.via === "cli") return "a person, in the terminal";
  if (d.by === "system") return "automatically (no answer in time)";
  return d.by === "model" ? "the assistant, for the user" : d.by;
}

function showNotice(text, tone, focus) {
  const box = $("notice");
  box.hidden = !text;
  box.textContent = text || "";
  box.dataset.tone = tone || "";
  if (focus && text) box.focus({ preventScroll: true });
}

function announce(text) { $("live").textContent = text; }

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : clock(d);
}

function clock(d) {
  const ctx = state.host.context;
  try {
    return new Intl.DateTimeFormat(ctx.locale || undefined, {
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: ctx.timeZone || undefined,
    }).format(d);
  } catch (_) {
    return d.toLocaleTimeString();
  }
}

function bold(text) { return el("b", "", String(text)); }

function markdownInto(container, key, text) {
  if (state.rendered.get(key) === text) return;
  state.rendered.set(key, text);
  container.replaceChildren(renderMarkdown(text));
}

document.addEventListener("click", (event) => {
  const a = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!a || !state.host.capabilities.openLinks) return;
  event.preventDefault();
  request("ui/open-link", { url: a.href }).catch((err) => showNotice("The host did not open the link: " + err.message, "danger"));
});

// -------------------------------------------------------------------------------------------- start
$("approve").addEventListener("click", () => decide(true));
$("reject").addEventListener("click", () => decide(false));
$("refresh").addEventListener("click", () => refresh(true));
$("feedback").addEventListener("input", () => {
  $("feedback-error").hidden = true;
  $("feedback").removeAttribute("aria-invalid");
});
applyContext({});

(async () => {
  try {
    const init = await request("ui/initialize", {
      appInfo: { name: "crew-mcp run card", version: "1" },
      appCapabilities: { availableDisplayModes: ["inline"] },
      protocolVersion: PROTOCOL_VERSION,
    });
    state.host.capabilities = (init && init.hostCapabilities) || {};
    state.canCall = Boolean(state.host.capabilities.serverTools);
    applyContext((init && init.hostContext) || {});
    notify("ui/notifications/initialized", {});
  } catch (err) {
    showNotice("The host did not start the card: " + err.message, "danger");
  }
  watchSize();
})();
