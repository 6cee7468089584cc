/* Gatehouse dashboard.
 *
 * Served from the admin listener under a strict CSP: no inline code, no
 * inline style attributes, nothing from outside. Every value that comes from
 * the API (certificate names, ACME errors, refused names) is attacker
 * controlled, so it only ever reaches the page through textContent,
 * createTextNode or setAttribute; never through HTML parsing. */
"use strict";

const TOKEN_KEY = "gatehouse.token";
const SAMPLES_KEY = "gatehouse.samples";
const REFRESH_MS = 5000;
const FETCH_TIMEOUT_MS = 4000;       // a hung admin API must not stall the chain
const DAY = 86400000, HOUR = 3600000, MIN = 60000;
const TL_DAYS = 90;
const SAMPLE_MAX_AGE = 25 * HOUR, SAMPLE_CAP = 600;
// An on-demand server may hold tens of thousands of certificates: the
// table and the timeline draw the first ROW_CAP in the current order (by
// default the soonest to expire) and say how many more the filter hides.
const ROW_CAP = 500;

const $ = (id) => document.getElementById(id);
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const nf = new Intl.NumberFormat("en-US");

/* ---- state ------------------------------------------------------------ */

const st = {
  token: sessionStorage.getItem(TOKEN_KEY),  // null: try without a token
  authed: false,
  gen: 0,               // bumped on login/logout so stale callbacks drop out
  timer: null,
  inflight: false,
  again: false,         // a refresh was asked for while one was running
  refreshes: 0,
  lastOk: null,         // Date of the last successful refresh
  failSince: null,      // Date of the first failure of the current outage
  data: null,           // last good answers {health, certs, acme, ondemand, upstreams}
  sort: { key: "notafter", dir: 1 },
  filter: "",
  certsPending: false,  // certs changed while the revoke dialog was open
  revokeName: null,
};

/* ---- small helpers ---------------------------------------------------- */

// el("td", "c-name", "text"): build an element; text goes in as text only.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function pad(n) { return String(n).padStart(2, "0"); }
function parseTime(s) {
  if (!s) return null;
  const d = new Date(s);
  return isNaN(d.getTime()) ? null : d;
}
function hms(d) { return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }
function hm(d) { return `${pad(d.getHours())}:${pad(d.getMinutes())}`; }
function shortDate(d) { return `${MONTHS[d.getMonth()]} ${d.getDate()}`; }
function longDate(d) { return `${shortDate(d)}, ${d.getFullYear()}`; }
function dateTime(d) { return `${longDate(d)} ${hm(d)}`; }
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }
function num(n) { return typeof n === "number" && isFinite(n) ? nf.format(n) : "—"; }

// "in 3 min" / "3 min ago": coarse units, the operator wants orders of magnitude.
function span(ms) {
  const a = Math.abs(ms);
  if (a < MIN) return `${Math.round(a / 1000)} s`;
  if (a < HOUR) return `${Math.round(a / MIN)} min`;
  if (a < 2 * DAY) return `${Math.round(a / HOUR)} h`;
  return `${Math.round(a / DAY)} days`;
}
function relative(d, now) {
  const ms = d - now;
  return ms >= 0 ? `in ${span(ms)}` : `${span(ms)} ago`;
}

// A cell with a relative time and the raw RFC 3339 value as its tooltip.
function timeNode(tag, cls, raw, now, text) {
  const d = parseTime(raw);
  const e = el(tag, cls, d ? (text ? text(d) : relative(d, now)) : "—");
  if (raw) e.setAttribute("title", d ? `${dateTime(d)} (${raw})` : raw);
  return e;
}

function chip(text, kind) { return el("span", `chip chip-${kind}`, text); }

// Replace a tbody's rows by a single "nothing here" row spanning the table.
function emptyRow(tbody, cols, text) {
  const tr = el("tr", "empty");
  const td = el("td", null, text);
  td.colSpan = cols;
  tr.append(td);
  tbody.replaceChildren(tr);
}

/* ---- API access --------------------------------------------------------- */

class AuthError extends Error {}
class HostError extends Error {}

// One request to the admin API: returns {status, body}; throws on network
// failure or timeout. 401 and 421 are raised as their own errors since they
// change what the page shows rather than just marking it stale.
async function api(path, opts = {}, token = st.token) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (opts.body) headers["Content-Type"] = "application/json";
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const res = await fetch(path, {
      method: opts.method || "GET", headers, body: opts.body,
      cache: "no-store", signal: ctl.signal, redirect: "error",
    });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.status === 401) throw new AuthError("401");
    if (res.status === 421) throw new HostError("421");
    return { status: res.status, body };
  } finally {
    clearTimeout(t);
  }
}

