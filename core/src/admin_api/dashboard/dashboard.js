// shardgate dashboard: log in, then follow /api/stream (SSE) and draw rates and tables.
// Vanilla JS, no external assets. The token lives in sessionStorage for this tab only.
"use strict";

const HISTORY = 120; // points per chart (one per stats merge, about a second each)
const series = { conn: [], http: [], dns: [], radius: [], smtp: [] };
let previous = null;
let stream = null;

function $(id) { return document.getElementById(id); }
function token() { return sessionStorage.getItem("shardgate-token"); }

function api(path, method) {
  return fetch(path, { method: method || "GET", headers: { Authorization: "Bearer " + token() } }).then((r) => {
    if (r.status === 401) { logout("session expired: log in again"); throw new Error("401"); }
    return r.json();
  });
}

function logout(message) {
  sessionStorage.removeItem("shardgate-token");
  if (stream) { stream.close(); stream = null; }
  $("dashboard").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("status").textContent = "not logged in";
  $("login-error").textContent = message || "";
}

function login(event) {
  if (event) event.preventDefault();
  const body = JSON.stringify({ username: $("username").value, password: $("password").value });
  fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" }, body })
    .then((r) => r.json().then((j) => ({ status: r.status, body: j })))
    .then(({ status, body }) => {
      if (status !== 200) {
        $("login-error").textContent = status === 429 ? "too many failed logins: wait a minute" : "wrong user or password";
        return;
      }
      sessionStorage.setItem("shardgate-token", body.token);
      $("password").value = "";
      start();
    })
    .catch((e) => { $("login-error").textContent = "cannot reach the appliance: " + e; });
}

function start() {
  $("login").classList.add("hidden");
  $("dashboard").classList.remove("hidden");
  $("status").textContent = "connecting…";
  stream = new EventSource("/api/stream?token=" + encodeURIComponent(token()));
  stream.addEventListener("stats", (e) => update(JSON.parse(e.data)));
  stream.onerror = () => {
    $("status").textContent = "stream interrupted; retrying";
    // An expired token ends the stream: this call then answers 401 and shows the login.
    if (token()) api("/api/certs").catch(() => {});
  };
  refreshSlow();
}

function refreshSlow() {
  if (!token()) return;
  api("/api/certs").then(showCerts).catch(() => {});
  api("/api/logs?level=warn&limit=30").then(showLogs).catch(() => {});
  refreshQueue();
  setTimeout(refreshSlow, 5000);
}

function sumDns(s) { return (s.dns.answers || 0) + (s.dns.nxdomain || 0) + (s.dns.nodata || 0) + (s.dns.referrals || 0) + (s.dns.refused || 0); }

function update(s) {
  const now = s.unix_time || Date.now() / 1000;
  if (previous && now > previous.time) {
    const dt = now - previous.time;
    const rate = (a, b) => Math.max(0, a - b) / dt;
    push("conn", rate(s.total.accepted, previous.s.total.accepted));
    push("http", rate(s.total.http_requests, previous.s.total.http_requests));
    push("dns", rate(sumDns(s), sumDns(previous.s)));
    push("radius", rate(s.radius.received || 0, previous.s.radius.received || 0));
    push("smtp", rate((s.smtp || {}).messages_accepted || 0, (previous.s.smtp || {}).messages_accepted || 0));
  }
  const delivery = s.mail_delivery || {};
  $("mail-delivered").textContent = delivery.delivered || 0;
  $("mail-deferred").textContent = delivery.deferred || 0;
  $("mail-bounced").textContent = delivery.bounced || 0;
  if (!previous || now > previous.time) previous = { time: now, s };
  $("http-total").textContent = s.total.http_requests;
  $("status").textContent = "live · config generation " + s.config_generation + " · " + new Date(now * 1000).toLocaleTimeString();
  showShards(s);
  showLatency(s);
  showRoutes(s);
}

function push(name, value) {
  const points = series[name];
  points.push(value);
  if (points.length > HISTORY) points.shift();
  $(name + "-rate").textContent = value.toFixed(value < 10 ? 1 : 0);
  drawChart($("chart-" + name), points);
}

function drawChart(canvas, points) {
  // Draw at the canvas's on-screen size (no stretched text), sharp on high-DPI screens.
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points);
  ctx.strokeStyle = "#d5d9e2";
  ctx.beginPath();
  for (let i = 1; i <= 3; i++) { const y = Math.round((h * i) / 4) + 0.5; ctx.moveTo(0, y); ctx.lineTo(w, y); }
  ctx.stroke();
  ctx.fillStyle = "#7a8396";
  ctx.font = "11px sans-serif";
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0) + "/s", 4, 12);
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((v, i) => {
    const x = (w * (i + HISTORY - points.length)) / (HISTORY - 1);
    const y = h - 2 - ((h - 16) * v) / max;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    return tr;
  }));
}

function sumRoutes(shard, field) { return Object.values(shard.routes || {}).reduce((a, c) => a + (c[field] || 0), 0); }

function showShards(s) {
  fillTable("shards", (s.shards || []).map((sh) => [
    sh.shard, sh.cpu, sumRoutes(sh, "active"), sumRoutes(sh, "accepted"), sumRoutes(sh, "http_requests"),
    (sh.dns.udp_queries || 0) + (sh.dns.tcp_queries || 0), sh.radius.received || 0,
  ]));
}

