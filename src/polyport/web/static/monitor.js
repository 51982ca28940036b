// /demo/monitor — a live chart of the sensor fleet over Server-Sent Events.
//
// The devices publish over MQTT; the page follows the same events with the
// browser's own EventSource on `sensors/#` and `alerts/#`, from now on (a
// chart of the last minutes needs no history; the alerts are read from history
// first, to show which sensors are alerting already). When the connection drops,
// EventSource reconnects by itself with `Last-Event-ID` and the node resumes
// after it: no reading is lost or drawn twice. The chart is plain SVG, drawn
// here — no chart library, no CDN.

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

const CHANNELS = ["sensors/#", "alerts/#"];
const READINGS = {"sensors.temperature": "temperature", "sensors.humidity": "humidity"};
const ALERTS = ["alerts.raised", "alerts.cleared"];
const FIELD = {temperature: "celsius", humidity: "percent"};
const UNIT = {temperature: "°C", humidity: "%"};
// What the chart shows: the last WINDOW_MS at most (less while the page is young), at
// most MAX_POINTS readings per line.
const WINDOW_MS = 3 * 60 * 1000;
const MIN_SPAN_MS = 30 * 1000;
const MAX_POINTS = 600;
const ALERT_LIMIT = 50;
const ALERT_PAGE = 1000;
const ALERT_PAGES = 10;
const PALETTE = ["var(--info)", "var(--ok)", "var(--warn)", "var(--other)", "var(--patch)",
  "var(--error)", "var(--accent)", "var(--muted)"];
// The SVG's own coordinates (viewBox 0 0 640 220) and the plot area inside them.
const BOX = {width: 640, height: 220, left: 44, right: 12, top: 10, bottom: 22};

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let base = "/v1";
let status;
let generation = 0;
let source = null;
let failures = 0;
let resumeFrom = null;
let received = 0;
let drawPending = false;
/** Readings by kind, then sensor: [{t, v}], oldest first. */
const series = {temperature: new Map(), humidity: new Map()};
/** Each sensor's colour, in the order sensors first appeared. */
const colours = new Map();
/** The sensors whose alert is raised now; the alert line, once an alert named it. */
const alerting = new Set();
let alertLine = null;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function colourOf(sensor) {
  if (!colours.has(sensor)) colours.set(sensor, PALETTE[colours.size % PALETTE.length]);
  return colours.get(sensor);
}

// -- the chart --------------------------------------------------------------------------

function record(kind, sensor, time, value) {
  const lines = series[kind];
  if (!lines.has(sensor)) lines.set(sensor, []);
  const points = lines.get(sensor);
  points.push({t: time, v: value});
  if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
  colourOf(sensor);
  scheduleDraw();
}

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    draw();
  });
}

/** Nice round steps for an axis from `low` to `high`: about four of them. */
function ticks(low, high) {
  const raw = (high - low) / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const found = [];
  for (let value = Math.ceil(low / step) * step; value <= high; value += step) found.push(value);
  return found;
}

