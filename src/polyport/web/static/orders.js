// /demo/orders — a live order list over Server-Sent Events.
//
// The page loads the orders over REST, then follows `orders/#` with the
// browser's own EventSource. To lose nothing between the two, it first asks
// the event log where it stands (a cursor), then loads the list, then opens
// the stream *from that cursor*: an order changed while the list was loading
// arrives as an event, and an event older than what the list shows is ignored
// (orders carry `updated_at`). When the connection drops, EventSource
// reconnects by itself and sends `Last-Event-ID`; the node resumes after it.
// When the node cannot resume (history gone: `event: recovery-failed`) the
// page says so and reloads the list — the only way to be right again.

import {clockTime, h, replace} from "./dom.js";
import {
  ConnectionStatus,
  backoffSeconds,
  browserTicket,
  callNode,
  currentCursor,
  problemText,
  setupPage,
  showNotice,
  trimList,
} from "./live.js";

const CHANNELS = ["orders/#"];
const EVENT_TYPES = ["orders.created", "orders.updated", "orders.deleted"];
const ROW_LIMIT = 100;
const LOG_LIMIT = 100;
// Reading the list: pages of this many, and no more than this many pages.
const PAGE_SIZE = 200;
const MAX_PAGES = 25;
// Only to offer the moves that make sense: the node decides (409 otherwise).
const NEXT_STATUSES = {
  pending: ["paid", "cancelled"],
  paid: ["shipped", "cancelled"],
  shipped: ["delivered"],
  delivered: [],
  cancelled: [],
};
const MOVES = ["paid", "shipped", "delivered", "cancelled"];

const $ = (id) => document.getElementById(id);

let base = "/v1";
let status;
// Each (re)start bumps the generation; callbacks of an older EventSource or
// an older start see a stale generation and do nothing.
let generation = 0;
let source = null;
let failures = 0;
// Where the stream resumes from: the start cursor, then each event's id.
let resumeFrom = "now";
let received = 0;
/** Orders on screen by id: {order, row}. */
const shown = new Map();

// -- the list ---------------------------------------------------------------------------

function statusChip(value) {
  return h("span", {class: `chip order-status order-${value}`}, value);
}

function itemsText(order) {
  return order.items.map((item) => `${item.quantity} × #${item.product_id}`).join(", ");
}

function orderRow(order) {
  const possible = NEXT_STATUSES[order.status] || [];
  return h("tr", {"data-order": order.id, "data-status": order.status},
    h("th", {scope: "row"}, `#${order.id}`, h("div", {class: "muted small"}, `user ${order.user_id}`)),
    h("td", {class: "order-status-cell"}, statusChip(order.status)),
    h("td", {class: "number"}, order.total),
    h("td", {class: "small"}, itemsText(order)),
    h("td", {class: "muted small", title: order.updated_at}, clockTime(order.updated_at)),
    h("td", {class: "moves"}, MOVES.map((move) => h("button", {
      type: "button",
      class: "move",
      "data-move": move,
      disabled: !possible.includes(move),
      title: `PUT ${base}/orders/${order.id} {"status": "${move}"}`,
      onclick: (event) => moveOrder(order.id, move, event.currentTarget),
    }, move))));
}

function flash(row) {
  row.classList.remove("fresh");
  void row.offsetWidth; // restart the animation on a row that just flashed
  row.classList.add("fresh");
}

/** Older than what is on screen? (A replayed event after the list was loaded.) */
function isStale(order, current) {
  return Date.parse(order.updated_at) < Date.parse(current.updated_at);
}

/** Show `order` (new, or newer than what is shown), newest orders on top. */
function upsert(order, {highlight = true} = {}) {
  const current = shown.get(order.id);
  if (current && isStale(order, current.order)) return;
  const row = orderRow(order);
  if (current) {
    current.row.replaceWith(row);
  } else {
    const rows = $("order-rows");
    const after = [...rows.children].find((r) => Number(r.dataset.order) < order.id);
    rows.insertBefore(row, after || null);
  }
  shown.set(order.id, {order, row});
  if (highlight) flash(row);
  trimRows();
}

function remove(id) {
  const current = shown.get(id);
  if (!current) return;
  current.row.remove();
  shown.delete(id);
  $("orders-empty").hidden = shown.size > 0;
}

function trimRows() {
  const rows = $("order-rows");
  while (rows.children.length > ROW_LIMIT) {
    shown.delete(Number(rows.lastElementChild.dataset.order));
    rows.lastElementChild.remove();
  }
  $("orders-empty").hidden = shown.size > 0;
}

/** Every order (up to a bound), newest ROW_LIMIT on screen. */
async function loadOrders() {
  const orders = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const query = new URLSearchParams({limit: String(PAGE_SIZE)});
    if (cursor) query.set("cursor", cursor);
    const result = await callNode("GET", `${base}/orders?${query}`);
    if (!result.ok) throw new Error(`cannot list the orders: ${problemText(result)}`);
    orders.push(...result.body.items);
    cursor = result.body.next_cursor;
    if (!cursor) break;
  }
  return orders.slice(-ROW_LIMIT);
}

function showOrders(orders) {
  $("order-rows").replaceChildren();
  shown.clear();
  for (const order of orders) upsert(order, {highlight: false});
  $("orders-empty").hidden = shown.size > 0;
}

// -- actions ----------------------------------------------------------------------------

function reportAction(ok, text) {
  const line = $("action-result");
  line.className = `small action-result ${ok ? "status-2xx" : "status-4xx"}`;
  line.textContent = `${clockTime(new Date())} ${text}`;
  line.hidden = false;
}

