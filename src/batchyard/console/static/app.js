// batchyard console: plain browser JavaScript, no build step. It talks to the same
// /v1 API as the SDKs, plus /console/api for live progress and result lines.
"use strict";

const TYPES = ["succeeded", "errored", "canceled", "expired"];
const KEY_STORE = "batchyard.key";
const WORKSPACE_STORE = "batchyard.workspace";
const view = document.getElementById("view");
const banner = document.getElementById("banner");
let timer = null;
let keysRequired = false;
let admin = false; // an admin key reads any workspace (the one picked), and changes nothing

// -- plumbing -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function key() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

class ApiError extends Error {
  constructor(status, body) {
    const message = body && body.error ? `${body.error.type}: ${body.error.message}` : `HTTP ${status}`;
    super(message);
    this.status = status;
  }
}

function workspaceId() {
  return sessionStorage.getItem(WORKSPACE_STORE) || "";
}

async function api(path, options = {}) {
  if (admin && path.startsWith("/console/api/") && !path.startsWith("/console/api/info") && workspaceId()) {
    path += `${path.includes("?") ? "&" : "?"}workspace_id=${encodeURIComponent(workspaceId())}`;
  }
  const headers = { "anthropic-version": "2023-06-01", ...(options.headers || {}) };
  headers["x-api-key"] = key() || "console";
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (response.status === 401) showKeyForm(true);
    throw new ApiError(response.status, body);
  }
  return options.raw ? response : response.json();
}

function showError(error) {
  banner.textContent = error.message || String(error);
  banner.hidden = false;
}

function clearError() {
  banner.hidden = true;
  banner.textContent = "";
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function number(n) {
  return Number(n).toLocaleString();
}

function progressBar(total, counts, label) {
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": String(total), "aria-label": "requests finished" });
  let finished = 0;
  for (const type of TYPES) {
    const n = counts[type] || 0;
    finished += n;
    if (n > 0 && total > 0) bar.append(el("span", { class: type, style: `width:${(100 * n) / total}%`, title: `${n} ${type}` }));
  }
  bar.setAttribute("aria-valuenow", String(finished));
  const wrap = el("div", {}, bar);
  if (label) wrap.append(el("div", { class: "progress-label", text: `${number(finished)} / ${number(total)} finished` }));
  return wrap;
}

function chips(counts) {
  return el("div", { class: "chips" },
    TYPES.filter((t) => counts[t]).map((t) => el("span", { class: `chip ${t}`, text: `${number(counts[t])} ${t}` })));
}

function statusBadge(status) {
  return el("span", { class: `status ${status}`, text: status.replace("_", " ") });
}

function stop() {
  if (timer) clearTimeout(timer);
  timer = null;
}

function schedule(fn, ms) {
  stop();
  timer = setTimeout(fn, ms);
}

// -- key ------------------------------------------------------------------------------

const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyForget = document.getElementById("key-forget");

function showKeyForm(force) {
  keyForm.hidden = !(keysRequired || force);
  keyForget.hidden = !key();
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, keyInput.value.trim());
  keyInput.value = "";
  showKeyForm(false);
  await loadInfo();
  route();
});

keyForget.addEventListener("click", async () => {
  sessionStorage.removeItem(KEY_STORE);
  showKeyForm(true);
  await loadInfo();
  route();
});

// -- workspace (admin keys) ------------------------------------------------------------

const workspaceSelect = document.getElementById("workspace-select");

function showWorkspaces(workspaces) {
  admin = workspaces !== null;
  workspaceSelect.hidden = !admin;
  for (const link of document.querySelectorAll('[data-nav="models"]')) link.hidden = admin; // /v1 takes no admin key
  for (const link of document.querySelectorAll('[data-nav="webhooks"]')) link.hidden = !admin; // the organization's
  if (!admin) return;
  const ids = workspaces.map((w) => w.id);
  if (!ids.includes(workspaceId()) && ids.length) sessionStorage.setItem(WORKSPACE_STORE, ids[0]);
  workspaceSelect.replaceChildren(...workspaces.map((w) =>
    el("option", { value: w.id, selected: w.id === workspaceId(), text: w.archived ? `${w.name} (archived)` : w.name })));
}

workspaceSelect.addEventListener("change", () => {
  sessionStorage.setItem(WORKSPACE_STORE, workspaceSelect.value);
  samples.clear();
  route();
});

