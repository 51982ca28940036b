// Calling the node from the page and showing the raw exchange: the request
// form of an operation ("Try it" on /docs, the playground on /), the
// credentials both pages send, and the request/response view with its latency.

import {append, h, prettyBody, prettyJson, statusClass} from "./dom.js";
import {deref, exampleFor, jsonContent, typeLabel} from "./openapi.js";

// -- credentials ------------------------------------------------------------------------

// Kept in sessionStorage: it survives a reload and moving between /docs and /
// in the same tab, and is forgotten with the tab — a token never lands in
// localStorage, where it would outlive the session on a shared machine.
const CREDENTIALS_KEY = "polyport.credentials";

function loadCredentials() {
  try {
    return {bearer: "", apiKey: "", ...JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY) || "{}")};
  } catch {
    return {bearer: "", apiKey: ""};
  }
}

const credentials = loadCredentials();

/** The auth headers to send with every call from the page (none when empty). */
export function authHeaders() {
  const headers = {};
  if (credentials.bearer.trim()) headers.authorization = `Bearer ${credentials.bearer.trim()}`;
  if (credentials.apiKey.trim()) headers["x-api-key"] = credentials.apiKey.trim();
  return headers;
}

/** The "Credentials" panel: a bearer token and an API key, shared by all forms. */
export function credentialsPanel() {
  const field = (key, label, placeholder) => {
    const input = h("input", {type: "password", name: key, autocomplete: "off", spellcheck: "false",
      placeholder, value: credentials[key]});
    input.addEventListener("input", () => {
      credentials[key] = input.value;
      sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify(credentials));
      summary.textContent = summaryText();
    });
    return h("label", {class: "field"}, h("span", {}, label), input);
  };
  const summaryText = () => {
    const set = [credentials.bearer && "bearer token", credentials.apiKey && "API key"].filter(Boolean);
    return set.length ? `Credentials: ${set.join(" + ")}` : "Credentials: none (anonymous)";
  };
  const summary = h("summary", {}, summaryText());
  // A <form> (never submitted) so the browser treats the password inputs normally.
  return h("details", {class: "credentials card"}, summary,
    h("form", {class: "credential-fields", autocomplete: "off",
      onsubmit: (event) => event.preventDefault()},
      field("bearer", "Authorization: Bearer", "JWT or API key"),
      field("apiKey", "X-API-Key", "API key"),
      h("p", {class: "muted small"},
        "Sent with every call from this page. Kept for this tab only (sessionStorage).")));
}

// -- sending ------------------------------------------------------------------------------

/**
 * Send one request to the page's own origin and record the whole exchange.
 * `query` is a list of [name, value] pairs so repeated parameters survive.
 * The cache is bypassed: a playground should show what the server says now,
 * not a 200 the browser replayed from its cache.
 */
export async function sendRequest({method, path, query = [], headers = {}, body = null}) {
  const search = query.length ? `?${new URLSearchParams(query)}` : "";
  const target = path + search;
  const requestHeaders = {accept: "application/json", ...authHeaders(), ...headers};
  if (body !== null && body !== "") requestHeaders["content-type"] = "application/json";
  else body = null;
  const request = {method: method.toUpperCase(), target, headers: requestHeaders, body};
  const started = performance.now();
  try {
    const response = await fetch(target, {method: request.method, headers: requestHeaders, body,
      cache: "no-store"});
    const headersMs = performance.now() - started;
    const text = await response.text();
    const totalMs = performance.now() - started;
    return {
      request,
      response: {status: response.status, statusText: response.statusText,
        headers: [...response.headers.entries()], text},
      headersMs,
      totalMs,
    };
  } catch (error) {
    return {request, error: String(error && error.message ? error.message : error),
      totalMs: performance.now() - started};
  }
}