function micros(us) {
  if (us === undefined) return "-";
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(1) + " ms";
  return us + " µs";
}

function showLatency(s) {
  const recent = s.latency_recent || {};
  const all = s.latency || {};
  const names = Object.keys(all);
  fillTable("latency", names.map((op) => {
    const l = recent[op] || all[op];
    return [op.replace("_", " "), l.count, micros(l.p50_us), micros(l.p90_us), micros(l.p99_us), micros(l.max_us)];
  }));
}

function showRoutes(s) {
  fillTable("routes", Object.entries(s.routes || {}).map(([name, c]) => [
    name, c.active, c.accepted, c.refused, c.http_2xx || 0, c.http_4xx || 0, c.http_5xx || 0,
  ]));
}

function showCerts(c) {
  const rows = (c.certificates || []).map((x) => [x.name, (x.dns_names || []).join(", "), x.expires_in_days + " days"]);
  (c.acme || []).forEach((a) => rows.push([a.name + " (acme)", (a.domains || []).join(", "), a.expires_in_days === null ? a.state : a.expires_in_days + " days"]));
  fillTable("certs", rows.length ? rows : [["none configured", "", ""]]);
}

// The message whose Delete button was pressed once (the second press deletes).
let confirmDelete = null;

function refreshQueue() {
  return api("/api/queue?limit=50").then(showQueue).catch(() => {});
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

// Retry now / delete through the API (audited there under the logged-in user).
function queueAction(id, action) {
  const [path, method, done] = action === "retry"
    ? ["/api/queue/" + id + "/retry", "POST", "retrying " + id + " now"]
    : ["/api/queue/" + id, "DELETE", id + " deleted"];
  confirmDelete = null;
  api(path, method)
    .then((answer) => { $("queue-notice").textContent = answer.error ? "refused: " + answer.error : done; })
    .catch((e) => { $("queue-notice").textContent = "failed: " + e; })
    .then(refreshQueue);
}

function retryAll() {
  api("/api/queue/retry", "POST")
    .then((answer) => { $("queue-notice").textContent = "retrying " + (answer.retrying || []).length + " messages now"; })
    .catch((e) => { $("queue-notice").textContent = "failed: " + e; })
    .then(refreshQueue);
}

// One correlation id's log lines: the SMTP session, then every delivery attempt.
function showStory(id) {
  api("/api/logs?level=debug&limit=200&id=" + encodeURIComponent(id)).then((l) => {
    $("story-id").textContent = id;
    const lines = (l.lines || []).map((x) => new Date(x.time * 1000).toLocaleTimeString() + " " + x.level + " " + x.target + ": " + x.message);
    $("story").textContent = lines.length ? lines.join("\n") : "no recent lines";
    $("story-section").classList.remove("hidden");
    $("story-section").scrollIntoView();
  }).catch(() => {});
}

function queueState(m) {
  const pending = (m.recipients || []).filter((r) => r.state === "pending");
  const error = pending.map((r) => r.last_error).find((e) => e) || "";
  const tries = Math.max(0, ...(m.recipients || []).map((r) => r.attempts || 0));
  return [pending.length === 0 ? "final" : error ? "deferred" : "queued", tries, error];
}

function showQueue(q) {
  // Without [email] the API answers 404 ({"error": ...}): the section stays hidden.
  if (typeof q.messages !== "number") return;
  $("queue-section").classList.remove("hidden");
  $("queue-count").textContent = q.messages;
  $("queue-noun").textContent = q.messages === 1 ? "message" : "messages";
  const body = document.querySelector("#queue tbody");
  body.replaceChildren(...(q.list || []).map((m) => {
    const [state, tries, error] = queueState(m);
    const tr = document.createElement("tr");
    tr.dataset.id = m.id;
    const cell = (content, className) => {
      const td = document.createElement("td");
      if (typeof content === "string" || typeof content === "number") td.textContent = content; else td.append(...content);
      if (className) td.className = className;
      tr.appendChild(td);
    };
    cell(m.id);
    cell(m.correlation_id ? [button(m.correlation_id, "link story", () => showStory(m.correlation_id))] : "-");
    cell(m.sender || "<>");
    cell((m.recipients || []).map((r) => r.address || "").join(", "));
    cell(state);
    cell(tries);
    cell(error, "error");
    const confirming = confirmDelete === m.id;
    cell([
      button("Retry", "retry", () => queueAction(m.id, "retry")),
      button(confirming ? "Confirm delete" : "Delete", confirming ? "delete confirm" : "delete", () => {
        if (confirmDelete === m.id) { queueAction(m.id, "delete"); return; }
        confirmDelete = m.id;
        $("queue-notice").textContent = "press Confirm delete to remove " + m.id + " from the queue (no bounce is sent)";
        refreshQueue();
      }),
    ]);
    return tr;
  }));
}

function showLogs(l) {
  const lines = (l.lines || []).map((x) => new Date(x.time * 1000).toLocaleTimeString() + " " + x.level + " " + x.target + ": " + x.message);
  $("logs").textContent = lines.length ? lines.join("\n") : "none";
}

$("login").addEventListener("submit", login);
$("queue-retry-all").addEventListener("click", retryAll);
$("story-close").addEventListener("click", () => $("story-section").classList.add("hidden"));
if (token()) start();