function drawChart(kind, now, span) {
  const chart = $(`chart-${kind}`);
  const since = now - span;
  const visible = [];
  for (const [sensor, points] of series[kind]) {
    const shown = points.filter((p) => p.t >= since);
    if (shown.length) visible.push([sensor, shown]);
  }
  const values = visible.flatMap(([, points]) => points.map((p) => p.v));
  if (kind === "temperature" && alertLine !== null && values.length) values.push(alertLine);
  const plotWidth = BOX.width - BOX.left - BOX.right;
  const plotHeight = BOX.height - BOX.top - BOX.bottom;
  const children = [];
  let drawn = 0;
  if (values.length) {
    const low = Math.floor(Math.min(...values) - 1);
    const high = Math.ceil(Math.max(...values) + 1);
    const x = (t) => BOX.left + ((t - since) / span) * plotWidth;
    const y = (v) => BOX.top + (1 - (v - low) / (high - low)) * plotHeight;
    for (const value of ticks(low, high)) {
      children.push(svg("line", {class: "grid", x1: BOX.left, x2: BOX.width - BOX.right,
        y1: y(value), y2: y(value)}));
      children.push(svg("text", {class: "axis", x: BOX.left - 6, y: y(value) + 4,
        "text-anchor": "end"}, document.createTextNode(`${Math.round(value * 10) / 10}`)));
    }
    for (const part of [3, 2, 1, 0]) {
      const seconds = Math.round((span * part) / 3 / 1000);
      const label = seconds === 0 ? "now" : seconds % 60 ? `−${seconds} s` : `−${seconds / 60} min`;
      children.push(svg("text", {class: "axis", x: x(now - seconds * 1000), y: BOX.height - 6,
        "text-anchor": part === 0 ? "end" : part === 3 ? "start" : "middle"},
      document.createTextNode(label)));
    }
    if (kind === "temperature" && alertLine !== null) {
      children.push(svg("line", {class: "alert-line", x1: BOX.left, x2: BOX.width - BOX.right,
        y1: y(alertLine), y2: y(alertLine)}));
    }
    for (const [sensor, points] of visible) {
      const colour = colourOf(sensor);
      const coordinates = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
      children.push(svg("polyline", {class: "reading-line", "data-sensor": sensor,
        "data-points": points.length, points: coordinates.join(" "), stroke: colour}));
      const last = points[points.length - 1];
      children.push(svg("circle", {class: "reading-last", "data-sensor": sensor, cx: x(last.t),
        cy: y(last.v), r: 3, fill: colour}));
      drawn += points.length;
    }
  }
  chart.replaceChildren(...children);
  chart.dataset.points = String(drawn);
}

function drawLegend() {
  const items = [...colours.keys()].sort().map((sensor) => {
    const latest = (kind) => {
      const points = series[kind].get(sensor) || [];
      const last = points[points.length - 1];
      return last ? `${last.v} ${UNIT[kind]}` : "—";
    };
    return h("li", {"data-sensor": sensor, class: alerting.has(sensor) ? "alerting" : null},
      h("span", {class: "swatch", style: `background: ${colourOf(sensor)}`}),
      h("strong", {}, sensor),
      h("span", {class: "muted small"}, `${latest("temperature")} · ${latest("humidity")}`),
      alerting.has(sensor) && h("span", {class: "chip alert-chip"}, "alert"));
  });
  replace($("legend"), items);
}

function draw() {
  // The newest reading's time, not the browser's clock: a skewed clock would
  // push every point off the chart.
  let now = Date.now();
  let first = now;
  for (const lines of Object.values(series)) {
    for (const points of lines.values()) {
      now = Math.max(now, points[points.length - 1].t);
      first = Math.min(first, points[0].t);
    }
  }
  // The time axis grows with what the page received, from MIN_SPAN_MS to WINDOW_MS: a
  // page opened a moment ago draws across the chart, not in its last few pixels.
  const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, Math.ceil((now - first) / 30_000) * 30_000));
  drawChart("temperature", now, span);
  drawChart("humidity", now, span);
  drawLegend();
  $("chart-empty").hidden = colours.size > 0;
}

// -- alerts -----------------------------------------------------------------------------

/** Alert ids listed: an alert read from history and then streamed is listed once. */
const listed = new Set();

function onAlert(event, {fresh = true} = {}) {
  if (listed.has(event.id)) return;
  listed.add(event.id);
  const data = event.data || {};
  if (event.type === "alerts.raised") {
    alerting.add(data.sensor);
    alertLine = data.threshold;
  } else {
    alerting.delete(data.sensor);
  }
  const raised = event.type === "alerts.raised";
  $("alert-log").prepend(h("li", {class: `${fresh ? "fresh " : ""}${raised ? "alert-raised" : "alert-cleared"}`,
    "data-id": event.id, "data-type": event.type},
  h("div", {class: "event-head"},
    h("span", {class: "muted"}, clockTime(event.time)),
    h("span", {class: "event-type"}, event.type)),
  h("div", {}, data.text || "")));
  trimList($("alert-log"), ALERT_LIMIT);
  $("alerts-empty").hidden = true;
  scheduleDraw();
}

// -- the stream -------------------------------------------------------------------------