// Tokens are shown masked: the exchange view ends up in screenshots and bug reports.
function maskedHeader(name, value) {
  if (name === "authorization" || name === "x-api-key") {
    const secret = value.replace(/^Bearer\s+/i, "");
    const prefix = value.slice(0, value.length - secret.length);
    return prefix + (secret.length > 8 ? `${"•".repeat(8)}${secret.slice(-4)}` : "•".repeat(secret.length));
  }
  return value;
}

/** The exchange as a copy-pasteable curl command (with the real token, on request). */
export function asCurl(exchange) {
  const quote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
  const parts = ["curl", "-i", "-X", exchange.request.method, quote(location.origin + exchange.request.target)];
  for (const [name, value] of Object.entries(exchange.request.headers)) {
    parts.push("-H", quote(`${name}: ${value}`));
  }
  if (exchange.request.body !== null) parts.push("--data-raw", quote(exchange.request.body));
  return parts.join(" ");
}

/** The raw exchange: request line, headers and body; status, headers and body; latency. */
export function exchangeView(exchange) {
  const {request} = exchange;
  const requestText = [
    `${request.method} ${request.target} HTTP/1.1`,
    `host: ${location.host}`,
    ...Object.entries(request.headers).map(([n, v]) => `${n}: ${maskedHeader(n, v)}`),
  ].join("\n") + (request.body !== null ? `\n\n${prettyBody(request.body)}` : "");
  const view = h("div", {class: "exchange"},
    h("div", {class: "exchange-head"}, h("strong", {}, "Request"),
      h("span", {class: "muted small"}, "(the browser adds its own headers, such as user-agent)")),
    h("pre", {class: "exchange-request"}, requestText));
  if (exchange.error) {
    append(view, [h("div", {class: "exchange-head"}, h("strong", {}, "Response"),
      h("span", {class: "exchange-status status-5xx", "data-status": "0"}, "network error"),
      h("span", {class: "latency"}, `${exchange.totalMs.toFixed(1)} ms`)),
    h("pre", {class: "exchange-body"}, exchange.error)]);
    return view;
  }
  const {response} = exchange;
  const headerText = [`HTTP/1.1 ${response.status} ${response.statusText}`.trim(),
    ...response.headers.map(([n, v]) => `${n}: ${v}`)].join("\n");
  append(view, [
    h("div", {class: "exchange-head"}, h("strong", {}, "Response"),
      h("span", {class: `exchange-status ${statusClass(response.status)}`, "data-status": response.status},
        `${response.status} ${response.statusText}`.trim()),
      h("span", {class: "latency", title: "time to response headers / to the whole body"},
        `${exchange.totalMs.toFixed(1)} ms`,
        h("span", {class: "muted"}, ` (headers after ${exchange.headersMs.toFixed(1)} ms)`))),
    h("pre", {class: "exchange-headers"}, headerText),
    h("pre", {class: "exchange-body"}, response.text ? prettyBody(response.text) : "(empty body)"),
    h("details", {class: "curl"}, h("summary", {}, "as curl"), h("pre", {}, asCurl(exchange))),
  ]);
  return view;
}

// -- the request form of one operation ----------------------------------------------------

function paramInput(spec, param) {
  const schema = deref(spec, param.schema || {});
  const values = Array.isArray(schema.enum) ? schema.enum
    : schema.type === "boolean" ? [true, false] : null;
  const attrs = {name: param.name, "data-in": param.in, required: !!param.required,
    "aria-label": `${param.name} (${param.in})`};
  if (values) {
    return h("select", attrs, h("option", {value: ""}, param.required ? "— choose —" : "— not set —"),
      values.map((v) => h("option", {value: String(v)}, String(v))));
  }
  // The placeholder says what to type: the default when there is one, else the type.
  const itemSchema = schema.type === "array" ? deref(spec, schema.items || {}) : schema;
  const hint = schema.default !== undefined ? `default ${JSON.stringify(schema.default)}`
    : typeLabel(spec, itemSchema);
  const multiple = schema.type === "array" ? ", comma-separated" : "";
  // A required path parameter gets a working example (an id of 1) so the
  // first Send already reaches the operation instead of failing on a blank.
  const value = param.in === "path" && param.required ? exampleFor(spec, schema, param.name) : null;
  return h("input", {...attrs, type: "text", autocomplete: "off", spellcheck: "false",
    placeholder: hint + multiple, title: param.description || false,
    value: value === null || value === undefined ? false : String(value)});
}