// GET that insists on 2xx (and a JSON body).
async function getJSON(path) {
  const r = await api(path);
  if (r.status < 200 || r.status > 299 || r.body === null) throw new Error(`${path}: ${r.status}`);
  return r.body;
}

/* ---- login / logout ----------------------------------------------------- */

const MSG_401 = "The admin API refused the token (401)";
const MSG_421 = "The admin API refused this address (421): open the page at the admin address itself";

function setState(s) { document.body.dataset.state = s; }

function showLogin(msg) {
  st.authed = false;
  st.gen++;
  clearTimeout(st.timer);
  st.timer = null;
  st.data = null;
  st.lastOk = null;
  clearData();
  document.body.classList.remove("stale");
  setState("login");
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("health").hidden = true;
  $("login").hidden = false;
  $("live-status").textContent = "Not signed in";
  $("login-error").textContent = msg || "";
  $("token").focus();
}

// Nothing the API said stays in the page once the token is gone.
function clearData() {
  for (const t of document.querySelectorAll("#dashboard tbody")) t.replaceChildren();
  for (const id of ["acme-cas", "ondemand-stats", "upstream-list", "tl-renewals", "tl-expiries",
                    "cert-count", "acme-rate", "action-result"]) $(id).replaceChildren();
  $("action-result").hidden = true;
}

function showDashboard() {
  st.authed = true;
  st.gen++;
  st.failSince = null;
  $("login").hidden = true;
  $("login-error").textContent = "";
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  setState("live");
  refresh();
}

// Probe /health with a token (or none). Only /health is ever asked for
// before the admin API has accepted us.
async function probe(token) {
  try {
    const r = await api("/health", {}, token);
    if (r.status === 200 || r.status === 503) return "ok";  // 503: stalled, still authenticated
    return `The admin API answered ${r.status} to /health`;
  } catch (e) {
    if (e instanceof AuthError) return "401";
    if (e instanceof HostError) return MSG_421;
    return "The admin API is unreachable; retrying every 5 s";
  }
}

async function start() {
  const gen = ++st.gen;
  const r = await probe(st.token);
  if (gen !== st.gen) return;                // the user logged in meanwhile
  if (r === "ok") return showDashboard();
  if (r === "401") {
    // A stored token that no longer works is useless; without one, just ask.
    const msg = st.token ? MSG_401 : "";
    forgetToken();
    return showLogin(msg);
  }
  showLogin(r);
  if (r !== MSG_421) st.timer = setTimeout(start, REFRESH_MS);
}

function forgetToken() {
  st.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
}

async function onLogin(ev) {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  clearTimeout(st.timer);
  const gen = ++st.gen;
  $("token-submit").disabled = true;
  $("login-error").textContent = "Checking…";
  const r = await probe(token);
  $("token-submit").disabled = false;
  if (gen !== st.gen) return;
  if (r === "ok") {
    st.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    showDashboard();
  } else {
    $("login-error").textContent = r === "401" ? MSG_401 : r;
  }
}

/* ---- the refresh chain -------------------------------------------------- */

// One refresh at a time; the next is scheduled only when this one is done,
// so a slow admin API never sees overlapping requests from this page.
async function refresh() {
  if (!st.authed) return;
  if (st.inflight) { st.again = true; return; }
  clearTimeout(st.timer);
  st.timer = null;
  st.inflight = true;
  const gen = st.gen;
  try {
    const [health, certs, acme, ondemand, upstreams] = await Promise.all([
      api("/health").then((r) => {
        if (r.status !== 200 && r.status !== 503) throw new Error(`/health: ${r.status}`);
        return { status: r.status, body: r.body || {} };
      }),
      getJSON("/certs"), getJSON("/acme"), getJSON("/ondemand"), getJSON("/upstreams"),
    ]);
    if (gen !== st.gen) return;
    st.data = { health, certs, acme, ondemand, upstreams };
    st.lastOk = new Date();
    st.failSince = null;
    st.refreshes++;
    render();
    document.body.dataset.refreshes = String(st.refreshes);
  } catch (e) {
    if (gen !== st.gen) return;
    if (e instanceof AuthError) { forgetToken(); showLogin(MSG_401); return; }
    if (!st.failSince) st.failSince = new Date();
    markStale(e instanceof HostError ? MSG_421 : null);
  } finally {
    st.inflight = false;
    if (gen === st.gen && st.authed) {
      if (st.again) { st.again = false; refresh(); }
      else st.timer = setTimeout(refresh, REFRESH_MS);
    }
  }
}

