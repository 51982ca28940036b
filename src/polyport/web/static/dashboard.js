// The dashboard at / — what this node serves and what is happening on it:
// the service, its catalog (every method and event × every pattern), a live
// event feed over long polling, the message queues' counts (with redrive), and a
// playground for the REST operations.

import {clockTime, h, methodBadge, replace, themeToggle} from "./dom.js";
import {credentialsPanel, requestForm} from "./exchange.js";
import {LongPollFeed} from "./feed.js";
import {groupByTag, listOperations, loadSpec} from "./openapi.js";
import {setupQueues} from "./queues.js";

// The feed keeps at most this many events in the page; older ones drop off
// the bottom so a busy node cannot grow the DOM without bound.
const FEED_LIMIT = 200;

const $ = (id) => document.getElementById(id);

// -- service header -------------------------------------------------------------------

function renderService(catalog) {
  const {service} = catalog;
  document.title = `${service.name} v${service.version} · polyport`;
  $("dev-banner").hidden = !catalog.dev;
  const documents = catalog.endpoints.filter((e) => e.kind === "document");
  replace($("service"),
    h("div", {class: "service-head"},
      h("h1", {}, service.name),
      h("span", {class: "chip version"}, `v${service.version}`),
      h("span", {id: "health", class: "chip muted"}, "health …")),
    service.description && h("p", {class: "lead"}, service.description),
    h("nav", {class: "service-links"},
      h("a", {href: "/docs"}, "API docs"),
      h("a", {href: "/openapi.json"}, "OpenAPI (/openapi.json)"),
      h("a", {href: "/metrics"}, "metrics (/metrics)"),
      h("a", {href: "/catalog.json"}, "catalog.json"),
      h("a", {href: "/healthz"}, "healthz"),
      documents.filter((d) => !["/docs", "/openapi.json"].includes(addressPath(d.address)))
        .map((d) => h("a", {href: addressPath(d.address)}, d.target))));
}

/** "GET /openapi.json" → "/openapi.json". */
function addressPath(address) {
  return address.replace(/^[A-Z]+\s+/, "");
}

async function checkHealth() {
  const chip = $("health");
  try {
    const response = await fetch("/healthz", {cache: "no-store"});
    const body = await response.json();
    chip.textContent = `health: ${body.status}`;
    chip.className = `chip ${response.ok ? "status-2xx" : "status-5xx"}`;
  } catch {
    chip.textContent = "health: unreachable";
    chip.className = "chip status-5xx";
  }
}

// -- catalog: target × pattern ---------------------------------------------------------

/** The patterns in the order the node lists them (REST first, then the others). */
function patternsOf(catalog) {
  const patterns = [];
  for (const endpoint of catalog.endpoints) {
    if (endpoint.kind !== "document" && !patterns.includes(endpoint.pattern)) patterns.push(endpoint.pattern);
  }
  return patterns;
}

/**
 * What every address of a column starts with, when it says where (a path or
 * a host:port, like "POST /jsonrpc " or "grpc 127.0.0.1:50051 "): shown once
 * in the column's head instead of on every row, so thirteen columns fit.
 */
function sharedPrefix(addresses) {
  if (addresses.length < 2) return "";
  let prefix = addresses[0];
  for (const address of addresses) {
    while (!address.startsWith(prefix)) prefix = prefix.slice(0, -1);
  }
  // Whole words, or a whole path with its "?": "GET /v1/events?" of the polling column.
  prefix = prefix.slice(0, Math.max(prefix.lastIndexOf(" "), prefix.lastIndexOf("?")) + 1);
  return /[/:]/.test(prefix) ? prefix : "";
}

/**
 * An address as code that wraps only between its parts (after "/", ".", ",",
 * ":" and before "?", "&", "{"), never inside a name: "POST /v1/jobs/create_order"
 * stays readable in a narrow column.
 */