async function loadInfo() {
  try {
    const info = await api("/console/api/info");
    keysRequired = info.keys_required;
    showWorkspaces(info.admin ? info.workspaces : null);
  } catch (error) {
    keysRequired = error.status === 401;
    showWorkspaces(null);
  }
}

// -- batch list ------------------------------------------------------------------------

const API_NAMES = { anthropic: "Message Batches", openai: "OpenAI Batch" };

async function renderList(params) {
  const query = new URLSearchParams({ limit: "20" });
  if (params.get("after_id")) query.set("after_id", params.get("after_id"));
  if (params.get("before_id")) query.set("before_id", params.get("before_id"));
  const page = await api(`/console/api/batches?${query}`);
  const rows = page.data.map((batch) =>
    el("tr", { class: "clickable", "data-batch": batch.id, "data-api": batch.api, onclick: () => { location.hash = `#/batches/${batch.id}`; } },
      el("td", { class: "id" }, el("a", { href: `#/batches/${batch.id}`, class: "mono", text: batch.id, title: batch.id })),
      el("td", { class: "optional api", text: API_NAMES[batch.api] || batch.api }),
      el("td", { class: "optional", text: when(batch.created_at) }),
      el("td", {}, statusBadge(batch.status)),
      el("td", {}, progressBar(batch.total, batch.counts, true)),
      el("td", { class: "optional" }, chips(batch.counts))));
  const older = page.data.length && (page.has_more || params.get("before_id")) ? page.last_id : null;
  const newer = page.data.length && (params.get("after_id") || (params.get("before_id") && page.has_more)) ? page.first_id : null;
  view.replaceChildren(
    el("h1", { text: "Batches" }),
    page.data.length === 0
      ? el("p", { class: "empty", text: "No batches yet. Create one with the API, an SDK, or `batchyard batch submit`." })
      : el("div", { class: "table-wrap" }, el("table", { id: "batch-table" },
          el("thead", {}, el("tr", {},
            el("th", { text: "Batch" }), el("th", { class: "optional", text: "API" }), el("th", { class: "optional", text: "Created" }),
            el("th", { text: "Status" }), el("th", { text: "Progress" }), el("th", { class: "optional", text: "Results" }))),
          el("tbody", {}, rows))),
    el("div", { class: "pager" },
      el("button", { type: "button", disabled: !newer, onclick: () => { location.hash = `#/batches?before_id=${newer}`; } }, "← Newer"),
      el("button", { type: "button", disabled: !older, onclick: () => { location.hash = `#/batches?after_id=${older}`; } }, "Older →")));
  const live = page.data.some((b) => !b.ended);
  schedule(route, live ? 2000 : 5000);
}

// -- one batch --------------------------------------------------------------------------

const samples = new Map(); // batch id -> [{t, finished}] for throughput

function rate(batchId, finished) {
  const now = performance.now() / 1000;
  const list = samples.get(batchId) || [];
  list.push({ t: now, finished });
  while (list.length > 2 && now - list[0].t > 30) list.shift();
  samples.set(batchId, list);
  if (list.length < 2) return null;
  const first = list[0];
  const dt = now - first.t;
  return dt > 0 ? (finished - first.finished) / dt : null;
}

const detailState = { batchId: null, filter: "", lines: [], nextAfter: -1, done: false };

