// The search page: text, image (picker or drag-and-drop) and "more like this" over the JSON API.
// A text search or a "more like this" is kept in the URL (/?q=cat&table=captions), so that it
// can be shared, bookmarked and reopened; the filter box shows where the table's index filters.
"use strict";

const $ = (id) => document.getElementById(id);
let tables = [];
let defaultK = 12;

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error(`the server cannot be reached (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    throw new Error(`${response.status}: ${(body && body.error) || response.statusText}`);
  }
  return body;
}

function currentTable() {
  return tables.find((t) => t.name === $("table").value) || tables[0];
}

// The filter box where the index takes filters (or where a filter is set, so it can be cleared);
// "one card per image" on caption tables.
function showOptions() {
  const table = currentTable();
  $("filter").hidden = !(table && (table.filters || $("filter").value));
  $("group-label").hidden = !(table && table.kind === "caption");
}

// What a search sends besides its query: the filter and, on caption tables, the grouping.
function options(table) {
  const params = new URLSearchParams();
  const filter = $("filter").value.trim();
  if (filter) params.set("filter", filter);
  if (table.kind === "caption") params.set("group", $("group").checked ? "image" : "none");
  return params;
}

// The search, as the page's URL: /?q=…&table=…[&filter=…][&group=none], or /?like=<id>&table=….
function remember(params) {
  const wanted = params ? `/?${params}` : "/";
  if (location.pathname + location.search !== wanted) history.pushState(null, "", wanted);
}

function render(data, label) {
  const grid = $("results");
  grid.replaceChildren();
  $("status").textContent =
    `${data.results.length} results for ${label} in ${data.table} (${data.model_name}) · ` +
    `encode ${data.took_ms.encode.toFixed(1)} ms, search ${data.took_ms.search.toFixed(1)} ms`;
  for (const hit of data.results) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.id = hit.id;
    card.title = "more like this";
    if (hit.thumbnail) {
      const img = document.createElement("img");
      img.src = hit.thumbnail;
      img.alt = hit.id;
      card.appendChild(img);
    } else {
      const none = document.createElement("div");
      none.className = "noimg";
      none.textContent = "no image";
      card.appendChild(none);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = `#${hit.rank} ${hit.id}`;
    meta.append(score, id);
    if (hit.caption) {
      const caption = document.createElement("div");
      caption.className = "caption";
      caption.textContent = hit.caption;
      meta.appendChild(caption);
    }
    if (hit.captions && hit.captions.length > 1) {  // grouped: the image's other captions
      const more = document.createElement("div");
      more.className = "more";
      more.textContent = `+${hit.captions.length - 1} more matching caption${hit.captions.length > 2 ? "s" : ""}`;
      more.title = hit.captions.slice(1).join("\n");
      meta.appendChild(more);
    }
    card.appendChild(meta);
    card.addEventListener("click", () => similar(data.table, hit.id));
    grid.appendChild(card);
  }
}

async function run(promise, label) {
  showError("");
  $("status").textContent = "searching…";
  try {
    render(await promise, label);
  } catch (err) {
    $("status").textContent = "";
    $("results").replaceChildren();
    showError(err.message);
  }
}

function searchText(text) {
  const table = currentTable();
  const params = new URLSearchParams({ q: text, table: table.name });
  for (const [key, value] of options(table)) {
    if (key !== "group" || value === "none") params.set(key, value);  // grouping is the default
  }
  remember(params);
  const query = new URLSearchParams({ q: text, table: table.name, k: String(defaultK) });
  for (const [key, value] of options(table)) query.set(key, value);
  return run(api(`/api/search/text?${query}`), `“${text}”`);
}

function searchImage(file) {
  let table = currentTable();
  if (!table.image_search) {  // a caption table: search its images instead
    table = tables.find((t) => t.name === table.image_table) || tables.find((t) => t.image_search) || table;
  }
  const form = new FormData();
  form.append("file", file);
  form.append("table", table.name);
  form.append("k", String(defaultK));
  for (const [key, value] of options(table)) {
    if (key !== "filter" || table.filters) form.append(key, value);
  }
  remember(null);  // an upload cannot be put in a URL
  return run(api("/api/search/image", { method: "POST", body: form }), file.name);
}

function similar(name, id) {
  const table = tables.find((t) => t.name === name) || currentTable();
  remember(new URLSearchParams({ like: id, table: table.name }));
  const query = new URLSearchParams({ id, table: table.name, k: String(defaultK) });
  for (const [key, value] of options(table)) {
    if (key !== "filter" || table.filters) query.set(key, value);
  }
  return run(api(`/api/similar?${query}`), `items like ${id}`);
}

// The search the URL holds, run again (on load, and on the browser's back and forward).
function restore() {
  const params = new URLSearchParams(location.search);
  const named = tables.find((t) => t.name === params.get("table"));
  if (named) $("table").value = named.name;
  $("filter").value = params.get("filter") || "";
  $("group").checked = params.get("group") !== "none";
  showOptions();
  const text = (params.get("q") || "").trim();
  $("query").value = text;
  if (text) return searchText(text);
  if (params.get("like")) return similar(currentTable().name, params.get("like"));
  return null;
}

async function start() {
  try {
    const info = await api("/api/tables");
    tables = info.tables;
    defaultK = info.default_k;
  } catch (err) {
    showError(err.message);
    return;
  }
  const select = $("table");
  for (const t of tables) {
    const option = document.createElement("option");
    option.value = t.name;
    option.textContent = `${t.name} · ${t.model_name} · ${t.rows} ${t.kind === "caption" ? "captions" : "images"}`;
    select.appendChild(option);
  }
  const textual = tables.find((t) => t.text_search);
  if (textual) select.value = textual.name;
  select.addEventListener("change", showOptions);
  $("filter").addEventListener("input", showOptions);
  window.addEventListener("popstate", restore);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (text) searchText(text);
  });
  $("file").addEventListener("change", () => {
    if ($("file").files.length) searchImage($("file").files[0]);
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) searchImage(file);
  });
  restore();
}

start();
