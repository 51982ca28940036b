// /demo/chat — a support chat room over a raw WebSocket (the polyport.v1 frames).
//
// Joining a room: ask the event log where `chat/<room>` stands (a cursor),
// connect to /ws, wait for `welcome`, then `subscribe` after that cursor.
// Each `event` frame moves the cursor to its event id. When the socket
// closes, the page reconnects with backoff and subscribes again `after` the
// cursor: the node sends what was said meanwhile, then live messages — none
// lost, none twice. (Starting from "now" instead of a cursor would lose what
// is said between joining and a drop that comes before the first message.)

import {clockTime, h, replace} from "./dom.js";
import {
  ConnectionStatus,
  backoffSeconds,
  browserTicket,
  currentCursor,
  setupPage,
  showNotice,
  trimList,
} from "./live.js";

const PROTOCOL = "polyport.v1";
const EVENT = "chat.message";
const MESSAGE_LIMIT = 500;
const FRAME_LIMIT = 60;
const FRAME_TEXT = 400;
const ROOM = /^[a-z0-9_-]{1,64}$/;
const NAME_KEY = "polyport.chat.name";

const $ = (id) => document.getElementById(id);

let base = "/v1";
let status;
const state = {
  room: "support",
  socket: null,
  // Each join bumps the generation; handlers of an older socket do nothing.
  generation: 0,
  failures: 0,
  timer: 0,
  frameIds: 0,
  // Where to resume: the join's cursor, then the id of each event received.
  cursor: null,
  subscribed: false,
  // Why the page closed its own socket (a refused subscription), for the notice.
  refusal: null,
  /** Frames sent and not yet answered: id → {type, text}. */
  pending: new Map(),
  /** Event ids of the messages this page published. */
  mine: new Set(),
};

const channel = () => `chat/${state.room}`;

// -- what the page shows ----------------------------------------------------------------

function logFrame(direction, text) {
  const shown = text.length > FRAME_TEXT ? `${text.slice(0, FRAME_TEXT)}…` : text;
  $("frames").prepend(h("li", {class: `frame frame-${direction === "→" ? "out" : "in"}`},
    h("span", {class: "frame-dir"}, direction), h("code", {}, shown)));
  trimList($("frames"), FRAME_LIMIT);
}

function showMessage(event) {
  const {user, text} = event.data || {};
  const item = h("li", {class: "chat-message fresh", "data-id": event.id, "data-user": user},
    h("div", {class: "chat-head"},
      h("strong", {class: "chat-user"}, user),
      h("span", {class: "muted small", title: event.id}, clockTime(event.time))),
    h("div", {class: "chat-text"}, text));
  if (state.mine.has(event.id)) item.classList.add("mine");
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  // Oldest first, like a conversation: trim from the top.
  while (list.children.length > MESSAGE_LIMIT) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  $("chat-empty").hidden = true;
}

function canSend(yes) {
  $("send-form").querySelector("button").disabled = !yes;
}

// -- the socket -------------------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** Send one frame with a fresh id; answers the id. */
function send(frame) {
  const id = ++state.frameIds;
  const text = JSON.stringify({id, ...frame});
  state.socket.send(text);
  state.pending.set(id, {type: frame.type, text: frame.data?.text});
  logFrame("→", text);
  return id;
}

function subscribe() {
  send({type: "subscribe", channels: [channel()], after: state.cursor});
}

function onFrame(frame) {
  const sent = frame.id === undefined || frame.id === null ? null : state.pending.get(frame.id);
  if (sent) state.pending.delete(frame.id);
  switch (frame.type) {
    case "welcome":
      if (state.socket.protocol !== PROTOCOL) {
        showNotice($("chat-notice"), "warning", `the node chose subprotocol "${state.socket.protocol}"`);
      }
      subscribe();
      break;
    case "subscribed":
      state.subscribed = true;
      state.failures = 0;
      status.set("open", `subscribed to ${frame.channels.join(", ")} (${frame.subscription})`);
      if ($("chat-notice").dataset.kind === "error") $("chat-notice").hidden = true;
      if (frame.recovered === false) {
        showNotice($("chat-notice"), "warning",
          `Recovery failed: the node no longer holds the messages after ${state.cursor}; ` +
          "some may be missing. Continuing with new messages.");
      }
      canSend(true);
      break;
    case "event":
      if (frame.event.channel !== channel()) break;
      state.cursor = frame.event.id;
      $("last-event-id").textContent = frame.event.id;
      showMessage(frame.event);
      break;
    case "published":
      state.mine.add(frame.event_id);
      // The echo may have come first: mark it now.
      for (const item of $("messages").querySelectorAll("li[data-id]")) {
        if (item.dataset.id === frame.event_id) item.classList.add("mine");
      }
      break;
    case "recovery-failed":
      showNotice($("chat-notice"), "warning",
        "Recovery failed: the node dropped messages this page had not read yet; " +
        "some may be missing. Continuing with new messages.");
      break;
    case "error":
      onError(frame, sent);
      break;
    default:
      break; // pong, unsubscribed: nothing to show beyond the frame log
  }
}