async function renderDetail(batchId, params) {
  if (detailState.batchId !== batchId) {
    Object.assign(detailState, { batchId, filter: params.get("type") || "", lines: [], nextAfter: -1, done: false });
  }
  const progress = await api(`/console/api/batches/${batchId}/progress`);
  const batch = progress.batch;
  const ended = batch.ended;
  const perSecond = ended ? null : rate(batchId, progress.finished);
  const remaining = progress.total - progress.finished;
  const eta = perSecond && perSecond > 0 ? remaining / perSecond : null;

  const facts = el("div", { class: "facts" },
    fact("Status", statusBadge(batch.status)),
    fact("API", API_NAMES[batch.api] || batch.api),
    batch.endpoint ? fact("Endpoint", el("span", { class: "mono small", text: batch.endpoint })) : null,
    fact("Requests", number(progress.total)),
    ...TYPES.map((t) => fact(t, el("span", { class: `chip ${t}`, "data-count": t, text: number(progress.by_state[t] || 0) }))),
    fact("Throughput", perSecond === null ? "—" : `${perSecond.toFixed(1)} /s`),
    fact("ETA", ended ? "done" : eta === null ? "—" : `${Math.ceil(eta)} s`),
    fact("Created", when(batch.created_at)),
    fact("Ended", when(batch.ended_at)));

  const actions = el("div", { class: "actions" },
    el("button", { type: "button", id: "cancel-batch", class: "danger", disabled: !batch.cancel_path,
      onclick: () => act("cancel", batch) }, "Cancel batch"),
    batch.api === "anthropic"
      ? el("button", { type: "button", id: "delete-batch", class: "danger", disabled: !batch.delete_path,
          onclick: () => act("delete", batch) }, "Delete batch")
      : null,
    batch.downloads.length === 0 && batch.api === "anthropic"
      ? el("button", { type: "button", id: "download-results", disabled: true }, "Download results")
      : null,
    batch.downloads.map((file) =>
      el("button", { type: "button", id: file.id, onclick: () => download(file) }, file.label)));
  const problems = batch.errors.length === 0 ? null : el("section", {},
    el("h2", { text: "Input file errors" }),
    el("ul", { id: "input-errors" }, batch.errors.map((e) => el("li", { text: `line ${e.line ?? "—"}: ${e.message}` }))));

  if (detailState.lines.length === 0 && !detailState.done) await loadLines(batchId);
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/batches", text: "← All batches" })),
    el("h1", { class: "mono", text: batchId }),
    progressBar(progress.total, progress.by_state, true),
    facts,
    actions,
    ...(problems ? [problems] : []),
    resultsSection(batchId));
  if (!ended) {
    schedule(async () => {
      // new lines may have been written: start the viewer over, then redraw
      Object.assign(detailState, { lines: [], nextAfter: -1, done: false });
      await route();
    }, 1000);
  } else {
    stop();
  }
}

function fact(label, value) {
  return el("div", { class: "fact" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, value));
}

async function loadLines(batchId) {
  const query = new URLSearchParams({ after: String(detailState.nextAfter), limit: "50" });
  if (detailState.filter) query.set("type", detailState.filter);
  const page = await api(`/console/api/batches/${batchId}/lines?${query}`);
  detailState.lines.push(...page.data);
  if (page.next_after === null) detailState.done = true;
  else detailState.nextAfter = page.next_after;
}

function resultsSection(batchId) {
  const select = el("select", { id: "result-filter", "aria-label": "Show results of type",
    onchange: async (event) => {
      Object.assign(detailState, { filter: event.target.value, lines: [], nextAfter: -1, done: false });
      await loadLines(batchId);
      await route();
    } },
    el("option", { value: "", text: "all results" }),
    TYPES.map((t) => el("option", { value: t, text: t, selected: detailState.filter === t })));
  const rows = detailState.lines.map((line) =>
    el("tr", { class: "clickable", "data-custom-id": line.custom_id, onclick: () => openLine(batchId, line) },
      el("td", { class: "mono", text: line.custom_id }),
      el("td", {}, el("span", { class: `chip ${line.type}`, text: line.type })),
      el("td", { class: "summary", text: line.summary || "—" })));
  return el("section", {},
    el("h2", { text: "Results" }),
    el("div", { class: "filters" }, select),
    rows.length === 0
      ? el("p", { class: "empty", text: "No results written yet." })
      : el("div", { class: "table-wrap" }, el("table", { id: "results-table" },
          el("thead", {}, el("tr", {}, el("th", { text: "custom_id" }), el("th", { text: "Result" }), el("th", { text: "Text or error" }))),
          el("tbody", {}, rows))),
    detailState.done ? null : el("div", { class: "pager" },
      el("button", { type: "button", id: "more-results", onclick: async () => { await loadLines(batchId); await route(); } }, "More results")));
}

async function openLine(batchId, line) {
  const query = new URLSearchParams({ after: String(line.position - 1), limit: "1", full: "1" });
  if (line.type) query.set("type", line.type);
  try {
    const page = await api(`/console/api/batches/${batchId}/lines?${query}`);
    const full = page.data[0] ? page.data[0].line : line;
    document.getElementById("line-title").textContent = line.custom_id;
    document.getElementById("line-json").textContent = JSON.stringify(full, null, 2);
    document.getElementById("line-dialog").showModal();
  } catch (error) {
    showError(error);
  }
}

document.getElementById("line-close").addEventListener("click", () => document.getElementById("line-dialog").close());

