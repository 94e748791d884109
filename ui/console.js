// The essd operator console (docs/console.md). Plain JavaScript, no
// library, no external request. It reads GET /admin/state (one page of
// event streams, every 2 s and after a reload), GET /admin/series once,
// then the live feed GET /admin/feed (Server-Sent Events read with fetch,
// so the bearer token can go in a header), and the Tail of one stream.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "essd.console.token";
const STATE_EVERY_MS = 2000;
const SERIES_POINTS = 900;

const ui = {
  sort: "id", order: "asc", filter: "", live: false, offset: 0, limit: 50,
  state: null, series: null, tailId: null, tailSeq: 0, tailTimer: null,
  lastReloads: null, feedOk: false,
};

// ---- HTTP ------------------------------------------------------------------

function headers() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: "Bearer " + t } : {};
}

class Unauthorized extends Error {}

async function api(method, path) {
  const r = await fetch(path, { method, headers: headers(), cache: "no-store" });
  if (r.status === 401) throw new Unauthorized("token needed");
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text }; }
  return { status: r.status, body };
}

let asking = null;
function askToken(message) {
  if (asking) return asking;
  const dlg = $("token-dialog");
  $("token-error").hidden = !message;
  $("token-error").textContent = message || "";
  asking = new Promise((resolve) => {
    $("token-form").onsubmit = () => {
      sessionStorage.setItem(TOKEN_KEY, $("token").value);
      $("forget-token").hidden = false;
      asking = null;
      resolve();
    };
  });
  if (!dlg.open) dlg.showModal();
  return asking;
}

async function guarded(fn) {
  for (;;) {
    try { return await fn(); } catch (e) {
      if (!(e instanceof Unauthorized)) throw e;
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(had ? "That token was refused." : "");
    }
  }
}

// ---- formatting ------------------------------------------------------------

const nf = new Intl.NumberFormat("en");
function num(v) { return v === null || v === undefined ? "–" : nf.format(v); }
function bytes(v) {
  if (v === null || v === undefined) return "–";
  const u = ["B", "KB", "MB", "GB"]; let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v) + " " + u[i];
}
function when(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function ago(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d";
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
}

// ---- charts ----------------------------------------------------------------

// The x axis spans the points held, at least two minutes, at most 15.
function polyline(values, max, cls, span) {
  const n = values.length;
  const x0 = span - n;
  const pts = values.map((v, i) =>
    (((x0 + i) / Math.max(1, span - 1)) * 300).toFixed(1) + "," +
    (58 - (max ? (v / max) * 56 : 0)).toFixed(1)).join(" ");
  const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  p.setAttribute("points", pts);
  p.setAttribute("class", cls);
  return p;
}
function chart(svg, lines) {
  let max = 1;
  for (const l of lines) for (const v of l.values) if (v > max) max = v;
  const span = Math.min(SERIES_POINTS, Math.max(120, ...lines.map((l) => l.values.length)));
  svg.replaceChildren(...lines.map((l) => polyline(l.values, max, l.cls, span)));
  svg.setAttribute("data-max", max);
}
function drawCharts() {
  const s = ui.series;
  if (!s) return;
  chart($("c-msgs"), [{ values: s.in, cls: "s-in" }, { values: s.out, cls: "s-out" }]);
  chart($("c-conns"), [{ values: s.connections, cls: "s-in" }]);
  const codes = Object.keys(s.closes);
  chart($("c-closes"), codes.map((c, i) => ({ values: s.closes[c], cls: "s-" + i })));
  $("c-closes-key").replaceChildren(...codes.map((c, i) => el("span", { class: "key s-" + i }, c + " ")));
  chart($("c-errors"), [{ values: s.enrich_errors, cls: "s-err" }]);
}
function push(arr, v) { arr.push(v); if (arr.length > SERIES_POINTS) arr.shift(); }

// One feed event: a point for each chart and the totals.
function onTick(t) {
  const s = ui.series;
  if (s && t.t > s.end) {
    s.end = t.t;
    push(s.in, t.in); push(s.out, t.out); push(s.connections, t.connections);
    push(s.enrich_errors, t.enrich_errors);
    for (const c of Object.keys(s.closes)) push(s.closes[c], (t.closes_by || {})[c] || 0);
    drawCharts();
  }
  $("t-in").textContent = num(t.in);
  $("t-out").textContent = num(t.out);
  $("t-connections").textContent = num(t.connections);
  $("t-subscriptions").textContent = num(t.subscriptions);
  $("t-total-out").textContent = num(t.totals.out);
  $("t-stalls").textContent = num(t.totals.credit_stalls);
  $("t-errors").textContent = num(t.totals.enrich_errors);
  setPill($("broker-state"), t.broker_connected ? "broker up" : "broker down", !!t.broker_connected);
  const reloads = t.totals.reloads + t.totals.reload_failures;
  if (ui.lastReloads !== null && reloads !== ui.lastReloads) refreshState();
  ui.lastReloads = reloads;
}

function setPill(p, text, ok) {
  p.textContent = text;
  p.className = "pill " + (ok ? "ok" : "bad");
}

// The feed: Server-Sent Events through fetch (EventSource cannot send a token).
async function feed() {
  for (;;) {
    try {
      const r = await fetch("/admin/feed", { headers: headers(), cache: "no-store" });
      if (r.status === 401) { await guarded(() => { throw new Unauthorized(); }); continue; }
      if (!r.ok || !r.body) throw new Error("feed " + r.status);
      setPill($("feed-state"), "live", true);
      ui.feedOk = true;
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = ev.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) onTick(JSON.parse(data));
        }
      }
    } catch (e) { /* retried below */ }
    ui.feedOk = false;
    setPill($("feed-state"), "feed lost, retrying", false);
    await new Promise((res) => setTimeout(res, 3000));
  }
}