function markStale(why) {
  document.body.classList.add("stale");
  setState("stale");
  const from = st.lastOk ? hms(st.lastOk) : "never";
  $("live-status").textContent = why
    ? `${why} — showing data from ${from}`
    : `Admin API unreachable since ${hms(st.failSince)} — showing data from ${from}`;
}

function render() {
  const now = new Date();
  document.body.classList.remove("stale");
  setState("live");
  $("live-status").textContent = `Live · updated ${hms(st.lastOk)}`;
  renderHealth(st.data.health);
  renderCerts(now);
  renderTimeline(now);
  renderAcme(st.data.acme, now);
  renderOndemand(st.data.ondemand, now);
  renderUpstreams(st.data.upstreams, now);
  const off = -now.getTimezoneOffset();
  $("foot").textContent = `Times are local (UTC${off >= 0 ? "+" : "−"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}); hover a time for its exact value. Refreshes every ${REFRESH_MS / 1000} s.`;
}

function renderHealth(h) {
  const b = $("health");
  b.hidden = false;
  const stalled = Array.isArray(h.body.stalled_workers) ? h.body.stalled_workers : [];
  if (h.status === 200) {
    b.className = "badge ok";
    b.textContent = "healthy";
  } else {
    b.className = "badge warn";
    b.textContent = stalled.length ? `stalled workers: ${stalled.join(", ")}` : `unhealthy: ${h.body.status || h.status}`;
  }
}

/* ---- certificates ------------------------------------------------------- */

const RENEWAL_LABEL = {
  lifetime: "⅔ of lifetime",
  retry: "retry after failure",
  revoked: "revoked: renewing now",
  fleet: "another node renews",
};

function certMatches(c) {
  if (!st.filter) return true;
  const names = [c.name].concat(Array.isArray(c.sans) ? c.sans : []);
  return names.some((n) => String(n).toLowerCase().includes(st.filter));
}

// Sort keys; missing times sort last in either direction.
function sortValue(c, key) {
  switch (key) {
    case "name": return String(c.name);
    case "source": return String(c.source || "");
    case "notafter": { const d = parseTime(c.not_after); return d ? d.getTime() : null; }
    case "renewal": { const d = parseTime(c.renewal_time); return d ? d.getTime() : null; }
    case "failures": return (c.renewal_failures || 0) + (c.last_error ? 0.5 : 0);
  }
  return null;
}

function sortCerts(list) {
  const { key, dir } = st.sort;
  return list.slice().sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    let r;
    if (x === null || y === null) r = x === y ? 0 : (x === null ? 1 : -1) * dir;
    else r = x < y ? -1 : x > y ? 1 : 0;
    return r * dir || String(a.name).localeCompare(String(b.name));
  });
}

function rowClasses(c, now) {
  const cls = [];
  const na = parseTime(c.not_after), rt = parseTime(c.renewal_time);
  const expired = na && na <= now;
  if (expired) cls.push("expired");
  else if (na && na - now < 7 * DAY) cls.push("expiring");
  if (rt && rt <= now && !c.renewing && !expired) cls.push("overdue");
  if ((c.renewal_failures || 0) > 0 || c.last_error) cls.push("failing");
  return cls;
}

function caLabel(ca) {
  if (!ca) return null;
  try { return new URL(ca).host; } catch (e) { return ca; }
}

function renewalCell(c, now) {
  const td = el("td", "c-renewal");
  if (c.renewing) {
    td.append(chip("renewing now…", "busy"));
    return td;
  }
  const rt = parseTime(c.renewal_time);
  if (!rt) {
    td.append(el("span", "muted", c.source === "static" ? "not managed" : "—"));
    return td;
  }
  const t = el("div", null, dateTime(rt));
  t.setAttribute("title", c.renewal_time);
  td.append(t);
  let label = RENEWAL_LABEL[c.renewal_source] || c.renewal_source || "";
  if (c.renewal_source === "ari") {
    const s = parseTime(c.ari_window && c.ari_window.start), e = parseTime(c.ari_window && c.ari_window.end);
    label = s && e ? `ARI window ${shortDate(s)}–${shortDate(e)}` : "ARI window";
  }
  const sub = el("div", "sub", `${label}${label ? " · " : ""}${relative(rt, now)}`);
  td.append(sub);
  return td;
}

