// The dashboard's queues panel: each queue's messages waiting, in flight and dead,
// read from GET /v{n}/queues every few seconds, and a button to redrive the dead
// letters (POST /v{n}/queues/{name}/redrive). Both need the scope queues:admin
// (development mode grants it); the page's credentials are sent.

import {h, replace} from "./dom.js";
import {authHeaders} from "./exchange.js";

const REFRESH_MS = 2000;

/** Start showing the queues of the service at version `version` in the panel; `status`
 * says where they come from, `note` what the last redrive did. */
export function setupQueues(version, panel, status, note) {
  const base = `/v${version}/queues`;
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch(base, {headers: authHeaders(), cache: "no-store"});
      if (response.status === 401 || response.status === 403) {
        status.textContent = "needs the scope queues:admin (set credentials below)";
        replace(panel);
      } else if (!response.ok) {
        status.textContent = `GET ${base} answered ${response.status}`;
      } else {
        render(await response.json());
      }
    } catch (error) {
      status.textContent = `unreachable: ${error.message || error}`;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  async function redrive(name, button) {
    button.disabled = true;
    try {
      const response = await fetch(`${base}/${encodeURIComponent(name)}/redrive`, {
        method: "POST", headers: authHeaders()});
      const body = await response.json();
      note.textContent = response.ok
        ? `${body.redriven} dead letter(s) of ${name} redriven`
        : `redrive answered ${response.status}: ${body.detail || ""}`;
    } finally {
      refresh();
    }
  }

  function render(listing) {
    status.textContent = `broker: ${listing.broker}`;
    replace(panel,
      h("thead", {}, h("tr", {},
        h("th", {}, "queue"), h("th", {}, "waiting"), h("th", {}, "in flight"),
        h("th", {}, "dead"), h("th", {}, ""))),
      h("tbody", {}, listing.queues.map((queue) => h("tr", {dataset: {queue: queue.name}},
        h("td", {}, h("code", {}, queue.name)),
        h("td", {class: "num"}, queue.waiting),
        h("td", {class: "num"}, queue.in_flight),
        h("td", {class: `num${queue.dead ? " dead" : ""}`}, queue.dead),
        h("td", {}, queue.dead > 0 && h("button", {
          type: "button",
          title: `POST ${base}/${queue.name}/redrive: every dead letter ready again`,
          onclick: (event) => redrive(queue.name, event.currentTarget),
        }, "redrive"))))));
  }

  refresh();
}