// ---- state -----------------------------------------------------------------

function stateQuery() {
  const q = new URLSearchParams({ offset: ui.offset, limit: ui.limit, sort: ui.sort, order: ui.order });
  if (ui.filter) q.set("filter", ui.filter);
  if (ui.live) q.set("live", "1");
  return "/admin/state?" + q;
}

let stateBusy = false;
async function refreshState() {
  if (stateBusy) return;
  stateBusy = true;
  try {
    const r = await guarded(() => api("GET", stateQuery()));
    if (r.status === 200) { ui.state = r.body; renderState(); }
  } catch (e) { /* the next poll retries */ } finally { stateBusy = false; }
}

function renderState() {
  const s = ui.state;
  $("version").textContent = s.version;
  $("updated").textContent = "state at " + when(s.now).slice(11);
  $("t-streams").textContent = num(s.gateway.event_streams);
  if (!ui.feedOk) {
    $("t-connections").textContent = num(s.gateway.connections);
    $("t-subscriptions").textContent = num(s.gateway.subscriptions);
    $("t-total-out").textContent = num(s.gateway.messages_out);
    $("t-stalls").textContent = num(s.gateway.credit_stalls);
    $("t-errors").textContent = num(s.gateway.enrich_errors);
    setPill($("broker-state"), s.broker.connected ? "broker up" : "broker down", s.broker.connected);
  }
  const b = s.broker, lp = b.lag_poll;
  facts($("broker-facts"), [
    ["connected", b.connected ? "yes" : "no"],
    ["version", b.version || "–"],
    ["subscriptions", num(s.gateway.subscriptions)],
    ["WebSocket connections", num(s.gateway.connections)],
    ["live sessions", num(s.gateway.live_sessions)],
    ["tail-offset poll", `every ${lp.every_s} s, ≤ ${lp.max_streams} streams a round`],
    ["last poll round", lp.last_round ? when(lp.last_round) : "–"],
    ["polls answered / failed", num(lp.answers) + " / " + num(lp.failures)],
    ["connections lost (reconnects)", num(b.connections_lost || 0)],
  ]);
  renderNodes(b.nodes || []);
  renderLua(s.lua, s.now);
  renderStreams(s);
}

// One row per broker node: the locator's list (configured, then learned
// from Metadata) and any other host essd has a connection to.
function renderNodes(nodes) {
  const tb = $("broker-nodes").tBodies[0];
  tb.replaceChildren();
  for (const n of nodes) {
    const state = n.ready ? "up" : n.connections ? "connecting" : "no connection";
    tb.append(el("tr", { class: n.ready ? "" : "idle" },
      el("td", {}, n.host + ":" + n.port + (n.locator ? " (locator)" : "")),
      el("td", {}, n.configured ? "configured" : "learned"),
      el("td", {}, state),
      el("td", { class: "num" }, num(n.connections)),
      el("td", { class: "num" }, num(n.subscriptions)),
      el("td", { class: "num" }, num(n.publishers))));
  }
}