/**
 * Read the form into a request, or return {problem} naming what is missing.
 * Array parameters are comma-separated in the form and sent repeated
 * (`style: form, explode: true`, the OpenAPI default for query arrays).
 */
function readForm(spec, operation, form, bodyArea) {
  let path = operation.path;
  const query = [];
  const headers = {};
  for (const param of operation.parameters) {
    const input = form.querySelector(`[name="${CSS.escape(param.name)}"][data-in="${param.in}"]`);
    const value = input ? input.value.trim() : "";
    if (!value) {
      if (param.required) return {problem: `${param.name} (${param.in}) is required`};
      continue;
    }
    const schema = deref(spec, param.schema || {});
    const parts = schema.type === "array" ? value.split(",").map((s) => s.trim()).filter(Boolean) : [value];
    if (param.in === "path") path = path.replace(`{${param.name}}`, encodeURIComponent(value));
    else if (param.in === "query") parts.forEach((part) => query.push([param.name, part]));
    else if (param.in === "header") headers[param.name.toLowerCase()] = value;
  }
  const body = bodyArea ? bodyArea.value : null;
  return {method: operation.method, path, query, headers, body};
}

/** The JSON example body of an operation, or null when it takes no JSON body. */
export function exampleBody(spec, operation) {
  const requestBody = deref(spec, operation.op.requestBody);
  const content = jsonContent(requestBody.content);
  if (!content) return null;
  const example = content.media.example !== undefined ? content.media.example
    : exampleFor(spec, content.schema);
  return prettyJson(example);
}

/**
 * The form that calls one operation: its parameters, a JSON body prefilled
 * with an example built from the schema, Send, and the exchange below it.
 */
export function requestForm(spec, operation) {
  const params = operation.parameters.filter((p) => ["path", "query", "header"].includes(p.in));
  const example = exampleBody(spec, operation);
  const bodyArea = example !== null
    ? h("textarea", {name: "body", class: "body-editor", rows: Math.min(16, example.split("\n").length + 1),
      spellcheck: "false", "aria-label": "JSON request body"}, example)
    : null;
  const output = h("div", {class: "exchange-slot", "aria-live": "polite"});
  const sendButton = h("button", {type: "submit", class: "primary"}, "Send");
  const form = h("form", {class: "request-form", novalidate: true},
    params.length > 0 && h("div", {class: "param-grid"}, params.map((param) =>
      h("label", {class: "field"},
        h("span", {}, h("code", {}, param.name), h("span", {class: "muted"}, ` ${param.in}`),
          param.required && h("span", {class: "required"}, "required")),
        paramInput(spec, param)))),
    bodyArea && h("label", {class: "field body-field"},
      h("span", {}, "Body ", h("span", {class: "muted"}, "application/json")), bodyArea),
    h("div", {class: "form-actions"}, sendButton,
      bodyArea && h("button", {type: "button", class: "ghost",
        onclick: () => { bodyArea.value = exampleBody(spec, operation); }}, "Reset example"),
      h("code", {class: "muted small"}, `${operation.method.toUpperCase()} ${operation.path}`)),
    output);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = readForm(spec, operation, form, bodyArea);
    if (request.problem) {
      output.replaceChildren(h("p", {class: "form-problem"}, request.problem));
      return;
    }
    sendButton.disabled = true;
    sendButton.textContent = "Sending…";
    try {
      output.replaceChildren(exchangeView(await sendRequest(request)));
    } finally {
      sendButton.disabled = false;
      sendButton.textContent = "Send";
    }
  });
  return form;
}