function notAfterCell(c, now) {
  const td = el("td", "c-notafter");
  const na = parseTime(c.not_after);
  if (!na) { td.textContent = c.not_after || "—"; return td; }
  const d = el("div", null, longDate(na));
  d.setAttribute("title", c.not_after);
  const ms = na - now;
  let left;
  if (ms <= -DAY) left = `expired ${plural(Math.floor(-ms / DAY), "day")} ago`;
  else if (ms <= 0) left = `expired ${Math.max(1, Math.floor(-ms / HOUR))} h ago`;
  else if (ms < DAY) left = `${Math.ceil(ms / HOUR)} h left`;
  else left = `${plural(Math.floor(ms / DAY), "day")} left`;
  td.append(d, el("div", "sub", left));
  return td;
}

function certRow(c, now) {
  const tr = el("tr", rowClasses(c, now).join(" "));
  tr.dataset.name = c.name;
  tr.dataset.serial = c.serial || "";
  tr.dataset.notAfter = c.not_after || "";

  const name = el("td", "c-name");
  name.append(el("div", "cert-name", c.name));
  const others = (Array.isArray(c.sans) ? c.sans : []).filter((s) => s !== c.name);
  if (others.length) name.append(el("div", "sub sans", others.join(", ")));

  const src = el("td", "c-source");
  src.append(chip(c.source || "?", c.source === "on-demand" ? "ondemand" : c.source === "static" ? "static" : "managed"));

  const iss = el("td", "c-issuer");
  iss.append(el("div", null, c.issuer || "—"));  // the API sends the issuer's CN
  const ca = caLabel(c.ca);
  if (ca || c.profile) {
    const sub = el("div", "sub");
    if (ca) {
      const h = el("span", "mono", ca);
      h.setAttribute("title", c.ca);
      sub.append(h);
    }
    if (c.profile) sub.append(" ", chip(`profile ${c.profile}`, "info"));
    iss.append(sub);
  }

  const err = el("td", "c-error");
  const n = c.renewal_failures || 0;
  if (n || c.last_error) {
    err.append(el("div", "fail-count", `${n} failure${n === 1 ? "" : "s"}`));
    if (c.last_error) err.append(el("div", "err-text", c.last_error));
  } else {
    err.append(el("span", "muted", "0"));
  }

  const serial = el("td", "c-serial mono");
  const s = c.serial || "";
  serial.textContent = s.length > 16 ? `${s.slice(0, 8)}…${s.slice(-6)}` : s || "—";
  if (s) serial.setAttribute("title", s);

  const act = el("td", "c-actions");
  if (c.source !== "static") {
    act.append(actionButton("Renew", "act-renew", c.name));
    act.append(actionButton("Revoke", "act-revoke danger", c.name));
  }
  if (c.source === "on-demand") act.append(actionButton("Evict", "act-evict", c.name));

  tr.append(name, src, iss, notAfterCell(c, now), renewalCell(c, now), err, serial, act);
  return tr;
}

function actionButton(label, cls, name) {
  const b = el("button", cls, label);
  b.type = "button";
  b.dataset.name = name;
  b.setAttribute("title", `${label} ${name}`);
  return b;
}

