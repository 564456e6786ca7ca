// crew-mcp approvals inbox. Draws /approvals/api/state with DOM calls only (never innerHTML): crew output goes through
// renderMarkdown (markdown.js, the run card's renderer, loaded first), everything else lands as text. Polls for
// changes while the tab is visible; every POST carries the page's CSRF token in X-CSRF-Token.
"use strict";

(() => {
  const ROOT = "/approvals";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const drafts = new Map();          // kickoff_id/task_id -> feedback typed but not sent
  let data = null;                   // the last state
  let selected = null;               // the selected kickoff_id
  let shownKey = "";                 // what the detail pane shows (redrawn only when it changes)
  let timer = null;
  let fastUntil = 0;                 // after an action, poll every second for a while
  let busy = false;
  let lastNotice = null;
  let renderedAt = 0;

  const VIA = {
    inbox: "in the inbox", app: "in the chat card", tool: "in chat", elicitation: "in a chat form",
    cli: "in a terminal", expiry: "when the approval expired",
  };
  const STATES = {
    running: ["Running", "info"], waiting_for_human: ["Needs review", "warn"], completed: ["Completed", "ok"],
    failed: ["Failed", "danger"], cancelled: ["Stopped", ""], unconfirmed: ["Starting", "info"],
    may_have_started: ["May have started", "warn"], kickoff_failed: ["Not started", "danger"],
    not_found: ["Lost", "danger"], unknown: ["Unknown", ""],
  };

  // ------------------------------------------------------------------------------------------ helpers

  function text(tag, className, value) { return el(tag, className, String(value == null ? "" : value)); }

  function badge(state) {
    const [label, tone] = STATES[state] || [state, ""];
    const b = text("span", "badge", label);
    if (tone) b.dataset.tone = tone;
    return b;
  }

  function clock(iso) {
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function ago(iso) {
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString([], { month: "short", day: "numeric" });
  }

  function timeEl(iso) {
    const t = text("time", "", ago(iso));
    t.dateTime = iso;
    t.title = new Date(iso).toLocaleString();
    return t;
  }

  function plain(markdown) {
    return String(markdown || "")
      .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")           // links: their text
      .replace(/[*_`~]+/g, "")                             // emphasis and code marks
      .replace(/^\s*(#{1,6}|>|[-+]|\d+[.)])\s+/gm, "")     // heading, quote and list marks
      .replace(/\|/g, " ").replace(/\s+/g, " ").trim().slice(0, 240);
  }

  // A pending output's title: its first line when that is a heading, else nothing (the crew names it).
  function headline(markdown) {
    const first = String(markdown || "").trim().split("\n", 1)[0];
    return /^#{1,6}\s/.test(first) ? plain(first).slice(0, 90) : "";
  }

  function inputsLine(inputs) {
    return Object.values(inputs || {}).filter(Boolean).join(" · ").slice(0, 90);
  }

  function progressEl(p, live) {
    if (!p || !p.total) return null;
    const done = Math.min(p.completed || 0, p.total);
    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", "Tasks done");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", String(p.total));
    bar.setAttribute("aria-valuenow", String(done));
    const fill = el("span");
    fill.style.width = `${Math.round((100 * done) / p.total)}%`;
    bar.append(fill);
    if (done === p.total) bar.dataset.tone = "ok";
    const words = [`${done} of ${p.total} tasks done`];
    if (live && p.current_task) words.push(`now: ${p.current_task}${p.current_agent ? ` by ${p.current_agent}` : ""}`);
    return el("div", "progress", bar, text("p", "", words.join(" · ")));
  }

  function who(event) {
    if (event.by === "model") return event.who === "you" ? "The assistant, for you," : `The assistant, for ${event.who},`;
    if (event.by === "system") return "crew-mcp";
    return event.who === "you" ? "You" : event.who;
  }

  function eventLine(event) {
    const parts = [text("b", "", who(event)), " "];
    if (event.kind === "stop") {
      const said = { stopped: "stopped", already_ended: "tried to stop (it had already ended)",
        refused: "tried to stop (the crew refused)", unsupported: "tried to stop (the crew cannot stop runs)" };
      parts.push(said[event.outcome] || "stopped", " a run of ", text("b", "", event.crew));
    } else {
      parts.push(event.approve ? "approved " : "sent back ", text("b", "", event.task_id), " of ", text("b", "", event.crew));
    }
    parts.push(` ${VIA[event.via] || `via ${event.via}`}`);
    if (event.outcome === "unknown") parts.push(" (the crew's answer was lost)");
    return parts;
  }

  function toast(message, tone) {
    const t = $("toast");
    t.textContent = message;
    t.dataset.tone = tone || "info";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 8000);
  }

  function live(message, tone) {
    const l = $("live");
    l.textContent = message;
    if (tone) l.dataset.tone = tone; else delete l.dataset.tone;
  }

  // ------------------------------------------------------------------------------------------ network

  async function post(path, body) {
    const response = await fetch(ROOT + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let answer = {};
    try { answer = await response.json(); } catch (_) { /* an empty or non-JSON refusal */ }
    if (response.status === 401) signedOut();
    return { ok: response.ok, status: response.status, body: answer };
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch(`${ROOT}/api/state`, {
        credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
      });
      if (response.status === 401) { signedOut(); return; }
      const body = await response.json();
      if (!response.ok) {
        live(body.error || "The inbox could not be read.", "danger");
      } else {
        // Redraw on a change, and now and then anyway so "3 min ago" stays true.
        if (!data || body.version !== data.version || Date.now() - renderedAt > 60000) render(body);
        else data = body;
        live(`Live · updated ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`);
      }
    } catch (_) {
      live("Offline · retrying", "warn");
    }
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    if (document.hidden) return;
    const seconds = Date.now() < fastUntil ? 1 : (data ? data.poll_seconds : 5);
    timer = setTimeout(refresh, seconds * 1000);
  }

  function signedOut() {
    clearTimeout(timer);
    live("Signed out", "danger");
    const link = text("a", "", "Sign in again");
    link.href = ROOT;
    const t = $("toast");
    t.replaceChildren("Your session has ended. ", link);
    t.dataset.tone = "danger";
    t.hidden = false;
  }

  // ------------------------------------------------------------------------------------------ drawing

  function render(state) {
    data = state;
    renderedAt = Date.now();
    // A keyboard user on a list item keeps their place when the lists are redrawn.
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.run : null;
    $("policy").textContent = state.policy === "human"
      ? "Approval policy: human. Only people decide; decisions here count as yours."
      : "Decisions here are recorded as yours, made in the inbox.";
    const ids = new Set([...state.pending.map((p) => p.kickoff_id), ...state.runs.map((r) => r.kickoff_id)]);
    if (!selected || (!ids.has(selected) && !lastNotice)) {
      selected = state.pending.length ? state.pending[0].kickoff_id : null;
    }
    renderLists(state);
    renderDetail(false);
    renderHistory(state.history);
    if (focused) {
      const again = document.querySelector(`.item[data-run="${CSS.escape(focused)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  function renderLists(state) {
    document.title = `${state.pending.length ? `(${state.pending.length}) ` : ""}Approvals · crew-mcp`;
    const count = $("pending-count");
    count.textContent = String(state.pending.length);
    count.dataset.hot = String(state.pending.length > 0);
    $("pending-empty").hidden = state.pending.length > 0;
    $("pending-list").replaceChildren(...state.pending.map((p) => {
      const tag = p.expired ? badge("waiting_for_human") : text("span", "badge", p.round > 1 ? `Round ${p.round}` : "New");
      if (p.expired) tag.textContent = "Overdue";
      else tag.dataset.tone = p.round > 1 ? "info" : "warn";
      const owner = p.yours ? "your run" : `${p.owner}'s run`;
      const title = headline(p.output) || inputsLine(p.inputs) || p.crew;
      const rest = headline(p.output) ? String(p.output).trim().split("\n").slice(1).join("\n") : p.output;
      return listItem(p.kickoff_id, [
        el("span", "line", text("span", "title", title), tag),
        text("span", "sub", `${p.crew} · ${p.task_id} · ${owner} · ${ago(p.waiting_since)}`),
        text("span", "excerpt", plain(rest)),
      ]);
    }));
    const reviewing = new Set(state.pending.map((p) => p.kickoff_id));
    const runs = state.runs.filter((r) => !reviewing.has(r.kickoff_id));
    $("runs-count").textContent = String(runs.length);
    $("runs-empty").hidden = runs.length > 0;
    $("runs-list").replaceChildren(...runs.map((r) => {
      const p = r.progress || {};
      const progress = p.total ? `${Math.min(p.completed || 0, p.total)} of ${p.total} tasks · ` : "";
      return listItem(r.kickoff_id, [
        el("span", "line", text("span", "title", inputsLine(r.inputs) || r.crew), badge(r.state)),
        text("span", "sub", `${inputsLine(r.inputs) ? `${r.crew} · ` : ""}${progress}started ${ago(r.created_at)}`),
      ]);
    }));
  }

  function listItem(kickoffId, children) {
    const button = el("button", "item", ...children);
    button.type = "button";
    button.dataset.run = kickoffId;
    if (kickoffId === selected) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => select(kickoffId, true));
    return el("li", "", button);
  }

  function select(kickoffId, byUser) {
    selected = kickoffId;
    lastNotice = null;
    for (const b of document.querySelectorAll(".item")) {
      if (b.dataset.run === kickoffId) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
    }
    renderDetail(true);
    if (byUser) {
      $("detail").focus({ preventScroll: true });
      if (window.matchMedia("(max-width: 820px)").matches) $("detail").scrollIntoView({ behavior: "smooth" });
    }
  }

  function renderDetail(force) {
    const pending = data.pending.find((p) => p.kickoff_id === selected);
    const run = data.runs.find((r) => r.kickoff_id === selected);
    const key = JSON.stringify(pending
      ? ["p", pending.kickoff_id, pending.fingerprint, data.viewer.may_decide]
      : run ? ["r", run, data.history.filter((e) => e.kickoff_id === selected).length] : ["none", lastNotice]);
    if (!force && key === shownKey) return;
    shownKey = key;
    const detail = $("detail");
    if (pending) detail.replaceChildren(reviewCard(pending));
    else if (run) detail.replaceChildren(runCard(run));
    else detail.replaceChildren(placeholder());
  }

  function placeholder() {
    const box = el("div", "placeholder");
    if (lastNotice) {
      box.append(text("p", "big", lastNotice), text("p", "muted", "This run no longer waits for you."));
    } else if (data.pending.length === 0) {
      box.append(text("p", "big", "You're all caught up."), text("p", "muted", "Nothing waits for your review."));
    } else {
      box.append(text("p", "big", "Select a run to review it."));
    }
    return box;
  }

  function head(eyebrow, title, meta, tag) {
    const left = el("div", "", text("div", "eyebrow", eyebrow), text("h2", "", title));
    if (meta) left.append(text("div", "meta", meta));
    return el("header", "card-head", left, tag);
  }

  function kv(values) {
    const dl = el("dl", "kv");
    for (const [k, v] of Object.entries(values)) dl.append(text("dt", "", k), text("dd", "", v));
    return dl;
  }

  function reviewCard(p) {
    const card = el("article", "card");
    card.dataset.tone = "review";
    card.setAttribute("aria-labelledby", "review-title");
    const owner = p.yours ? "your run" : `${p.owner}'s run`;
    const eyebrow = p.round > 1 ? `Review · round ${p.round} (revised after feedback)` : "Review requested";
    const tag = badge("waiting_for_human");
    if (p.expired) tag.textContent = "Overdue";
    const header = head(eyebrow, p.crew, `Task ${p.task_id} · ${owner} · waiting since ${clock(p.waiting_since)} · run ${p.kickoff_id}`, tag);
    header.querySelector("h2").id = "review-title";
    const body = el("div", "card-body");
    const progress = progressEl(p.progress, true);
    if (progress) body.append(progress);
    if (Object.keys(p.inputs).length) {
      const box = el("details", "box", text("summary", "", `Inputs (${Object.keys(p.inputs).length})`), el("div", "inner", kv(p.inputs)));
      body.append(box);
    }
    if (p.earlier.length) {
      body.append(text("div", "output-label", "Earlier decisions"));
      body.append(el("ol", "earlier", ...p.earlier.map((e) => {
        const li = el("li", "", ...eventLine(e), ` · ${clock(e.at)}`);
        if (e.feedback) li.append(el("div", "", el("q", "", e.feedback)));
        return li;
      })));
    }
    body.append(text("div", "output-label", p.round > 1 ? "Revised output to review" : "Output to review"));
    const output = el("div", "md output", renderMarkdown(p.output));
    output.id = "review-output";
    output.tabIndex = 0;
    output.setAttribute("aria-label", "Output to review");
    body.append(output, decideForm(p));
    card.append(header, body);
    return card;
  }

  function decideForm(p) {
    const draftKey = `${p.kickoff_id}/${p.task_id}`;
    const form = el("form", "decide");
    form.noValidate = true;
    const label = el("label", "", "Feedback for the crew ", text("span", "", "(required to reject)"));
    label.htmlFor = "feedback";
    const box = el("textarea");
    box.id = "feedback";
    box.rows = 3;
    box.placeholder = "What should change? Or a note to go with your approval.";
    box.value = drafts.get(draftKey) || "";
    box.setAttribute("aria-describedby", "feedback-error decide-hint");
    box.addEventListener("input", () => { drafts.set(draftKey, box.value); box.removeAttribute("aria-invalid"); error.hidden = true; });
    const error = text("p", "field-error", "");
    error.id = "feedback-error";
    error.hidden = true;
    error.setAttribute("aria-live", "assertive");
    const approve = button("Approve", "btn btn-approve", () => decide(p, true, box, error));
    const reject = button("Reject", "btn btn-reject", () => decide(p, false, box, error));
    const actions = el("div", "actions", approve, reject, el("span", "spacer"));
    if (p.may_stop) actions.append(button("Stop run", "btn btn-stop", () => confirmStop(p.kickoff_id, p.crew)));
    const may = data.viewer.may_decide;
    approve.disabled = reject.disabled = !may;
    const hint = text("p", "hint", may
      ? "Your decision goes straight to the crew and is recorded as yours."
      : "Your account may not decide on runs here (it lacks the crew:approve scope).");
    hint.id = "decide-hint";
    form.append(label, box, error, actions, hint);
    form.addEventListener("submit", (event) => event.preventDefault());
    return form;
  }

  function button(label, className, onClick) {
    const b = text("button", className, label);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function runCard(r) {
    const card = el("article", "card");
    const about = inputsLine(r.inputs);
    const started = `${about ? `${about} · ` : ""}started ${clock(r.created_at)} · run ${r.kickoff_id}`;
    const body = el("div", "card-body");
    const progress = progressEl(r.progress, r.state === "running");
    if (progress) body.append(progress);
    if (r.result) {
      const output = el("div", "md output", renderMarkdown(r.result));
      output.id = "result-output";
      output.tabIndex = 0;
      output.setAttribute("aria-label", "Result");
      body.append(text("div", "output-label", "Result"), output);
    } else if (r.state === "running") {
      body.append(text("p", "muted", "The crew is working. Its next review or its result shows up here by itself."));
    } else if (r.state === "waiting_for_human") {
      body.append(text("p", "muted", "Waiting for a reviewer: the approval rules let only reviewers decide on your runs."));
    }
    if (r.error) {
      const problem = text("p", "notice", r.error);
      problem.dataset.tone = "danger";
      body.append(problem);
    }
    const events = data.history.filter((e) => e.kickoff_id === r.kickoff_id);
    if (events.length) {
      body.append(text("div", "output-label", "Decisions and stops"));
      body.append(el("ol", "earlier", ...events.map((e) => {
        const li = el("li", "", ...eventLine(e), ` · ${clock(e.at)}`);
        if (e.feedback && e.kind === "decision") li.append(el("div", "", el("q", "", e.feedback)));
        return li;
      })));
    }
    if (r.may_stop) body.append(el("div", "actions", button("Stop run", "btn btn-stop", () => confirmStop(r.kickoff_id, r.crew))));
    card.append(head("Run", r.crew, started, badge(r.state)), body);
    return card;
  }

  function renderHistory(events) {
    $("history-empty").hidden = events.length > 0;
    $("history-list").hidden = events.length === 0;
    $("history-list").replaceChildren(...events.map((e) => {
      const mark = text("span", "mark", e.kind === "stop" ? "■" : e.approve ? "✓" : "↺");
      mark.dataset.tone = e.kind === "stop" ? "stop" : e.approve ? "ok" : "danger";
      mark.setAttribute("aria-hidden", "true");
      const li = el("li", "", mark, el("span", "what", ...eventLine(e)), timeEl(e.at));
      const why = el("div", "why");
      if (e.feedback) why.append(el("q", "", e.feedback), " · ");
      const known = data.runs.some((r) => r.kickoff_id === e.kickoff_id) || data.pending.some((p) => p.kickoff_id === e.kickoff_id);
      if (known) {
        const open = button(`run ${e.kickoff_id}`, "link", () => { select(e.kickoff_id, true); $("detail").scrollIntoView({ behavior: "smooth" }); });
        open.setAttribute("aria-label", `Show run ${e.kickoff_id}`);
        why.append(open);
      } else {
        why.append(`run ${e.kickoff_id}`);
      }
      li.append(why);
      return li;
    }));
  }

  // ------------------------------------------------------------------------------------------ actions

  function setBusy(on) {
    busy = on;
    for (const b of document.querySelectorAll(".detail button")) {
      const deciding = b.classList.contains("btn-approve") || b.classList.contains("btn-reject");
      b.disabled = on || (deciding && !data.viewer.may_decide);
    }
    document.body.setAttribute("aria-busy", String(on));
  }

  async function decide(p, approve, box, error) {
    if (busy) return;
    const feedback = box.value.trim();
    if (!approve && !feedback) {
      error.textContent = "Say what should change: the crew redoes the task with your feedback.";
      error.hidden = false;
      box.setAttribute("aria-invalid", "true");
      box.focus();
      return;
    }
    setBusy(true);
    try {
      const answer = await post("/api/decide", {
        kickoff_id: p.kickoff_id, task_id: p.task_id, approve, feedback, fingerprint: p.fingerprint,
      });
      if (answer.ok) {
        drafts.delete(`${p.kickoff_id}/${p.task_id}`);
        lastNotice = p.yours ? null : answer.body.notice;
        toast(answer.body.notice, "success");
      } else if (answer.status !== 401) {
        toast(answer.body.error || `The decision was refused (HTTP ${answer.status}).`, "danger");
      }
    } catch (_) {
      toast("The inbox could not reach crew-mcp; nothing is known to be sent. Try again.", "danger");
    } finally {
      setBusy(false);
    }
    fastUntil = Date.now() + 20000;
    await refresh();
    renderDetail(true);
  }

  function confirmStop(kickoffId, crew) {
    const dialog = $("stop-dialog");
    $("stop-text").textContent = `The crew ${crew} stops working on run ${kickoffId}. This cannot be undone.`;
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "stop") return;
      setBusy(true);
      try {
        const answer = await post("/api/stop", { kickoff_id: kickoffId });
        if (answer.ok) toast(answer.body.notice, "success");
        else if (answer.status !== 401) toast(answer.body.error || `Stopping was refused (HTTP ${answer.status}).`, "danger");
      } catch (_) {
        toast("The inbox could not reach crew-mcp; the run may still be going. Try again.", "danger");
      } finally {
        setBusy(false);
      }
      fastUntil = Date.now() + 10000;
      await refresh();
      renderDetail(true);
    };
    dialog.showModal();
    $("stop-cancel").focus();
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh();
})();
