// A long-polling reader of the node's event log (GET /v1/events … &wait=25).
//
// It keeps the cursor the server hands back (`next`), so a pause, a dropped
// connection or a server hiccup resumes exactly where it stopped: no event is
// lost and none is shown twice. When the server can no longer resume from the
// cursor (410, "recovery failed": the history was trimmed or the log reset),
// it says so and starts again from "now" rather than silently skipping.

import {authHeaders} from "./exchange.js";

const WAIT_SECONDS = 25;
const MAX_BACKOFF_SECONDS = 30;

/** Sleep `ms`, waking early (without error) if `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, {once: true});
  });
}

/** Seconds from a Retry-After header (seconds or an HTTP date), or null. */
function retryAfterSeconds(response) {
  const value = response.headers.get("retry-after");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

class FeedError extends Error {
  constructor(message, retryAfter = null) {
    super(message);
    this.retryAfter = retryAfter;
  }
}

/**
 * Long-polls `/v{version}/events` for `channels` and reports through callbacks:
 * onEvents(list, oldest first), onStatus({state, detail}), onNotice({kind, text}).
 * States: "connecting", "live", "waiting" (backing off), "paused".
 */
export class LongPollFeed {
  constructor({base = "/v1", channels = ["#"], onEvents, onStatus, onNotice}) {
    this.base = base;
    this.channels = channels;
    this.onEvents = onEvents;
    this.onStatus = onStatus;
    this.onNotice = onNotice;
    this.after = "now";
    this.controller = null;
    // Each start bumps the generation; a loop whose generation is stale exits.
    // That is how stop/restart end a loop that is blocked in fetch or sleep.
    this.generation = 0;
  }

  get running() {
    return this.controller !== null;
  }

  /** Start (or restart) reading after `after`: "now", "earliest" or a cursor. */
  start(after = this.after) {
    this.stop(false);
    this.after = after;
    this.controller = new AbortController();
    this.generation += 1;
    this.loop(this.generation, this.controller.signal);
  }

  /** Stop reading; the cursor is kept, so start() resumes without a gap. */
  stop(report = true) {
    if (this.controller) this.controller.abort();
    this.controller = null;
    if (report) this.onStatus({state: "paused", detail: `cursor ${this.after}`});
  }

  url(wait) {
    const query = new URLSearchParams();
    for (const channel of this.channels) query.append("channel", channel);
    query.set("after", this.after);
    query.set("wait", String(wait));
    return `${this.base}/events?${query}`;
  }

  async loop(generation, signal) {
    let failures = 0;
    // The first poll (and the first after an error) does not wait: its quick
    // answer proves the connection works, so the page can say "live" at once
    // instead of after a 25 s hold.
    let wait = 0;
    this.onStatus({state: "connecting", detail: ""});
    while (generation === this.generation && !signal.aborted) {
      try {
        await this.pollOnce(signal, wait);
        failures = 0;
        wait = WAIT_SECONDS;
      } catch (error) {
        if (signal.aborted) return;
        failures += 1;
        wait = 0;
        // Exponential backoff with jitter (so many open dashboards do not
        // retry in lockstep), unless the server said when to come back.
        const backoff = Math.min(MAX_BACKOFF_SECONDS, 2 ** (failures - 1));
        const seconds = error.retryAfter ?? backoff * (0.5 + Math.random() / 2);
        this.onStatus({state: "waiting",
          detail: `${error.message}; retrying in ${seconds.toFixed(1)} s (attempt ${failures})`});
        await sleep(seconds * 1000, signal);
      }
    }
  }

  /** One long poll: wait for events after the cursor, hand them on, advance the cursor. */
  async pollOnce(signal, wait) {
    let response;
    try {
      response = await fetch(this.url(wait), {signal, cache: "no-store",
        headers: {accept: "application/json", ...authHeaders()}});
    } catch (error) {
      if (signal.aborted) throw error;
      throw new FeedError("the node is unreachable");
    }
    if (response.status === 410 && this.after !== "now") {
      const problem = await response.json().catch(() => ({}));
      this.onNotice({kind: "recovery-failed",
        text: `Recovery failed: cannot resume after ${this.after} — ${problem.detail || "history lost"}. ` +
          "Events in between may be missing; continuing from now."});
      this.after = "now";
      return;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      const detail = problem.detail ? `: ${problem.detail}` : "";
      throw new FeedError(`${response.status} ${response.statusText}${detail}`, retryAfterSeconds(response));
    }
    const page = await response.json();
    if (signal.aborted) return;
    this.onStatus({state: "live", detail: ""});
    if (typeof page.next === "string") this.after = page.next;
    if (Array.isArray(page.events) && page.events.length) this.onEvents(page.events);
  }
}