function renderCerts(now) {
  // Rebuilding rows under an open confirmation would swap the button the
  // operator is acting on; catch up when the dialog closes.
  if ($("revoke-dialog").open) { st.certsPending = true; return; }
  st.certsPending = false;
  const all = Array.isArray(st.data.certs) ? st.data.certs : [];
  const shown = sortCerts(all.filter(certMatches));
  const drawn = shown.slice(0, ROW_CAP);
  const tbody = $("certs-table").tBodies[0];
  if (!all.length) emptyRow(tbody, 8, "No certificates yet");
  else if (!shown.length) emptyRow(tbody, 8, "No certificate matches the filter");
  else tbody.replaceChildren(...drawn.map((c) => certRow(c, now || new Date())));
  let count = all.length === shown.length ? `(${all.length})` : `(${shown.length} of ${all.length})`;
  if (drawn.length < shown.length) count += ` · the first ${drawn.length} shown: filter to see others`;
  $("cert-count").textContent = count;
  for (const th of document.querySelectorAll("#certs-table th[data-sort]")) {
    const on = th.dataset.sort === st.sort.key;
    th.querySelector(".sort-arrow").textContent = on ? (st.sort.dir > 0 ? "▲" : "▼") : "";
    th.setAttribute("aria-sort", on ? (st.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function onSort(ev) {
  const th = ev.target.closest("th[data-sort]");
  if (!th || (ev.type === "keydown" && ev.key !== "Enter" && ev.key !== " ")) return;
  ev.preventDefault();
  const key = th.dataset.sort;
  st.sort = st.sort.key === key ? { key, dir: -st.sort.dir } : { key, dir: 1 };
  if (st.data) renderCerts(new Date());
}

/* ---- timeline ----------------------------------------------------------- */

function renderTimeline(now) {
  const start = new Date(now.getFullYear(), now.getMonth(), now.getDate());  // local midnight today
  const width = TL_DAYS * DAY;
  const pos = (d) => ((d - start) / width) * 100;

  const axis = $("tl-axis");
  const ticks = [];
  for (let day = 0; day <= TL_DAYS; day += 15) {
    const d = new Date(start.getFullYear(), start.getMonth(), start.getDate() + day);
    const edge = day === 0 ? " first" : day === TL_DAYS ? " last" : "";
    const t = el("div", `tl-tick${edge}`, day === 0 ? "today" : shortDate(d));
    t.style.left = `${(day / TL_DAYS) * 100}%`;
    t.setAttribute("title", longDate(d));
    ticks.push(t);
  }
  const nowMark = el("div", "tl-now");
  nowMark.style.left = `${pos(now)}%`;
  axis.replaceChildren(...ticks, nowMark);

  const certs = sortCerts((Array.isArray(st.data.certs) ? st.data.certs : []).filter(certMatches))
    .slice(0, ROW_CAP);
  const lane = (field, cls, verb) => certs.flatMap((c) => {
    const d = parseTime(c[field]);
    if (!d) return [];
    let x = pos(d), extra = "";
    if (x > 100) { x = 100; extra = " tl-later"; }
    else if (d < now) { x = 0; extra = " tl-past"; }
    const m = el("div", `tl-mark ${cls}${extra}`);
    m.style.left = `${x}%`;
    m.dataset.name = c.name;
    m.setAttribute("title", `${c.name} — ${verb} ${dateTime(d)} (${relative(d, now)})`);
    return [m];
  });
  $("tl-renewals").replaceChildren(...lane("renewal_time", "tl-renewal", "renewal"));
  $("tl-expiries").replaceChildren(...lane("not_after", "tl-expiry", "expires"));
}

/* ---- actions ------------------------------------------------------------ */

function showResult(text, ok) {
  const r = $("action-result");
  r.hidden = false;
  r.className = ok ? "ok" : "err";
  r.textContent = text;
  r.setAttribute("title", `at ${hms(new Date())}`);
}

async function doAction(kind, name, opts) {
  const path = `/certs/${encodeURIComponent(name)}${kind === "evict" ? "" : "/" + kind}`;
  try {
    const r = await api(path, opts);
    const b = r.body || {};
    const ok = r.status >= 200 && r.status < 300;
    const what = ok ? (b.status || "done") : `${kind} failed: ${b.error || "no reason given"}`;
    showResult(`${name}: ${what} (${r.status})`, ok);
  } catch (e) {
    if (e instanceof AuthError) { forgetToken(); showLogin(MSG_401); return; }
    if (e instanceof HostError) { showResult(`${name}: ${kind} failed: ${MSG_421}`, false); return; }
    showResult(`${name}: ${kind} failed: admin API unreachable`, false);
  }
  refresh();  // show the effect now rather than in up to 5 s
}

function onCertClick(ev) {
  const b = ev.target.closest("button[data-name]");
  if (!b || b.disabled) return;
  const name = b.dataset.name;
  if (b.classList.contains("act-revoke")) {
    st.revokeName = name;
    $("revoke-name").textContent = name;
    $("revoke-reason").value = "unspecified";
    $("revoke-dialog").showModal();
    $("revoke-cancel").focus();
    return;
  }
  b.disabled = true;  // the row is rebuilt by the refresh that follows
  if (b.classList.contains("act-renew")) doAction("renew", name, { method: "POST" });
  else if (b.classList.contains("act-evict")) doAction("evict", name, { method: "DELETE" });
}

function onRevokeConfirm() {
  const name = st.revokeName, reason = $("revoke-reason").value;
  $("revoke-dialog").close();
  if (name) doAction("revoke", name, { method: "POST", body: JSON.stringify({ reason }) });
}

function onDialogClose() {
  st.revokeName = null;
  if (st.certsPending && st.data) renderCerts(new Date());
}

/* ---- ACME --------------------------------------------------------------- */

// Counter samples in sessionStorage: [{t, counters: {"ca|challenge|result": n}}],
// oldest first; kept samples are at least a minute apart, the last one is
// always the newest refresh.
function loadSamples() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SAMPLES_KEY) || "[]");
    return Array.isArray(s) ? s.filter((x) => x && typeof x.t === "number" && x.counters) : [];
  } catch (e) { return []; }
}