async function act(action, batch) {
  const question = action === "cancel"
    ? `Cancel batch ${batch.id}? Requests not yet started will be canceled.`
    : `Delete batch ${batch.id} and its results? This cannot be undone.`;
  if (!window.confirm(question)) return;
  try {
    if (action === "cancel") await api(batch.cancel_path, { method: "POST" });
    else await api(batch.delete_path, { method: "DELETE" });
    clearError();
    if (action === "delete") location.hash = "#/batches";
    else await route();
  } catch (error) {
    showError(error);
  }
}

async function download(file) {
  try {
    const response = await api(file.path, { raw: true });
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: file.filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError(error);
  }
}

// -- usage -------------------------------------------------------------------------------

// Tokens per day of this key's workspace: a bar per day, batch and standard stacked, and a
// table by model and tier.
async function renderUsage() {
  const usage = await api("/console/api/usage?days=14");
  const most = Math.max(1, ...usage.days.map((d) => d.batch + d.standard));
  const bars = usage.days.map((day) =>
    el("div", { class: "day", "data-day": day.date, title: `${day.date}: ${number(day.standard)} standard, ${number(day.batch)} batch` },
      el("div", { class: "stack" },
        el("span", { class: "standard", style: `height:${(100 * day.standard) / most}%` }),
        el("span", { class: "batch", style: `height:${(100 * day.batch) / most}%` })),
      el("div", { class: "label", text: day.date.slice(5) })));
  const rows = usage.by_model.map((row) =>
    el("tr", { "data-model": row.model, "data-tier": row.service_tier },
      el("td", { class: "mono", text: row.model }),
      el("td", { text: row.service_tier }),
      el("td", { class: "num", "data-field": "input", text: number(row.input_tokens) }),
      el("td", { class: "num", "data-field": "output", text: number(row.output_tokens) }),
      el("td", { class: "num", text: number(row.requests) })));
  view.replaceChildren(
    el("h1", { text: `Usage of ${usage.workspace}` }),
    el("p", { class: "muted", text: "Tokens per day (UTC), last 14 days: standard (interactive) and batch." }),
    el("div", { class: "chart", id: "usage-chart", role: "img", "aria-label": "tokens per day" }, bars),
    el("div", { class: "legend" }, el("span", { class: "chip standard", text: "standard" }), " ", el("span", { class: "chip batch", text: "batch" })),
    usage.by_model.length === 0
      ? el("p", { class: "empty", text: "No usage recorded in these days." })
      : el("div", { class: "table-wrap" }, el("table", { id: "usage-table" },
          el("thead", {}, el("tr", {}, el("th", { text: "Model" }), el("th", { text: "Tier" }), el("th", { text: "Input tokens" }),
            el("th", { text: "Output tokens" }), el("th", { text: "Requests" }))),
          el("tbody", {}, rows))));
  schedule(route, 10000);
}

// -- webhooks (admin keys) -----------------------------------------------------------------

// Endpoints, deliveries by state, and the latest attempts with what each got back.
async function renderWebhooks() {
  const hooks = await api("/console/api/webhooks?limit=50");
  const counts = ["pending", "delivered", "failed"].map((state) =>
    el("span", { class: `chip ${state === "failed" ? "errored" : state === "delivered" ? "succeeded" : "canceled"}`,
      "data-deliveries": state, text: `${number(hooks.deliveries[state] || 0)} ${state}` }));
  view.replaceChildren(
    el("h1", { text: "Webhooks" }),
    el("div", { class: "chips" }, counts),
    el("h2", { text: "Endpoints" }),
    hooks.endpoints.length === 0
      ? el("p", { class: "empty", text: "No endpoints: add one with client.beta.organization.webhooks.create() or [[webhooks]] in the config file." })
      : el("div", { class: "table-wrap" }, el("table", { id: "webhook-endpoints" },
          el("thead", {}, el("tr", {}, ["Endpoint", "URL", "Events", "Workspace", "Source", "State"].map((h) => el("th", { text: h })))),
          el("tbody", {}, hooks.endpoints.map((e) => el("tr", { "data-endpoint": e.id },
            el("td", { class: "mono", text: e.name || e.id }),
            el("td", { class: "mono", text: e.url }),
            el("td", { text: e.enabled_events.join(", ") }),
            el("td", { text: e.workspace_id || "all" }),
            el("td", { text: e.source }),
            el("td", { text: e.state })))))),
    el("h2", { text: "Latest attempts" }),
    hooks.attempts.length === 0
      ? el("p", { class: "empty", text: "No delivery attempts yet." })
      : el("div", { class: "table-wrap" }, el("table", { id: "webhook-attempts" },
          el("thead", {}, el("tr", {}, ["When", "Event", "Batch", "URL", "Attempt", "Answer", "Delivery"].map((h) => el("th", { text: h })))),
          el("tbody", {}, hooks.attempts.map((a) => el("tr", { "data-event": a.event_id, "data-attempt": String(a.attempt) },
            el("td", { text: when(a.at) }),
            el("td", { text: a.event_type }),
            el("td", { class: "mono", text: a.batch_id }),
            el("td", { class: "mono", text: a.url }),
            el("td", { class: "num", text: String(a.attempt) }),
            el("td", { text: a.status_code ? `${a.status_code} in ${a.duration_ms} ms` : (a.error || "") }),
            el("td", { text: a.delivery })))))));
  schedule(route, 5000);
}