function onError(frame, sent) {
  const {code = "ERROR", message = ""} = frame.error || {};
  if (sent?.type === "publish") {
    showNotice($("chat-notice"), "error", `Not sent (${code}): ${message}`);
    const input = $("message-text");
    if (!input.value && sent.text) input.value = sent.text; // give the text back
  } else if (sent?.type === "subscribe") {
    // A refusal may pass (a rate limit, a fixed credential): close and retry
    // with backoff, saying why rather than just "closed".
    state.refusal = `cannot join ${channel()} (${code}: ${message})`;
    state.socket.close(1000, "subscription refused");
  } else {
    showNotice($("chat-notice"), "error", `${code}: ${message}`);
  }
}

function retryLater(mine, reason) {
  state.failures += 1;
  const seconds = backoffSeconds(state.failures);
  const retrying = `retrying in ${seconds.toFixed(1)} s (attempt ${state.failures})`;
  status.set("reconnecting", `${reason}; ${retrying}`);
  showNotice($("chat-notice"), "error", `${reason}; ${retrying}`);
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    if (mine === state.generation) connect(mine);
  }, seconds * 1000);
}

async function connect(mine) {
  status.set(state.failures ? "reconnecting" : "connecting", `connecting to ${socketUrl()}`);
  try {
    await browserTicket();
    if (state.cursor === null) state.cursor = await currentCursor(base, [channel()]);
  } catch (error) {
    if (mine === state.generation) retryLater(mine, error.message);
    return;
  }
  if (mine !== state.generation) return;
  const socket = new WebSocket(socketUrl(), [PROTOCOL]);
  state.socket = socket;
  state.pending.clear();
  socket.addEventListener("message", (message) => {
    if (mine !== state.generation) return;
    logFrame("←", String(message.data));
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      showNotice($("chat-notice"), "error", "the node sent a frame that is not JSON");
      return;
    }
    onFrame(frame);
  });
  socket.addEventListener("close", (event) => {
    if (mine !== state.generation) return;
    state.socket = null;
    state.subscribed = false;
    canSend(false);
    const why = state.refusal ||
      `the connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
    state.refusal = null;
    retryLater(mine, why);
  });
  // An "error" is always followed by "close", where the retry happens.
}

/** Leave the current room (if any) and join `room`, from now or from its history. */
function join(room, {fromHistory = false} = {}) {
  const mine = ++state.generation;
  clearTimeout(state.timer);
  if (state.socket) state.socket.close(1000, "leaving the room");
  state.socket = null;
  state.subscribed = false;
  state.refusal = null;
  state.failures = 0;
  state.room = room;
  state.cursor = fromHistory ? "earliest" : null;
  canSend(false);
  replace($("messages"));
  $("chat-empty").hidden = false;
  $("chat-notice").hidden = true;
  $("last-event-id").textContent = "—";
  $("room-title").textContent = `#${room}`;
  $("room-channel").textContent = channel();
  document.title = `#${room} · support chat · polyport demo`;
  const url = new URL(location.href);
  url.searchParams.set("room", room);
  if (fromHistory) url.searchParams.set("history", "1");
  else url.searchParams.delete("history");
  window.history.replaceState(null, "", url);
  connect(mine);
}

// -- forms -------------------------------------------------------------------------------

function setupForms() {
  const joinForm = $("join-form");
  const nameInput = joinForm.elements.user;
  const roomInput = joinForm.elements.room;
  const params = new URLSearchParams(location.search);
  nameInput.value = localStorage.getItem(NAME_KEY) || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  const room = params.get("room");
  if (room && ROOM.test(room)) roomInput.value = room;
  joinForm.elements.history.checked = params.get("history") === "1";
  nameInput.addEventListener("change", () => localStorage.setItem(NAME_KEY, nameInput.value.trim()));
  joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = roomInput.value.trim();
    if (!ROOM.test(next)) {
      showNotice($("chat-notice"), "error", "A room is 1–64 lower-case letters, digits, - or _.");
      return;
    }
    join(next, {fromHistory: joinForm.elements.history.checked});
  });

  const sendForm = $("send-form");
  const input = $("message-text");
  sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    const user = nameInput.value.trim();
    if (!text || !state.subscribed) return;
    if (!user) {
      showNotice($("chat-notice"), "error", "Pick a name first.");
      nameInput.focus();
      return;
    }
    send({type: "publish", event: EVENT, data: {room: state.room, user, text}});
    input.value = "";
  });
  $("frames-clear").addEventListener("click", () => replace($("frames")));
  return {room: roomInput.value, fromHistory: joinForm.elements.history.checked};
}

async function main() {
  status = new ConnectionStatus($("socket-status"));
  try {
    const catalog = await setupPage();
    base = `/v${catalog.service.version}`;
  } catch (error) {
    showNotice($("chat-notice"), "error", `Could not load the catalog: ${error.message}`);
    status.set("closed", error.message);
    return;
  }
  const {room, fromHistory} = setupForms();
  join(room, {fromHistory});
  document.body.dataset.ready = "true";
}

main();