function counterKey(ca, o) { return `${ca}|${o.challenge}|${o.result}`; }

function acmeCounters(acme) {
  const c = {};
  for (const ca of acme.cas || []) for (const o of ca.orders || []) c[counterKey(ca.name, o)] = o.count || 0;
  return c;
}

function recordSample(counters, t) {
  let s = loadSamples().filter((x) => x.t >= t - SAMPLE_MAX_AGE && x.t <= t);
  // A counter that went down means the server restarted: old deltas are void.
  const last = s[s.length - 1];
  if (last && Object.keys(last.counters).some((k) => (counters[k] || 0) < last.counters[k])) s = [];
  const prev = s[s.length - 1] || null;
  const n = s.length;
  if (n >= 2 && s[n - 1].t - s[n - 2].t < MIN) s[n - 1] = { t, counters };  // provisional, replace
  else s.push({ t, counters });
  if (s.length > SAMPLE_CAP) s = s.slice(s.length - SAMPLE_CAP);
  try { sessionStorage.setItem(SAMPLES_KEY, JSON.stringify(s)); } catch (e) { /* full: live without */ }
  return { samples: s, prev };
}

// Baseline for a window: the oldest sample at or after now - w. "partial"
// when the page has less history than the window.
function baseline(samples, t, w) {
  const b = samples.find((x) => x.t >= t - w) || samples[samples.length - 1];
  return { b, partial: samples[0].t > t - w };
}

function renderAcme(acme, now) {
  const box = $("acme-cas");
  const tbody = $("recent-orders").tBodies[0];
  if (!acme || !acme.enabled) {
    box.replaceChildren(el("p", "empty-state", "ACME is off"));
    $("acme-rate").textContent = "";
    emptyRow(tbody, 8, "ACME is off");
    return;
  }
  const t = now.getTime();
  const counters = acmeCounters(acme);
  const { samples, prev } = recordSample(counters, t);
  const total = (c) => Object.values(c).reduce((a, b) => a + b, 0);
  if (prev && t - prev.t < 2000) {
    // An action's immediate refresh: too short an interval to say anything; keep the last rate.
  } else if (prev) {
    const rate = ((total(counters) - total(prev.counters)) / (t - prev.t)) * MIN;
    $("acme-rate").textContent = `${rate.toFixed(rate && rate < 10 ? 1 : 0)} orders/min over the last ${span(t - prev.t)}`;
  } else {
    $("acme-rate").textContent = "orders/min: after the next refresh";
  }
  const h1 = baseline(samples, t, HOUR), h24 = baseline(samples, t, 24 * HOUR);
  const label = (w, txt) => (w.partial ? `since ${hm(new Date(w.b.t))}` : txt);

  const cas = acme.cas || [];
  if (!cas.length) box.replaceChildren(el("p", "empty-state", "No CA configured"));
  else box.replaceChildren(...cas.map((ca) => caBlock(ca, counters, h1, h24, label, now)));

  const orders = Array.isArray(acme.recent_orders) ? acme.recent_orders : [];
  if (!orders.length) { emptyRow(tbody, 8, "No orders yet"); return; }
  tbody.replaceChildren(...orders.map((o) => {
    const tr = el("tr", o.result === "ok" ? "ok" : "failed");
    tr.append(timeNode("td", "o-at", o.at, now, (d) => (now - d < DAY ? hms(d) : dateTime(d))));
    tr.append(el("td", "o-names", (o.names || []).join(", ")));
    tr.append(el("td", "o-ca", o.ca), el("td", "o-kind", o.kind), el("td", "o-challenge", o.challenge));
    const res = el("td", "o-result");
    res.append(chip(o.result, o.result === "ok" ? "ok" : "bad"));
    tr.append(res);
    tr.append(el("td", "o-duration num", typeof o.duration_ms === "number" ? `${(o.duration_ms / 1000).toFixed(1)} s` : "—"));
    tr.append(el("td", "o-error err-text", o.error || ""));
    return tr;
  }));
}