function renderLua(l, now) {
  $("generation").textContent = l.generation;
  const r = l.last_reload;
  const res = $("reload-result");
  if (r) {
    res.className = r.status === "reloaded" ? "ok-text" : "error";
    res.textContent = `last reload (${r.trigger}) ${ago(r.at, now)} ago: ${r.status}, generation ${r.generation}`;
    $("reload-error").hidden = !r.error;
    $("reload-error").textContent = r.error || "";
  } else {
    res.className = "muted";
    res.textContent = "no reload since start";
  }
  facts($("lua-facts"), [
    ["Lua root", l.lua_path],
    ["enrich errors", num(l.hook_errors.enrich) + (l.enrich_failing_streak ? ` (failing: ${num(l.enrich_failing_streak)} in a row)` : "")],
    ["route errors", num(l.hook_errors.route)],
  ]);
  $("modules").tBodies[0].replaceChildren(...l.modules.map((m) =>
    el("tr", {}, el("td", {}, m.name), el("td", {}, m.role), el("td", {}, m.file || "–"))));
}

function lagCell(c) {
  const td = el("td", { class: "num" }, c && c.lag !== null ? num(c.lag) : "–");
  if (c && c.lag !== null && c.lag > 0) td.className += c.lag >= 1000 ? " lag-bad" : " lag-warn";
  if (c && c.tail_age_ms !== null) td.title = `tail offset learned ${Math.round(c.tail_age_ms / 1000)} s ago`;
  return td;
}

function renderStreams(s) {
  const es = s.event_streams;
  $("streams-count").textContent = `${num(es.matched)} of ${num(es.total)}`;
  const last = Math.min(es.offset + es.limit, es.matched);
  $("page").textContent = es.matched ? `${num(es.offset + 1)}–${num(last)}` : "none";
  $("prev").disabled = es.offset === 0;
  $("next").disabled = last >= es.matched;
  for (const th of document.querySelectorAll("#stream-table th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === ui.sort);
    th.classList.toggle("asc", ui.order === "asc");
  }
  const rows = es.rows.map((r) => {
    const c = r.client;
    const client = c
      ? el("td", {}, c.peer || "?", el("span", { class: "sub" }, c.user_agent || "no User-Agent"),
        el("span", { class: "sub" }, "since " + ago(c.since, s.now) + (c.selector ? " · " + c.selector : "")))
      : el("td", { class: "muted" }, "no client");
    const tail = el("button", { type: "button", className: "tail-btn", disabled: !c }, "Tail");
    tail.onclick = () => startTail(r.id);
    const del = el("button", { type: "button", className: "delete-btn" }, "Delete");
    del.onclick = () => deleteStream(r);
    return el("tr", { "data-id": r.id, class: c ? "live" : "idle" },
      el("td", { class: "num" }, String(r.id)),
      el("td", {}, r.routing_key, el("span", { class: "sub" }, r.uuid)),
      el("td", {}, when(r.created)),
      client,
      el("td", { class: "num delivered" }, c && c.delivered_offset !== null ? num(c.delivered_offset) : "–"),
      el("td", { class: "num tail" }, c && c.tail_offset !== null ? num(c.tail_offset) : "–"),
      lagCell(c),
      el("td", { class: "num rate" }, c ? num(c.rate_out) : "–",
        c ? el("span", { class: "sub" }, num(c.msgs_out) + " sent") : null),
      el("td", { class: "num" }, c ? bytes(c.rate_bytes) : "–"),
      el("td", { class: "num" }, c ? num(c.credit_stalls) + (c.paused ? " (paused)" : "") : "–"),
      el("td", {}, tail, " ", del));
  });
  $("stream-table").tBodies[0].replaceChildren(...rows);
  $("lag-note").textContent = "lag = the stream's last committed offset − the client's last delivered offset; "
    + "tail offsets are polled every " + s.broker.lag_poll.every_s + " s (hover a lag for its age).";
}

// ---- actions ---------------------------------------------------------------

function confirmBox(text) {
  const d = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    d.onclose = () => resolve(d.returnValue === "yes");
    d.returnValue = "";
    d.showModal();
  });
}

async function deleteStream(r) {
  const live = r.client ? " Its live client will be closed." : "";
  if (!(await confirmBox(`Delete event stream ${r.id} (${r.routing_key})?${live}`))) return;
  const res = await guarded(() => api("DELETE", "/event-stream/" + r.id));
  if (res.status !== 204) alert("Delete failed: " + JSON.stringify(res.body));
  if (ui.tailId === r.id) stopTail();
  refreshState();
}

