// genir web page: one search session per URL (/s/<session id>, ?found=<corpus id> once found).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { session: null, view: 0, found: null, busy: false };

function sessionIdFromUrl() {
  const m = location.pathname.match(/^\/s\/([^/]+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function setBusy(busy, message) {
  state.busy = busy;
  for (const id of ["start", "next"]) $(id).disabled = busy;
  document.body.setAttribute("aria-busy", busy ? "true" : "false");
  $("status").textContent = message || "";
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function api(method, url, body) {
  const res = await fetch(url, {
    method, headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

function shareUrl() {
  const url = new URL(`/s/${encodeURIComponent(state.session.session_id)}`, location.origin);
  if (state.found) url.searchParams.set("found", state.found);
  return url.toString();
}

function updateUrl() {
  const url = shareUrl();
  if (url !== location.href) history.replaceState(null, "", url);
  $("share").value = url;
  $("share-box").hidden = false;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// Where the found photo shows: the round on screen first, then the latest round that has it.
function findHit(id) {
  const rounds = state.session.rounds;
  for (const r of [rounds[state.view], ...rounds.slice().reverse()]) {
    for (const h of r.hits) if (h.id === id) return { round: r, hit: h };
  }
  return null;
}

function renderFound() {
  const box = $("found-box");
  const where = state.found && findHit(state.found);
  if (!state.found) { box.hidden = true; return; }
  box.hidden = false;
  const img = $("found-img");
  if (where) {
    img.src = where.hit.thumb;
    img.alt = `The photo you found: ${where.hit.path}`;
    $("found-text").textContent = `Found in round ${where.round.index + 1} at rank ${where.hit.rank}: ${where.hit.path}`;
  } else {
    img.removeAttribute("src");
    $("found-text").textContent = `Photo ${state.found} was marked found.`;
  }
}

function renderRound() {
  const s = state.session;
  const r = s.rounds[state.view];
  const latest = state.view === s.rounds.length - 1;
  $("round").hidden = false;
  $("round-title").textContent = `Round ${r.index + 1}` + (latest ? "" : ` of ${s.rounds.length} (an earlier round)`);
  const img = $("rendering");
  if (r.rendering) {
    img.src = r.rendering;
    img.alt = `Drawing of the description: ${r.query}`;
  } else {
    img.removeAttribute("src");
    img.alt = "";
  }
  $("rendering-caption").textContent = r.feedback ? `"${r.query}" (from your feedback "${r.feedback}")` : `"${r.query}"`;
  const list = $("hits");
  list.replaceChildren();
  for (const h of r.hits) {
    const found = state.found === h.id;
    list.append(el("li", { class: "hit" + (found ? " is-found" : ""), "data-id": h.id },
      el("img", { src: h.thumb, alt: `Photo ranked ${h.rank}: ${h.path}`, title: h.path, loading: "eager" }),
      el("span", { class: "meta" }, el("span", { class: "rank" }, `#${h.rank} `), h.path),
      el("button", { type: "button", class: found ? "" : "secondary", "aria-pressed": found ? "true" : "false",
                     "aria-label": `This is my photo: rank ${h.rank}, ${h.path}`, onclick: () => markFound(h.id) },
         found ? "Found ✓" : "This is it")));
  }
  $("next-form").hidden = !latest;
  renderHistory();
  renderFound();
}

function renderHistory() {
  const s = state.session;
  const list = $("history");
  list.replaceChildren();
  s.rounds.forEach((r, i) => {
    const label = `Round ${r.index + 1}: ${r.query}`;
    const item = el("li", {}, el("button", { type: "button", "aria-current": i === state.view ? "true" : "false",
                                             onclick: () => { state.view = i; renderRound(); $("round-title").focus(); } }, label));
    if (r.feedback) item.append(el("div", { class: "fb" }, `feedback: ${r.feedback}`));
    list.append(item);
  });
  $("history-box").hidden = s.rounds.length === 0;
  $("new-search").hidden = false;
}

function show(session) {
  state.session = session;
  state.view = session.rounds.length - 1;
  $("edit").value = session.rounds[state.view].query;  // the description to edit is the latest one
  updateUrl();
  renderRound();
}

function markFound(id) {
  state.found = state.found === id ? null : id;
  updateUrl();
  renderRound();
  $("status").textContent = state.found ? "Marked as found. The link below keeps it." : "Found mark removed.";
}

async function start(event) {
  event.preventDefault();
  if (state.busy) return;
  const query = $("query").value.trim();
  if (!query) { showError("Describe the photo first."); $("query").focus(); return; }
  showError("");
  setBusy(true, "Drawing your description and searching the photos…");
  try {
    state.found = null;
    show(await api("POST", "/api/sessions", { query }));
    setBusy(false, `Round 1 ready: ${state.session.rounds[0].hits.length} photos.`);
    $("feedback").focus();
  } catch (e) {
    setBusy(false, "");
    showError(e.message);
  }
}

async function nextRound(event) {
  event.preventDefault();
  if (state.busy) return;
  const s = state.session;
  const feedback = $("feedback").value.trim();
  const edited = $("edit").value.trim();
  const last = s.rounds[s.rounds.length - 1].query;
  let body;
  if (feedback) body = { feedback };
  else if (edited && edited !== last) body = { query: edited };
  else { showError("Write feedback on the drawing, or edit the description."); $("feedback").focus(); return; }
  showError("");
  setBusy(true, `Working on round ${s.rounds.length + 1}…`);
  try {
    const out = await api("POST", `/api/sessions/${encodeURIComponent(s.session_id)}/rounds`, body);
    $("feedback").value = "";
    show(out.session);
    setBusy(false, `Round ${out.round.index + 1} ready.`);
    $("feedback").focus();
  } catch (e) {
    setBusy(false, "");
    showError(e.message);
  }
}

async function load() {
  $("round-title").tabIndex = -1;
  $("start-form").addEventListener("submit", start);
  $("next-form").addEventListener("submit", nextRound);
  $("new-search").addEventListener("click", () => { location.href = "/"; });
  $("copy").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("share").value); $("status").textContent = "Link copied."; }
    catch (e) { $("share").select(); $("status").textContent = "Press Ctrl+C to copy the selected link."; }
  });
  // Enter submits, Shift+Enter makes a new line.
  for (const [area, form] of [["query", "start-form"], ["feedback", "next-form"]]) {
    $(area).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $(form).requestSubmit(); }
    });
  }
  const sid = sessionIdFromUrl();
  if (!sid) { $("query").focus(); return; }
  state.found = new URLSearchParams(location.search).get("found");
  setBusy(true, "Loading the search…");
  try {
    const s = await api("GET", `/api/sessions/${encodeURIComponent(sid)}`);
    $("query").value = s.rounds.length ? s.rounds[0].query : "";
    show(s);
    setBusy(false, "");
  } catch (e) {
    setBusy(false, "");
    showError(e.message);
  }
}

load();