function addressCode(address) {
  const parts = address.split(/(?<=[/.,:])(?=[^\s/])|(?=[?&{])/);
  return h("code", {class: "address"}, parts.flatMap((part, i) => (i ? [h("wbr"), part] : [part])));
}

/** An address cell: a link when it is a plain GET a browser can open, else code. */
function addressCell(endpoints, prefix) {
  if (!endpoints.length) return h("td", {class: "none"}, "—");
  return h("td", {}, endpoints.map((endpoint) => {
    const path = addressPath(endpoint.address);
    const openable = endpoint.address.startsWith("GET ") && !/[{]|CURSOR/.test(path);
    const code = addressCode(endpoint.address.slice(prefix.length));
    return h("div", {title: endpoint.address}, openable ? h("a", {href: path}, code) : code);
  }));
}

function catalogRow(columns, byTarget, name, label, extra) {
  const endpoints = byTarget.get(name) || [];
  return h("tr", {"data-target": name},
    h("th", {scope: "row"}, label, extra),
    columns.map(({pattern, prefix}) =>
      addressCell(endpoints.filter((e) => e.pattern === pattern), prefix)));
}

function renderCatalog(catalog, onTry) {
  const patterns = patternsOf(catalog);
  const byTarget = new Map();
  for (const endpoint of catalog.endpoints) {
    if (!byTarget.has(endpoint.target)) byTarget.set(endpoint.target, []);
    byTarget.get(endpoint.target).push(endpoint);
  }
  const columns = patterns.map((pattern) => ({
    pattern,
    prefix: sharedPrefix(catalog.endpoints
      .filter((e) => e.pattern === pattern && e.kind !== "document").map((e) => e.address)),
  }));
  const span = patterns.length + 1;
  const methodRows = catalog.methods.map((method) => catalogRow(columns, byTarget, method.name,
    [h("code", {}, method.name),
      method.public && h("span", {class: "chip status-2xx", title: "callable without credentials"}, "public"),
      h("button", {type: "button", class: "ghost try", title: "Open in the playground",
        onclick: () => onTry(method.name)}, "▶ try")],
    h("div", {class: "muted small"}, method.summary || "")));
  const eventRows = catalog.events.map((event) => catalogRow(columns, byTarget, event.name,
    h("code", {}, event.name),
    h("div", {class: "muted small"}, "channel ", h("code", {}, event.channel),
      event.description ? ` · ${event.description}` : "")));
  replace($("catalog"),
    h("thead", {}, h("tr", {}, h("th", {}, "target"), columns.map(({pattern, prefix}) =>
      h("th", {scope: "col", "data-pattern": pattern}, pattern,
        prefix && h("code", {class: "address prefix", title: "every address below starts with this"},
          prefix.trim()))))),
    h("tbody", {},
      h("tr", {class: "section-row"}, h("th", {colspan: span}, `methods (${catalog.methods.length})`)),
      methodRows,
      h("tr", {class: "section-row"}, h("th", {colspan: span}, `events (${catalog.events.length})`)),
      eventRows));
  const skipped = Object.entries(catalog.skipped_edges || {});
  replace($("catalog-note"), skipped.length > 0 && [
    "Not served on this node: ",
    skipped.map(([edge, why]) => h("span", {class: "chip", title: why}, edge)),
  ]);
  fitCatalog();
  $("catalog-count").textContent =
    `${catalog.methods.length} methods · ${catalog.events.length} events · ${patterns.length} patterns`;
}

/**
 * A window wide enough for every column gives the catalog no box of its own:
 * the page is the one thing that scrolls, and the head sticks under the top
 * bar. A narrower one scrolls the catalog sideways, inside its panel.
 */
function fitCatalog() {
  const table = $("catalog");
  const wrap = table.parentElement;
  const fit = () => {
    wrap.classList.remove("fits");
    wrap.classList.toggle("fits", table.offsetWidth <= wrap.clientWidth);
  };
  fit();
  new ResizeObserver(fit).observe(wrap);
}

// -- live event feed --------------------------------------------------------------------

function eventItem(event) {
  return h("li", {class: "fresh", "data-type": event.type, "data-id": event.id},
    h("div", {class: "event-head"},
      h("span", {class: "muted"}, clockTime(event.time)),
      h("span", {class: "event-type"}, event.type),
      h("code", {}, event.channel),
      h("span", {class: "muted small", title: "the resume cursor: epoch:offset"}, event.id)),
    // One compact line per event: the feed is for watching traffic, the
    // playground and /docs are for reading bodies in full.
    h("pre", {class: "event-data"}, JSON.stringify(event.data)));
}

function setupFeed(version) {
  const list = $("feed");
  const status = $("feed-status");
  const notice = $("feed-notice");
  const count = $("feed-count");
  const channelsInput = $("feed-channels");
  const pauseButton = $("feed-pause");
  let received = 0;

  const feed = new LongPollFeed({
    base: `/v${version}`,
    channels: ["#"],
    onEvents(events) {
      $("feed-empty").hidden = true;
      // Events arrive oldest first; prepending each puts the newest on top.
      for (const event of events) list.prepend(eventItem(event));
      while (list.children.length > FEED_LIMIT) list.lastElementChild.remove();
      received += events.length;
      count.textContent = `${received} received${received > FEED_LIMIT ? `, newest ${FEED_LIMIT} shown` : ""}`;
    },
    onStatus({state, detail}) {
      const labels = {connecting: "connecting…", live: "live", waiting: "reconnecting", paused: "paused"};
      status.className = `feed-status ${state}`;
      status.textContent = labels[state] || state;
      status.title = detail || "";
      if (state === "waiting") showNotice("error", detail);
      else if (state === "live" && notice.classList.contains("error")) notice.hidden = true;
    },
    onNotice({text}) {
      showNotice("warning", text);
    },
  });

  function showNotice(kind, text) {
    notice.className = `feed-notice ${kind === "error" ? "error" : ""}`;
    notice.textContent = `${clockTime(new Date())} ${text}`;
    notice.hidden = false;
  }

  function channels() {
    const list = channelsInput.value.split(",").map((c) => c.trim()).filter(Boolean);
    return list.length ? list : ["#"];
  }

  function restart(after) {
    feed.channels = channels();
    pauseButton.textContent = "pause";
    notice.hidden = true;
    feed.start(after);
  }

  channelsInput.addEventListener("change", () => restart("now"));
  pauseButton.addEventListener("click", () => {
    if (feed.running) {
      feed.stop();
      pauseButton.textContent = "resume";
    } else {
      // Resuming from the kept cursor delivers what was published meanwhile.
      pauseButton.textContent = "pause";
      feed.start();
    }
  });
  $("feed-replay").addEventListener("click", () => {
    list.replaceChildren();
    received = 0;
    count.textContent = "";
    restart("earliest");
  });
  $("feed-clear").addEventListener("click", () => {
    list.replaceChildren();
    $("feed-empty").hidden = false;
  });
  feed.start("now");
}

// -- playground ---------------------------------------------------------------------------

function setupPlayground(spec) {
  const operations = listOperations(spec);
  const byId = new Map(operations.map((op) => [op.id, op]));
  const select = $("playground-operation");
  const slot = $("playground-form");
  replace(select, groupByTag(spec, operations).map((group) => h("optgroup", {label: group.name},
    group.operations.map((op) => h("option", {value: op.id},
      `${op.method.toUpperCase()} ${op.path} — ${op.id}`)))));

  function show(id) {
    const operation = byId.get(id);
    if (!operation) return;
    select.value = id;
    replace(slot,
      h("p", {class: "playground-summary"}, methodBadge(operation.method), " ",
        operation.op.summary || "", " ", h("a", {href: `/docs#${operation.id}`}, "docs")),
      requestForm(spec, operation));
  }
  select.addEventListener("change", () => show(select.value));
  show(byId.has("get_user") ? "get_user" : operations[0]?.id);
  return (id) => {
    show(id);
    $("playground-panel").scrollIntoView({behavior: "smooth", block: "start"});
  };
}

// -- start ----------------------------------------------------------------------------------

function showError(where, error) {
  replace($(where), h("div", {class: "card error"}, `Could not load: ${error.message || error}`));
}

async function main() {
  $("theme-slot").replaceWith(themeToggle());
  $("credentials-slot").replaceWith(credentialsPanel());
  let catalog;
  try {
    const response = await fetch("/catalog.json", {cache: "no-cache"});
    if (!response.ok) throw new Error(`/catalog.json answered ${response.status}`);
    catalog = await response.json();
  } catch (error) {
    showError("service", error);
    return;
  }
  renderService(catalog);
  checkHealth();
  setupFeed(catalog.service.version);
  if (catalog.endpoints.some((e) => e.pattern === "queues")) {
    $("queues-panel").hidden = false;
    setupQueues(catalog.service.version, $("queues"), $("queues-status"), $("queues-note"));
  }
  let tryOperation = () => {};
  renderCatalog(catalog, (id) => tryOperation(id));
  try {
    tryOperation = setupPlayground(await loadSpec());
  } catch (error) {
    showError("playground-form", error);
  }
  document.body.dataset.ready = "true";
}

main();
