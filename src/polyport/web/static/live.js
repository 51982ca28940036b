// What the two live demo pages (/demo/orders over SSE, /demo/chat over
// WebSocket) share: the page frame (theme, credentials, dev banner), calls to
// the node, the credentials a stream can carry, the connection status chip and
// the reconnect backoff.

import {clockTime, themeToggle} from "./dom.js";
import {authHeaders, credentialsPanel} from "./exchange.js";

const MAX_BACKOFF_SECONDS = 30;

const $ = (id) => document.getElementById(id);

/**
 * The top bar's theme switch, the credentials panel and the dev banner; answers
 * the catalog (service name, version, dev mode) the page builds its URLs from.
 */
export async function setupPage() {
  $("theme-slot").replaceWith(themeToggle());
  $("credentials-slot").replaceWith(credentialsPanel());
  const response = await fetch("/catalog.json", {cache: "no-cache"});
  if (!response.ok) throw new Error(`/catalog.json answered ${response.status}`);
  const catalog = await response.json();
  $("dev-banner").hidden = !catalog.dev;
  return catalog;
}

/** A JSON call to the node with the page's credentials: {status, ok, body}. */
export async function callNode(method, path, body) {
  const headers = {accept: "application/json", ...authHeaders()};
  const init = {method, headers, cache: "no-store"};
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new Error("the node is unreachable");
  }
  const text = await response.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return {status: response.status, ok: response.ok, body: parsed};
}

/** One line for a failed call: the problem's detail (RFC 9457) or the status. */
export function problemText(result) {
  const body = result.body;
  const detail = body && typeof body === "object" ? body.detail || body.title : body;
  return `${result.status}${detail ? `: ${detail}` : ""}`;
}

/**
 * The position the log of `channels` has reached now, as a cursor.
 *
 * A page that loads state and then follows events starts following from
 * here: everything published after this moment is delivered, even if the
 * stream opens (or drops before its first event) a little later.
 */
export async function currentCursor(base, channels) {
  const query = new URLSearchParams();
  for (const channel of channels) query.append("channel", channel);
  query.set("after", "now");
  query.set("limit", "1");
  const result = await callNode("GET", `${base}/events?${query}`);
  if (!result.ok || typeof result.body?.next !== "string") {
    throw new Error(`cannot read the event log: ${problemText(result)}`);
  }
  return result.body.next;
}

/**
 * Before a stream opens: trade the page's credentials for a short-lived
 * ticket, which the node sets as an HttpOnly cookie. EventSource and WebSocket
 * cannot send an Authorization header, and a token in a URL ends up in logs.
 * Without credentials (anonymous, or development mode) there is nothing to do.
 */
export async function browserTicket() {
  if (Object.keys(authHeaders()).length === 0) return;
  const result = await callNode("POST", "/auth/ticket");
  if (!result.ok) throw new Error(`credentials refused: ${problemText(result)}`);
}

/** Seconds before reconnect attempt `failures` (1, 2, 4 … 30) with jitter. */
export function backoffSeconds(failures) {
  const ceiling = Math.min(MAX_BACKOFF_SECONDS, 2 ** Math.max(0, failures - 1));
  // Jitter, so that many pages cut off together do not come back in lockstep.
  return ceiling * (0.5 + Math.random() / 2);
}

const STATES = {
  connecting: {label: "connecting…", className: ""},
  open: {label: "open", className: "live"},
  reconnecting: {label: "reconnecting", className: "waiting"},
  closed: {label: "closed", className: "failed"},
};

/** The connection chip of a page header: its text, colour, tooltip and data-state. */
export class ConnectionStatus {
  constructor(element) {
    this.element = element;
  }

  set(state, detail = "") {
    const {label, className} = STATES[state];
    this.element.className = `feed-status ${className}`;
    this.element.dataset.state = state;
    this.element.textContent = label;
    this.element.title = detail;
  }
}

/** Show `text` (as text) in a notice paragraph; kind "error" or "warning". */
export function showNotice(element, kind, text) {
  element.className = `feed-notice${kind === "error" ? " error" : ""}`;
  element.dataset.kind = kind;
  element.textContent = `${clockTime(new Date())} ${text}`;
  element.hidden = false;
}

/** Keep at most `limit` children, dropping from the end (the oldest). */
export function trimList(list, limit) {
  while (list.children.length > limit) list.lastElementChild.remove();
}