async function reload() {
  const btn = $("reload");
  btn.disabled = true;
  try {
    const r = await guarded(() => api("POST", "/admin/reload"));
    const res = $("reload-result");
    if (r.status === 200) {
      res.className = "ok-text";
      res.textContent = `reloaded: generation ${r.body.generation}` +
        (r.body.restart_required && r.body.restart_required.length ? `; restart needed for ${r.body.restart_required.join(", ")}` : "");
      $("reload-error").hidden = true;
    } else {
      res.className = "error";
      res.textContent = `rejected (${r.status}); generation ${r.body.generation} keeps running`;
      $("reload-error").hidden = false;
      $("reload-error").textContent = r.body.error || r.body.detail || "";
    }
    await refreshState();
  } finally { btn.disabled = false; }
}

async function startTail(id) {
  if (ui.tailId !== null && ui.tailId !== id) await stopTail();
  ui.tailId = id; ui.tailSeq = 0;
  $("tail").hidden = false;
  $("tail-id").textContent = id;
  $("tail-table").tBodies[0].replaceChildren();
  pollTail();
  $("tail").scrollIntoView({ behavior: "smooth" });
}

async function pollTail() {
  clearTimeout(ui.tailTimer);
  const id = ui.tailId;
  if (id === null) return;
  try {
    const r = await guarded(() => api("GET", `/admin/tail/${id}?after=${ui.tailSeq}`));
    if (id !== ui.tailId) return;
    if (r.status === 200) {
      $("tail-state").textContent = `watching (last ${r.body.capacity} messages)`;
      const body = $("tail-table").tBodies[0];
      for (const e of r.body.entries) {
        const frame = e.frame === null ? "(skipped by the hook)" : e.frame;
        body.prepend(el("tr", { "data-seq": e.seq, class: e.error ? "error" : "" },
          el("td", { class: "num" }, String(e.seq)), el("td", { class: "num" }, num(e.offset)),
          el("td", { class: "raw" }, e.raw + (e.raw_bytes > e.raw.length ? " …" : "")),
          el("td", { class: "frame" }, frame + (e.error ? "  (hook error: raw body sent)" : ""))));
        ui.tailSeq = Math.max(ui.tailSeq, e.seq);
      }
      while (body.rows.length > r.body.capacity) body.deleteRow(-1);
    } else {
      $("tail-state").textContent = r.body.detail || ("error " + r.status);
    }
  } catch (e) { /* retried */ }
  ui.tailTimer = setTimeout(pollTail, 1000);
}

async function stopTail() {
  const id = ui.tailId;
  ui.tailId = null;
  clearTimeout(ui.tailTimer);
  $("tail").hidden = true;
  if (id !== null) await guarded(() => api("DELETE", "/admin/tail/" + id));
}

// ---- start -----------------------------------------------------------------

function wire() {
  let t;
  $("filter").addEventListener("input", () => {
    clearTimeout(t);
    t = setTimeout(() => { ui.filter = $("filter").value.trim(); ui.offset = 0; refreshState(); }, 250);
  });
  $("live-only").addEventListener("change", () => { ui.live = $("live-only").checked; ui.offset = 0; refreshState(); });
  $("prev").onclick = () => { ui.offset = Math.max(0, ui.offset - ui.limit); refreshState(); };
  $("next").onclick = () => { ui.offset += ui.limit; refreshState(); };
  for (const th of document.querySelectorAll("#stream-table th[data-sort]")) {
    th.onclick = () => {
      const k = th.dataset.sort;
      if (ui.sort === k) ui.order = ui.order === "asc" ? "desc" : "asc";
      else { ui.sort = k; ui.order = k === "id" || k === "routing_key" ? "asc" : "desc"; }
      refreshState();
    };
  }
  $("reload").onclick = reload;
  $("tail-stop").onclick = stopTail;
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  $("forget-token").onclick = () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); };
}

async function start() {
  wire();
  await refreshState();
  try {
    const r = await guarded(() => api("GET", "/admin/series"));
    if (r.status === 200) { ui.series = r.body; drawCharts(); }
  } catch (e) { /* charts stay empty */ }
  feed();
  setInterval(refreshState, STATE_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);
