// gravity dashboard: renders /api/plan as a phase tree and keeps it live from /api/events.
// Read-only: it only ever sends GET requests. Every value goes into the DOM as text.
"use strict";

const MARKERS = { completed: "✓", failed: "×", in_progress: "→", rolled_back: "⤺", unstarted: "*" };
const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const MAX_EVENTS = 300;
const HISTORY = 100; // changelog records shown from before the page loaded

const view = {
  opId: null,        // the operation on screen
  phases: new Map(), // phase ID -> phase dict from /api/plan (leaves carry `version`)
  parents: new Map(),// phase ID -> parent ID ("" for top level)
  stream: null,      // EventSource
  shownSeq: 0,       // newest changelog record in the transitions list
  selected: null,    // phase ID shown in the detail panel
  idle: null,        // "idle — nothing is running; …" for a failed operation nobody drives
  running: new Set(),// leaves in progress when the tree was last looked at (for scrolling)
  refreshTimer: null,
  logTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A change event is a transition as the event log writes it (`gravity events -o json`): its
// time is `ts`, ISO 8601 UTC to the millisecond; the page keeps times as epoch seconds.
function stamped(rec) {
  return rec.ts ? Date.parse(rec.ts) / 1000 : 0;
}

function when(ts) {
  // As the CLI prints a time (engine/presentation.py `when`): UTC, 24-hour, whatever the
  // browser's time zone and locale, e.g. "Mon Jan 01 13:04:05 UTC".
  if (!ts) return "-";
  const d = new Date(ts * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${two(d.getUTCDate())} ` +
    `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} UTC`;
}

function withCode(node, text) {
  // Text with `quoted commands` as <code>; every part goes in as text, never as markup.
  node.replaceChildren();
  text.split("`").forEach((part, i) => node.append(i % 2 ? el("code", null, part) : part));
}

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `${resp.status} ${resp.statusText}`);
  return body;
}

function setConn(state, text) {
  const c = $("conn");
  c.dataset.conn = state;
  c.textContent = text;
}

// -- operations list -------------------------------------------------------------------------
async function loadOperations() {
  const doc = await getJSON("/api/operations");
  const list = $("op-list");
  list.replaceChildren();
  $("op-empty").hidden = doc.operations.length > 0;
  for (const op of doc.operations) {
    const li = el("li");
    li.dataset.op = op.id;
    li.classList.toggle("selected", op.id === view.opId);
    li.append(el("span", "op-id", op.id + (op.active ? " *" : "")));
    li.append(el("span", "op-sub", `${op.type}: ${op.plan_name} — ${op.state}`));
    li.addEventListener("click", () => selectOperation(op.id));
    list.append(li);
  }
  return doc;
}

// -- the plan tree ---------------------------------------------------------------------------
function phaseNode(p, parent) {
  view.phases.set(p.id, p);
  view.parents.set(p.id, parent);
  const li = el("li", "phase" + (p.phases ? " composite" : " leaf"));
  li.dataset.phase = p.id;
  const row = el("div", "row");
  row.append(el("span", "marker"), el("span", "phase-id", p.id), el("span", "desc", p.description),
             el("span", "node", p.node || "-"), el("span", "state"));
  row.addEventListener("click", () => showDetail(p.id));
  li.append(row, el("div", "phase-error"));
  if (p.phases) {
    const ul = el("ul");
    for (const child of p.phases) ul.append(phaseNode(child, p.id));
    li.append(ul);
  }
  paintPhase(li, p);
  return li;
}

function rowOf(phaseId) {
  return document.querySelector(`li.phase[data-phase="${CSS.escape(phaseId)}"]`);
}

function paintPhase(li, p) {
  li.dataset.state = p.state;
  const row = li.querySelector(":scope > .row");
  row.querySelector(".marker").textContent = MARKERS[p.state] || "?";
  let label = p.state;
  if (p.phases === undefined && p.attempt > 1) label += ` (attempt ${p.attempt})`;
  row.querySelector(".state").textContent = label;
  const err = li.querySelector(":scope > .phase-error");
  err.textContent = p.state === "failed" && p.error ? p.error.split("\n")[0] : "";
}

function derive(states) {
  // The engine's rule (engine/fsm.py derive) for a composite's state from its leaves.
  const seen = new Set(states);
  if (seen.size === 0) return "unstarted";
  if (seen.size === 1) return states[0];
  if (seen.has("failed")) return "failed";
  if (seen.has("in_progress")) return "in_progress";
  if (!seen.has("completed") && seen.has("rolled_back")) return "rolled_back";
  return "in_progress";
}

function leafStates(p) {
  return p.phases ? p.phases.flatMap((c) => leafStates(view.phases.get(c.id))) : [p.state];
}

function rederiveAncestors(phaseId) {
  for (let parent = view.parents.get(phaseId); parent; parent = view.parents.get(parent)) {
    const p = view.phases.get(parent);
    p.state = derive(leafStates(p));
    const li = rowOf(parent);
    if (li) paintPhase(li, p);
  }
}