// -- models -------------------------------------------------------------------------------

async function renderModels() {
  const models = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: "100" });
    if (after) query.set("after_id", after);
    const page = await api(`/v1/models?${query}`);
    models.push(...page.data);
    if (!page.has_more || !page.last_id) break;
    after = page.last_id;
  }
  view.replaceChildren(
    el("h1", { text: "Models" }),
    models.length === 0
      ? el("p", { class: "empty", text: "No named models: every route is a pattern (e.g. \"*\")." })
      : el("div", { class: "table-wrap" }, el("table", { id: "models-table" },
          el("thead", {}, el("tr", {}, el("th", { text: "Model" }), el("th", { text: "Name" }),
            el("th", { class: "optional", text: "Released" }), el("th", { text: "Max output" }), el("th", { class: "optional", text: "Batch" }))),
          el("tbody", {}, models.map((m) => el("tr", {},
            el("td", { class: "mono", text: m.id }),
            el("td", { text: m.display_name }),
            el("td", { class: "optional", text: when(m.created_at) }),
            el("td", { text: m.max_tokens === null ? "—" : number(m.max_tokens) }),
            el("td", { class: "optional", text: m.capabilities && m.capabilities.batch && m.capabilities.batch.supported ? "yes" : "—" })))))),
    ...callSnippets(models.length ? models[0].id : "claude-sim"));
}

// How to reach a model from other clients: any OpenAI SDK through /v1/chat/completions,
// and legacy Text Completions through /v1/complete, with the same key.
function callSnippets(model) {
  const origin = location.origin;
  const chat = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${origin}/v1/", api_key="YOUR_KEY")`,
    "reply = client.chat.completions.create(",
    `    model="${model}", messages=[{"role": "user", "content": "Hello"}],`,
    ")",
    "print(reply.choices[0].message.content)",
  ].join("\n");
  const body = JSON.stringify({ model, max_tokens_to_sample: 64, prompt: "\n\nHuman: Hello\n\nAssistant:" });
  const complete = `curl ${origin}/v1/complete -H "x-api-key: YOUR_KEY" -H "anthropic-version: 2023-06-01" \\\n  -H "content-type: application/json" -d '${body}'`;
  return [
    el("h2", { text: "Call a model" }),
    el("p", { text: "With the OpenAI SDK (POST /v1/chat/completions):" }),
    el("pre", { class: "snippet", id: "chat-snippet", text: chat }),
    el("p", { text: "Legacy Text Completions (POST /v1/complete):" }),
    el("pre", { class: "snippet", id: "complete-snippet", text: complete }),
  ];
}

// -- routing -------------------------------------------------------------------------------

async function route() {
  stop();
  const hash = location.hash || "#/batches";
  const [path, search] = hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", path.startsWith(`/${link.dataset.nav}`));
  }
  try {
    const match = path.match(/^\/batches\/([A-Za-z0-9_]+)$/);
    if (match) await renderDetail(match[1], params);
    else if (path === "/models") await renderModels();
    else if (path === "/usage") await renderUsage();
    else if (path === "/webhooks") await renderWebhooks();
    else await renderList(params);
    clearError();
  } catch (error) {
    showError(error);
    if (error.status !== 401) schedule(route, 5000);
  }
}

async function start() {
  await loadInfo();
  showKeyForm(false);
  window.addEventListener("hashchange", () => { samples.clear(); route(); });
  await route();
}

start();