async function moveOrder(id, move, button) {
  button.disabled = true;
  try {
    const result = await callNode("PUT", `${base}/orders/${id}`, {status: move});
    reportAction(result.ok, result.ok
      ? `PUT ${base}/orders/${id} → ${result.status}: ${move}`
      : `PUT ${base}/orders/${id} → ${problemText(result)}`);
  } catch (error) {
    reportAction(false, error.message);
  } finally {
    // The row is redrawn when the event arrives; until then the button stays usable.
    if (button.isConnected) button.disabled = false;
  }
}

function setupPlaceForm() {
  const form = $("place-order");
  const result = $("place-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const body = {
      user_id: Number(fields.get("user_id")),
      items: [{product_id: Number(fields.get("product_id")), quantity: Number(fields.get("quantity"))}],
    };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const answer = await callNode("POST", `${base}/orders`, body);
      result.className = `small ${answer.ok ? "status-2xx" : "status-4xx"}`;
      result.textContent = answer.ok ? `${answer.status}: order #${answer.body.id} placed` : problemText(answer);
    } catch (error) {
      result.className = "small status-5xx";
      result.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
}

// -- the stream ---------------------------------------------------------------------------

function logEvent(event) {
  const data = event.data || {};
  const what = event.type === "orders.deleted" ? `#${data.id} deleted` : `#${data.id} ${data.status}`;
  $("event-log").prepend(h("li", {class: "fresh", "data-id": event.id, "data-type": event.type},
    h("div", {class: "event-head"},
      h("span", {class: "muted"}, clockTime(event.time)),
      h("span", {class: "event-type"}, event.type),
      h("span", {}, what),
      h("code", {class: "muted small", title: "the resume cursor: epoch:offset"}, event.id))));
  trimList($("event-log"), LOG_LIMIT);
}

function onEvent(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    showNotice($("stream-notice"), "error", "an event that is not JSON was ignored");
    return;
  }
  resumeFrom = message.lastEventId || event.id;
  received += 1;
  $("last-event-id").textContent = resumeFrom;
  $("event-count").textContent = `${received} event${received === 1 ? "" : "s"} received`;
  logEvent(event);
  if (event.type === "orders.deleted") remove(event.data.id);
  else upsert(event.data);
}

/** Open the EventSource, resuming after `after`. */
function openStream(mine, after) {
  const query = new URLSearchParams();
  for (const channel of CHANNELS) query.append("channel", channel);
  // Only the first request uses this; on its own reconnections the browser
  // sends Last-Event-ID, which the node prefers.
  query.set("last_event_id", after);
  const stream = new EventSource(`${base}/events/stream?${query}`);
  source = stream;
  const live = (handler) => (message) => {
    if (mine === generation) handler(message);
  };
  stream.addEventListener("open", live(() => {
    failures = 0;
    status.set("open", `${base}/events/stream?${query}`);
    const notice = $("stream-notice");
    if (notice.dataset.kind === "error") notice.hidden = true;
  }));
  for (const type of EVENT_TYPES) stream.addEventListener(type, live(onEvent));
  stream.addEventListener("recovery-failed", live((message) => {
    let detail = "";
    try {
      detail = JSON.parse(message.data).message || "";
    } catch {
      // no detail then
    }
    showNotice($("stream-notice"), "warning",
      `Recovery failed: the node no longer holds the events after ${resumeFrom}` +
      `${detail ? ` (${detail})` : ""}. Some changes may be missing; reloading the list.`);
    start();
  }));
  stream.addEventListener("error", live(() => {
    if (stream.readyState === EventSource.CONNECTING) {
      // A dropped connection: the browser retries by itself, with Last-Event-ID.
      status.set("reconnecting", "the browser reconnects and resumes with Last-Event-ID");
      return;
    }
    // Refused (not a stream: 401, 403, 422 …): EventSource gives up; retry ourselves.
    stream.close();
    retry(mine, "the node refused the stream", () => openStream(mine, resumeFrom));
  }));
}

function retry(mine, reason, again) {
  failures += 1;
  const seconds = backoffSeconds(failures);
  const retrying = `retrying in ${seconds.toFixed(1)} s (attempt ${failures})`;
  status.set("reconnecting", `${reason}; ${retrying}`);
  showNotice($("stream-notice"), "error", `${reason}; ${retrying}`);
  setTimeout(async () => {
    if (mine !== generation) return;
    try {
      await browserTicket();
    } catch (error) {
      retry(mine, error.message, again);
      return;
    }
    if (mine === generation) again();
  }, seconds * 1000);
}

/** (Re)load the list and follow the stream from where the log stood before it. */
async function start() {
  const mine = ++generation;
  if (source) source.close();
  source = null;
  status.set(failures ? "reconnecting" : "connecting", "loading the orders");
  try {
    await browserTicket();
    const cursor = await currentCursor(base, CHANNELS);
    const orders = await loadOrders();
    if (mine !== generation) return;
    showOrders(orders);
    resumeFrom = cursor;
    openStream(mine, cursor);
  } catch (error) {
    if (mine === generation) retry(mine, error.message, start);
  }
}

async function main() {
  status = new ConnectionStatus($("stream-status"));
  try {
    const catalog = await setupPage();
    base = `/v${catalog.service.version}`;
  } catch (error) {
    showNotice($("stream-notice"), "error", `Could not load the catalog: ${error.message}`);
    status.set("closed", error.message);
    return;
  }
  setupPlaceForm();
  $("log-clear").addEventListener("click", () => replace($("event-log")));
  await start();
  document.body.dataset.ready = "true";
}

main();