function lastUpdate(op) {
  // As `gravity status` has it: the operation's record or its newest phase transition.
  let last = op.updated || 0;
  for (const p of view.phases.values()) if (!p.phases && p.updated > last) last = p.updated;
  return last;
}

function renderHead(op, progress) {
  $("op-title").textContent = `${op.id} — ${op.state}`;
  $("op-meta").textContent = `${op.type}: ${op.plan_name} · created ${when(op.created)}` +
    ` · updated ${when(lastUpdate(op))}` + (op.note ? ` · ${op.note}` : "");
  const idle = op.state === "active" ? view.idle : null;
  $("op-idle").hidden = !idle;
  withCode($("op-idle"), idle || "");
  if (progress) {
    let text = `${progress.completed}/${progress.leaves} phases completed`;
    if (progress.in_progress) text += `, ${progress.in_progress} running`;
    if (progress.failed) text += `, ${progress.failed} failed`;
    if (progress.rolled_back) text += `, ${progress.rolled_back} rolled back`;
    $("progress").textContent = text;
  }
}

function progressFromLeaves() {
  const counts = { leaves: 0, completed: 0, failed: 0, in_progress: 0, rolled_back: 0 };
  for (const p of view.phases.values()) {
    if (p.phases) continue;
    counts.leaves += 1;
    if (p.state in counts) counts[p.state] += 1;
  }
  return counts;
}

async function loadPlan(opId) {
  const url = "/api/plan" + (opId ? `?op=${encodeURIComponent(opId)}` : "");
  const doc = await getJSON(url);
  const changed = doc.operation.id !== view.opId || !$("tree").hasChildNodes();
  view.opId = doc.operation.id;
  view.operation = { ...doc.operation, driven: doc.driven };
  view.idle = doc.idle;
  if (changed) {
    view.phases.clear();
    view.parents.clear();
    view.running.clear();
    $("tree").replaceChildren(...doc.phases.map((p) => phaseNode(p, "")));
    $("event-list").replaceChildren();
    view.shownSeq = 0;
  } else {
    let detailStale = false;
    const walk = (p) => {
      const known = view.phases.get(p.id);
      // A stream record newer than this document wins; the document fills in the rest.
      if (known && !p.phases && (known.version || 0) > (p.version || 0)) return;
      // The note can change without a transition ("retrying in …" once nobody drives it).
      if (known && p.id === view.selected && known.note !== p.note) detailStale = true;
      Object.assign(known || {}, p);
      const li = rowOf(p.id);
      if (li && known) paintPhase(li, known);
      (p.phases || []).forEach(walk);
    };
    doc.phases.forEach(walk);
    if (detailStale) showDetail(view.selected);
  }
  renderHead(doc.operation, doc.progress);
  scrollToRunning();
  $("load-error").hidden = true;
  for (const li of $("op-list").children) li.classList.toggle("selected", li.dataset.op === view.opId);
  return { doc, changed };
}

function scrollToRunning() {
  // Bring a phase that started since the last look into view (the first running one when
  // the tree was just drawn); one that keeps running leaves the operator's scrolling alone.
  const rows = [...document.querySelectorAll('#tree li.leaf[data-state="in_progress"]')];
  const started = rows.find((li) => !view.running.has(li.dataset.phase));
  view.running = new Set(rows.map((li) => li.dataset.phase));
  if (started) started.querySelector(":scope > .row").scrollIntoView({ block: "nearest" });
}

function scheduleRefresh() {
  clearTimeout(view.refreshTimer);
  view.refreshTimer = setTimeout(() => loadPlan(view.opId).catch(showLoadError), 500);
}

function showLoadError(err) {
  $("load-error").textContent = `could not load: ${err.message}`;
  $("load-error").hidden = false;
}

