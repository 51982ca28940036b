// Small DOM helpers shared by the docs page and the dashboard.
//
// Everything the pages show comes from the server (descriptions, event data,
// response bodies), so text always goes in through textContent — never
// innerHTML — and nothing a server sends can inject markup or script.

/**
 * Build an element: h("a", {href: "#x", class: "link"}, "text", otherNode).
 * Attributes starting with "on" become event listeners; `false`/`null`/`undefined`
 * attributes and children are skipped so callers can write `cond && node`.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

/** Append children (nodes, strings, numbers, nested arrays); skip empty ones. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false || child === "") continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace all children of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** Text of a JSON value, indented; strings that are not JSON come back as they are. */
export function prettyJson(value) {
  return JSON.stringify(value, null, 2);
}

/** Pretty-print a body if it parses as JSON, else return it unchanged. */
export function prettyBody(text) {
  if (!text) return "";
  try {
    return prettyJson(JSON.parse(text));
  } catch {
    return text;
  }
}

/** Call `fn` only once calls have paused for `ms` — for search-as-you-type. */
export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A short, human clock time for a Date or ISO string: 14:03:07.120. */
export function clockTime(value) {
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    `.${pad(date.getMilliseconds(), 3)}`;
}

/** The colour class of an HTTP status: 2xx ok, 3xx info, 4xx warn, 5xx error. */
export function statusClass(status) {
  if (status >= 500) return "status-5xx";
  if (status >= 400) return "status-4xx";
  if (status >= 300) return "status-3xx";
  if (status >= 200) return "status-2xx";
  return "status-other";
}

/** A coloured badge for an HTTP method (GET, POST, …). */
export function methodBadge(method) {
  const upper = method.toUpperCase();
  return h("span", {class: `method method-${upper.toLowerCase()}`}, upper);
}

/**
 * The light/dark switch in the top bar. "auto" follows the system setting;
 * the choice is remembered per browser so both pages agree.
 */
export function themeToggle() {
  const order = ["auto", "light", "dark"];
  const label = {auto: "◐ auto", light: "☀ light", dark: "☾ dark"};
  let theme = localStorage.getItem("polyport.theme") || "auto";
  const button = h("button", {type: "button", class: "ghost theme-toggle",
    title: "Colour scheme: follow the system, light or dark"});
  const apply = () => {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    button.textContent = label[theme];
  };
  button.addEventListener("click", () => {
    theme = order[(order.indexOf(theme) + 1) % order.length];
    localStorage.setItem("polyport.theme", theme);
    apply();
  });
  apply();
  return button;
}

/**
 * A <details> whose body is built on first open. The docs page has dozens of
 * operations with a dozen responses each; building only what is looked at
 * keeps the first render fast.
 */
export function lazyDetails(attrs, summary, build) {
  const details = h("details", attrs, h("summary", {}, summary));
  let built = false;
  const fill = () => {
    if (built || !details.open) return;
    built = true;
    append(details, [build()]);
  };
  details.addEventListener("toggle", fill);
  if (details.open) fill();
  return details;
}