function caBlock(ca, counters, h1, h24, label, now) {
  const div = el("div", "ca");
  div.dataset.ca = ca.name;
  const head = el("div", "ca-head");
  head.append(el("h3", null, ca.name));
  const dir = el("span", "mono muted", ca.directory || "");
  head.append(dir);
  head.append(el("span", null, `fallbacks: ${num(ca.fallbacks || 0)}`));
  const bo = parseTime(ca.backoff_until);
  if (bo && bo > now) {
    const c = chip(`back-off until ${hm(bo)} (in ${span(bo - now)})`, "warn");
    c.setAttribute("title", ca.backoff_until);
    head.append(c);
  }
  div.append(head);

  // Rows: every challenge × result seen now or in the baselines.
  const prefix = `${ca.name}|`;
  const keys = new Set(Object.keys(counters).filter((k) => k.startsWith(prefix)));
  if (!keys.size) { div.append(el("p", "empty-state", "No orders since start")); return div; }
  const table = el("table", "acme-table");
  const thead = el("thead"), hr = el("tr");
  for (const h of ["Challenge", "Result", "total", label(h1, "last hour"), label(h24, "last 24 h")]) {
    hr.append(el("th", h === "Challenge" || h === "Result" ? null : "num", h));
  }
  thead.append(hr);
  const tbody = el("tbody");
  for (const k of [...keys].sort()) {
    const [, challenge, result] = k.split("|");
    const cur = counters[k] || 0;
    const tr = el("tr");
    tr.dataset.challenge = challenge;
    tr.dataset.result = result;
    tr.append(el("td", "mono", challenge));
    const r = el("td");
    r.append(chip(result, result === "ok" ? "ok" : "bad"));
    tr.append(r);
    tr.append(el("td", "num a-total", num(cur)));
    tr.append(el("td", "num a-hour", num(cur - (h1.b.counters[k] || 0))));
    tr.append(el("td", "num a-day", num(cur - (h24.b.counters[k] || 0))));
    tbody.append(tr);
  }
  table.append(thead, tbody);
  const wrap = el("div", "table-wrap");
  wrap.append(table);
  div.append(wrap);
  return div;
}

/* ---- on-demand ---------------------------------------------------------- */

function stat(dl, label, value, cls) {
  const d = el("div", cls ? `stat ${cls}` : "stat");
  d.append(el("dt", null, label), el("dd", null, value));
  dl.append(d);
}

function renderOndemand(od, now) {
  const dl = $("ondemand-stats");
  const tbody = $("refusals-table").tBodies[0];
  if (!od || !od.enabled) {
    dl.replaceChildren();
    stat(dl, "status", "On-demand is off", "off");
    emptyRow(tbody, 5, "On-demand is off");
    return;
  }
  dl.replaceChildren();
  const ask = od.ask || {};
  stat(dl, "status", "enabled", "on");
  stat(dl, "paused handshakes", num(od.paused_handshakes), od.paused_handshakes ? "warn" : "");
  stat(dl, "allowed", num(od.allowed));
  stat(dl, "refused", num(od.refused));
  stat(dl, "ask requests", num(ask.requests));
  stat(dl, "ask cache hits", num(ask.cache_hits));
  if (typeof ask.coalesced === "number") stat(dl, "ask coalesced", num(ask.coalesced));
  stat(dl, "ask unreachable", num(ask.unreachable), ask.unreachable ? "warn" : "");
  stat(dl, "ask latency avg", typeof ask.latency_ms_avg === "number" ? `${ask.latency_ms_avg.toFixed(1)} ms` : "—");

  const rows = Array.isArray(od.recent_refusals) ? od.recent_refusals : [];
  if (!rows.length) { emptyRow(tbody, 5, "No refusals"); return; }
  tbody.replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    tr.dataset.name = r.name;
    tr.append(el("td", "r-name mono", r.name), el("td", "r-reason", r.reason));
    tr.append(el("td", "r-ip mono", r.client_ip), timeNode("td", "r-at", r.at, now));
    tr.append(el("td", "r-count num", num(r.count)));
    return tr;
  }));
}

/* ---- upstreams ---------------------------------------------------------- */

const STATE_KIND = { up: "ok", backing_off: "warn", check_failed: "bad", gone: "grey", unresolved: "grey" };
const REQ_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
const UP_HEAD = ["Target", ...REQ_CLASSES, "Endpoint", "State", "In flight", "Last failure"];