// -- live updates ----------------------------------------------------------------------------
function addEventLine(rec) {
  if (rec.seq <= view.shownSeq) return; // a reconnect replays some history
  view.shownSeq = rec.seq;
  let text = `${when(stamped(rec))} ${rec.phase}: ${rec.from} → ${rec.to} (${rec.action}, attempt ` +
    `${rec.attempt}, node ${rec.node || "-"})`;
  if (rec.error) text += ` error: ${rec.error.split("\n")[0]}`;
  if (rec.note) text += ` [${rec.note}]`;
  const li = el("li", `to-${rec.to}`, text);
  li.dataset.seq = rec.seq;
  const list = $("event-list");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function applyChange(rec) {
  if (rec.operation !== view.opId) return;
  addEventLine(rec);
  const p = view.phases.get(rec.phase);
  if (!p || (p.version || 0) >= rec.version) return; // already shown (older record)
  Object.assign(p, { state: rec.to, version: rec.version, attempt: rec.attempt,
                     action: rec.action, node: rec.node || p.node, error: rec.error || null,
                     note: rec.note || null, updated: stamped(rec) });
  const li = rowOf(p.id);
  if (li) paintPhase(li, p);
  rederiveAncestors(p.id);
  renderHead(view.operation, progressFromLeaves());
  scrollToRunning();
  if (view.selected === p.id) showDetail(p.id);
  scheduleRefresh();
}

function openStream(opId, after) {
  if (view.stream) view.stream.close();
  const url = `/api/events?op=${encodeURIComponent(opId)}&after=${after}`;
  const es = new EventSource(url);
  view.stream = es;
  es.onopen = () => setConn("live", "live");
  es.addEventListener("change", (e) => applyChange(JSON.parse(e.data)));
  es.addEventListener("operation", (e) => {
    const op = JSON.parse(e.data);
    if (op.id !== view.opId) return;
    // The driver came or went, or the operation closed: phase notes such as "retrying in …"
    // and whether it is idle read differently.
    const changed = view.operation &&
      (view.operation.driven !== op.driven || view.operation.state !== op.state);
    view.operation = op;
    renderHead(op, progressFromLeaves());
    loadOperations().catch(() => {});
    if (changed) scheduleRefresh();
  });
  es.addEventListener("end", () => {
    es.close();
    setConn("done", `operation ${view.operation ? view.operation.state : "finished"}`);
    scheduleRefresh();
  });
  es.onerror = () => {
    if (view.stream !== es) return;
    setConn("lost", "reconnecting…");
    if (es.readyState === EventSource.CLOSED) {
      // The server refused or went away: catch up from the plan, then reopen.
      setTimeout(() => {
        if (view.stream === es) reload(view.opId).catch(showLoadError);
      }, 3000);
    }
  };
}

// -- the detail panel: fields, error and the tail of the phase's log -------------------------
async function showDetail(phaseId) {
  const p = view.phases.get(phaseId);
  if (!p) return;
  if (view.selected !== phaseId) {
    const old = view.selected && rowOf(view.selected);
    if (old) old.classList.remove("selected");
    view.selected = phaseId;
  }
  const li = rowOf(phaseId);
  if (li) li.classList.add("selected");
  $("detail").hidden = false;
  $("d-title").textContent = phaseId;
  const fields = $("d-fields");
  fields.replaceChildren();
  const rows = [["state", p.state], ["description", p.description], ["node", p.node],
                ["requires", (p.requires || []).join(", ")]];
  if (!p.phases) {
    rows.push(["executor", p.executor], ["attempt", p.attempt], ["action", p.action],
              ["updated", when(p.updated)], ["note", p.note]);
  } else {
    rows.push(["parallel", p.parallel], ["phases", p.phases.length]);
  }
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === "") continue;
    fields.append(el("dt", null, k), el("dd", null, v));
  }
  $("d-error-box").hidden = !p.error;
  $("d-error").textContent = p.error || "";
  clearTimeout(view.logTimer);
  if (p.phases) {
    $("d-log-note").textContent = "(a composite has no output of its own)";
    $("d-log").textContent = "";
    return;
  }
  await loadLog(phaseId);
}

async function loadLog(phaseId) {
  try {
    const doc = await getJSON(`/api/log?op=${encodeURIComponent(view.opId)}` +
                              `&phase=${encodeURIComponent(phaseId)}`);
    if (view.selected !== phaseId) return;
    $("d-log-note").textContent = doc.exists
      ? `${doc.path}` + (doc.truncated ? ` (last ${doc.text.length} of ${doc.size} bytes)` : "")
      : "(no output yet)";
    $("d-log").textContent = doc.text;
    const log = $("d-log");
    log.scrollTop = log.scrollHeight;
  } catch (err) {
    $("d-log-note").textContent = `could not load the log: ${err.message}`;
  }
  const p = view.phases.get(phaseId);
  if (p && p.state === "in_progress") {
    clearTimeout(view.logTimer);
    view.logTimer = setTimeout(() => view.selected === phaseId && loadLog(phaseId), 2000);
  }
}

function closeDetail() {
  const li = view.selected && rowOf(view.selected);
  if (li) li.classList.remove("selected");
  view.selected = null;
  clearTimeout(view.logTimer);
  $("detail").hidden = true;
}

// -- wiring ----------------------------------------------------------------------------------
async function reload(opId) {
  const { doc } = await loadPlan(opId);
  if (doc.operation.state === "active" || doc.last_seq > 0) {
    openStream(doc.operation.id, Math.max(0, doc.last_seq - HISTORY));
  }
  return doc;
}

async function selectOperation(opId) {
  closeDetail();
  view.opId = null;
  $("tree").replaceChildren();
  const url = new URL(window.location.href);
  url.searchParams.set("op", opId);
  window.history.replaceState(null, "", url);
  await reload(opId).catch(showLoadError);
}

async function start() {
  $("d-close").addEventListener("click", closeDetail);
  const wanted = new URL(window.location.href).searchParams.get("op");
  try {
    await loadOperations();
    await reload(wanted);
    await loadOperations();
  } catch (err) {
    showLoadError(err);
    setConn("lost", "offline");
  }
  setInterval(() => loadOperations().catch(() => {}), 10000);
}

document.addEventListener("DOMContentLoaded", start);