function onEvent(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    showNotice($("stream-notice"), "error", "an event that is not JSON was ignored");
    return;
  }
  resumeFrom = message.lastEventId || event.id;
  $("last-event-id").textContent = resumeFrom;
  if (ALERTS.includes(event.type)) {
    onAlert(event);
    return;
  }
  const kind = READINGS[event.type];
  const value = event.data?.[FIELD[kind]];
  if (typeof value !== "number") return;
  received += 1;
  $("event-count").textContent = `${received} reading${received === 1 ? "" : "s"} received`;
  record(kind, event.data.sensor, Date.parse(event.time), value);
}

function openStream(mine) {
  const query = new URLSearchParams();
  for (const channel of CHANNELS) query.append("channel", channel);
  // Only after a refused stream; the browser's own reconnections send Last-Event-ID.
  if (resumeFrom) query.set("last_event_id", resumeFrom);
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
    document.body.dataset.ready = "true";
  }));
  for (const type of [...Object.keys(READINGS), ...ALERTS]) {
    stream.addEventListener(type, live(onEvent));
  }
  stream.addEventListener("recovery-failed", live(() => {
    showNotice($("stream-notice"), "warning",
      "Some readings were no longer in the node's history; the chart has a gap.");
  }));
  stream.addEventListener("error", live(() => {
    if (stream.readyState === EventSource.CONNECTING) {
      status.set("reconnecting", "the browser reconnects and resumes with Last-Event-ID");
      return;
    }
    stream.close();
    retry(mine, "the node refused the stream");
  }));
}

function retry(mine, reason) {
  failures += 1;
  const seconds = backoffSeconds(failures);
  const retrying = `retrying in ${seconds.toFixed(1)} s (attempt ${failures})`;
  status.set("reconnecting", `${reason}; ${retrying}`);
  showNotice($("stream-notice"), "error", `${reason}; ${retrying}`);
  setTimeout(() => {
    if (mine === generation) start();
  }, seconds * 1000);
}

/**
 * The alerts history holds (a few per sensor and hour): which sensors are alerting
 * now, and the latest alerts for the list. Bounded: ALERT_PAGES pages at most.
 */
async function loadAlerts() {
  const found = [];
  let after = "earliest";
  for (let page = 0; page < ALERT_PAGES; page += 1) {
    const query = new URLSearchParams({channel: "alerts/#", after, limit: String(ALERT_PAGE)});
    const result = await callNode("GET", `${base}/events?${query}`);
    if (!result.ok) throw new Error(`cannot read the alerts: ${problemText(result)}`);
    found.push(...result.body.events);
    if (result.body.events.length < ALERT_PAGE) break;
    after = result.body.next;
  }
  return found;
}

/** Where the log stands, the alerts so far, then the stream from that point on. */
async function start() {
  const mine = ++generation;
  if (source) source.close();
  source = null;
  status.set(failures ? "reconnecting" : "connecting", "reading the alerts");
  try {
    await browserTicket();
    if (!resumeFrom) {
      const cursor = await currentCursor(base, CHANNELS);
      const alerts = await loadAlerts();
      if (mine !== generation) return;
      for (const event of alerts) onAlert(event, {fresh: false});
      resumeFrom = cursor;
    }
  } catch (error) {
    if (mine === generation) retry(mine, error.message);
    return;
  }
  if (mine === generation) openStream(mine);
}

/** Put the node's MQTT port into the copy-paste commands (from /asyncapi.json). */
async function showMqttPort() {
  try {
    const response = await fetch("/asyncapi.json", {cache: "no-cache"});
    const host = (await response.json()).servers?.mqtt?.host;
    if (!host) return;
    const port = host.slice(host.lastIndexOf(":") + 1);
    for (const code of document.querySelectorAll("#try-panel pre code")) {
      code.textContent = code.textContent.replace("-p PORT", `-p ${port}`);
    }
    replace($("mqtt-address"), "The node's MQTT listener: ", h("code", {}, `mqtt://${host}`),
      " (from ", h("a", {href: "/asyncapi.json"}, "/asyncapi.json"), ").");
  } catch {
    // the commands keep PORT: the start banner says it too
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
  $("alerts-clear").addEventListener("click", () => {
    replace($("alert-log"));
    $("alerts-empty").hidden = false;
  });
  // The window slides even when no reading comes.
  setInterval(scheduleDraw, 1000);
  showMqttPort();
  await start();
}

main();