function renderUpstreams(data, now) {
  const box = $("upstream-list");
  const ups = data && Array.isArray(data.upstreams) ? data.upstreams : [];
  $("upstream-note").hidden = !ups.length;
  if (!ups.length) { box.replaceChildren(el("p", "empty-state", "No upstreams")); return; }
  box.replaceChildren(...ups.map((u) => {
    const div = el("div", "upstream");
    div.dataset.site = u.site;
    div.dataset.route = u.route || "";
    const head = el("div", "ca-head");
    head.append(el("h3", null, u.route ? `${u.site} ${u.route}` : u.site));
    head.append(el("span", "muted", [
      `balance ${u.balance}`, `protocol ${u.protocol}`,
      u.health_check ? `health check ${u.health_check}` : "no health check",
    ].join(" · ")));
    div.append(head);

    const table = el("table", "upstream-table");
    const hr = el("tr");
    UP_HEAD.forEach((h, i) => {
      const th = el("th", i === 0 || h === "Endpoint" || h === "State" || h === "Last failure" ? null : "num", h);
      if (i <= REQ_CLASSES.length) th.classList.add("per-target");
      hr.append(th);
    });
    const thead = el("thead");
    thead.append(hr);
    const tbody = el("tbody");
    for (const t of u.targets || []) tbody.append(...targetRows(t, now));
    table.append(thead, tbody);
    const wrap = el("div", "table-wrap");
    wrap.append(table);
    div.append(wrap);
    return div;
  }));
}

// Requests are counted per configured target address, so the target's
// cells span all its endpoint rows. Older answers carried them per
// endpoint: sum those.
function targetRows(t, now) {
  const eps = Array.isArray(t.endpoints) ? t.endpoints : [];
  let rq = t.requests, inFlight = t.in_flight;
  if (!rq) {
    rq = {};
    for (const e of eps) for (const k of REQ_CLASSES) rq[k] = (rq[k] || 0) + ((e.requests || {})[k] || 0);
  }
  if (typeof inFlight !== "number") inFlight = eps.reduce((a, e) => a + (e.in_flight || 0), 0);

  const tgt = el("td", "u-target");
  tgt.append(el("div", "mono", t.address), el("div", "sub u-target-inflight", `${num(inFlight)} in flight`));
  const lead = [tgt];
  for (const k of REQ_CLASSES) lead.push(el("td", `num u-${k}`, num(rq[k] || 0)));
  for (const td of lead) { td.rowSpan = Math.max(1, eps.length); td.classList.add("per-target"); }

  if (!eps.length) {
    // A name that has not resolved yet has no endpoints at all.
    const tr = el("tr", "state-unresolved");
    tr.dataset.target = t.address;
    tr.dataset.address = t.address;
    const st = el("td", "u-state");
    st.append(chip("unresolved", "grey"));
    tr.append(...lead, el("td", "u-address muted", "—"), st, el("td", "num u-inflight", "—"), el("td", "u-failure muted", "—"));
    return [tr];
  }
  return eps.map((e, i) => {
    const tr = endpointRow(e, now);
    tr.dataset.target = t.address;
    if (i === 0) tr.prepend(...lead);
    else tr.classList.add("cont");
    return tr;
  });
}

function endpointRow(e, now) {
  const tr = el("tr", `state-${e.state}`);
  tr.dataset.address = e.address;
  const s = el("td", "u-state");
  s.append(chip(String(e.state).replace("_", " "), STATE_KIND[e.state] || "grey"));
  tr.append(el("td", "u-address mono", e.address), s, el("td", "num u-inflight", num(e.in_flight)));
  const lf = el("td", "u-failure");
  if (e.last_failure) {
    lf.append(el("div", "err-text", e.last_failure.reason));
    lf.append(timeNode("div", "sub", e.last_failure.at, now));
  } else {
    lf.append(el("span", "muted", "—"));
  }
  tr.append(lf);
  return tr;
}

/* ---- wiring ------------------------------------------------------------- */

document.addEventListener("DOMContentLoaded", () => {
  document.body.dataset.refreshes = "0";
  $("login").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => { forgetToken(); showLogin(""); });
  const head = $("certs-table").tHead;
  head.addEventListener("click", onSort);
  head.addEventListener("keydown", onSort);
  $("certs-table").tBodies[0].addEventListener("click", onCertClick);
  $("cert-filter").addEventListener("input", (ev) => {
    st.filter = ev.target.value.trim().toLowerCase();
    if (st.data) { renderCerts(new Date()); renderTimeline(new Date()); }
  });
  $("revoke-confirm").addEventListener("click", onRevokeConfirm);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-dialog").addEventListener("close", onDialogClose);
  start();
});
