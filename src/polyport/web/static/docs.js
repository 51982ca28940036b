// /docs — renders the node's own /openapi.json: operations grouped by tag,
// parameters, bodies and responses with their schemas, security, a "Try it"
// form per operation, the component schemas, a filter box and deep links
// (#operationId, #schema-Name).

import {debounce, h, lazyDetails, methodBadge, replace, themeToggle} from "./dom.js";
import {credentialsPanel, requestForm} from "./exchange.js";
import {deref, groupByTag, jsonContent, listOperations, loadSpec, securityOf} from "./openapi.js";
import {fieldDetails, schemaAnchor, schemaView, typeNodes} from "./schema-view.js";

const content = document.getElementById("content");
const toc = document.getElementById("toc");
const search = document.getElementById("search");
const counter = document.getElementById("search-count");

// -- the header: title, version, description, servers, security schemes -------------------

function infoSection(spec) {
  const info = spec.info || {};
  const schemes = Object.entries((spec.components || {}).securitySchemes || {});
  return h("section", {class: "info"},
    h("h1", {}, info.title || "API", " ",
      h("span", {class: "chip version", title: "API version"}, `v${info.version || "?"}`),
      h("span", {class: "chip muted", title: "OpenAPI version"}, `OpenAPI ${spec.openapi || "?"}`)),
    info.description && h("p", {class: "lead"}, info.description),
    h("p", {class: "links"},
      h("a", {href: "/openapi.json", download: "openapi.json"}, "openapi.json"), " · ",
      h("a", {href: "/"}, "dashboard"),
      info["x-polyport-version"] && h("span", {class: "muted"}, ` · polyport ${info["x-polyport-version"]}`)),
    spec.servers && spec.servers.length > 0 && h("p", {}, "Servers: ",
      spec.servers.map((s) => h("code", {class: "chip"}, s.url))),
    schemes.length > 0 && h("div", {class: "schemes"},
      h("h3", {}, "Authentication"),
      h("table", {class: "fields"},
        h("tbody", {}, schemes.map(([name, scheme]) => h("tr", {},
          h("td", {class: "fname"}, h("code", {}, name)),
          h("td", {}, schemeLabel(scheme)),
          h("td", {}, scheme.description || "")))))),
    credentialsPanel());
}

function schemeLabel(scheme) {
  if (scheme.type === "http") {
    return `HTTP ${scheme.scheme}${scheme.bearerFormat ? ` (${scheme.bearerFormat})` : ""}`;
  }
  if (scheme.type === "apiKey") return ["API key in ", scheme.in, " ", h("code", {}, scheme.name)];
  return scheme.type;
}

// -- one operation ----------------------------------------------------------------------

function securityView(spec, op) {
  const security = securityOf(spec, op);
  if (!security.declared) return h("p", {class: "muted"}, "No authentication required.");
  const alternatives = security.alternatives.map((requirement) =>
    Object.entries(requirement).map(([name, scopes]) =>
      [h("code", {}, name), scopes.length ? ` with scope ${scopes.join(", ")}` : ""]));
  const joined = alternatives.flatMap((alt, i) => (i ? [" or ", alt] : [alt]));
  return h("p", {class: security.optional ? "auth-optional" : "auth-required"},
    security.optional
      ? ["Authentication is ", h("strong", {}, "optional"), ": anonymous calls are allowed",
        joined.length ? [", or send "] : "", joined, "."]
      : ["Authentication ", h("strong", {}, "required"), ": ", joined, "."]);
}

function parametersTable(spec, parameters) {
  return h("table", {class: "fields"},
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "In"), h("th", {}, "Type"),
      h("th", {}, "Details"))),
    h("tbody", {}, parameters.map((param) => {
      const schema = param.schema || jsonContent(param.content)?.schema || {};
      return h("tr", {},
        h("td", {class: "fname"}, h("code", {}, param.name),
          param.required && h("span", {class: "required"}, "required"),
          param.deprecated && h("span", {class: "chip"}, "deprecated")),
        h("td", {}, param.in),
        h("td", {class: "type"}, typeNodes(spec, schema)),
        h("td", {}, fieldDetails(spec, deref(spec, schema), param.description)));
    })));
}

function bodyView(spec, requestBody) {
  const body = deref(spec, requestBody);
  const media = Object.entries(body.content || {});
  return h("div", {class: "body"},
    h("p", {}, body.required ? h("span", {class: "required"}, "required") : h("span", {class: "muted"}, "optional"),
      " ", media.map(([type]) => h("code", {class: "chip"}, type)),
      body.description && h("span", {}, ` ${body.description}`)),
    media.map(([, value]) => value.schema && schemaView(spec, value.schema)));
}

function responsesView(spec, responses) {
  const rows = [];
  for (const [status, raw] of Object.entries(responses || {})) {
    const response = deref(spec, raw);
    const content = jsonContent(response.content);
    const headers = Object.keys(response.headers || {});
    const success = /^2/.test(status);
    rows.push(h("tr", {class: success ? "success" : ""},
      h("td", {}, h("span", {class: `status status-${status[0]}xx`}, status)),
      h("td", {}, response.description || ""),
      h("td", {class: "type"}, content && content.schema
        ? [h("code", {class: "chip"}, content.type), " ", typeNodes(spec, content.schema)]
        : h("span", {class: "muted"}, "no body")),
      h("td", {}, headers.map((name) => h("code", {class: "chip"}, name)))));
    // Success bodies are what a reader came for: show them expanded. Error
    // bodies are almost always the shared Problem document, which the type
    // link already leads to; only an inline error schema gets its own row.
    if (content && content.schema && (success || !content.schema.$ref)) {
      rows.push(h("tr", {class: "nested-row"}, h("td", {colspan: 4},
        lazyDetails({open: success}, ["schema of ", status], () => schemaView(spec, content.schema)))));
    }
  }
  return h("table", {class: "fields responses"},
    h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Description"), h("th", {}, "Body"),
      h("th", {}, "Headers"))),
    h("tbody", {}, rows));
}

function operationBody(spec, operation) {
  const {op} = operation;
  return h("div", {class: "op-body"},
    op.description && h("p", {class: "description"}, op.description),
    h("p", {class: "meta muted small"},
      "operationId ", h("code", {}, operation.id), " · ",
      h("a", {href: `#${operation.id}`, class: "permalink"}, "link to this operation"),
      op.deprecated && h("span", {class: "chip"}, "deprecated")),
    h("h4", {}, "Security"), securityView(spec, op),
    operation.parameters.length > 0 && [h("h4", {}, "Parameters"), parametersTable(spec, operation.parameters)],
    op.requestBody && [h("h4", {}, "Request body"), bodyView(spec, op.requestBody)],
    h("h4", {}, "Responses"), responsesView(spec, op.responses),
    lazyDetails({class: "try-it"}, h("span", {class: "try-it-label"}, "Try it"),
      () => requestForm(spec, operation)));
}

function operationView(spec, operation) {
  const {op} = operation;
  const security = securityOf(spec, op);
  const searchText = [operation.method, operation.path, operation.id, op.summary, op.description,
    ...operation.tags].filter(Boolean).join(" ").toLowerCase();
  return lazyDetails(
    {class: `op op-${operation.method}`, id: operation.id, "data-search": searchText},
    [methodBadge(operation.method), h("code", {class: "path"}, operation.path),
      h("span", {class: "op-summary"}, op.summary || ""),
      op.deprecated && h("span", {class: "chip"}, "deprecated"),
      security.declared && h("span", {class: `chip auth ${security.optional ? "optional" : "required"}`,
        title: security.optional ? "anonymous calls allowed" : "credentials required"},
      security.optional ? "auth optional" : "auth required")],
    () => operationBody(spec, operation));
}

function tagSection(spec, group) {
  return h("section", {class: "tag", id: `tag-${group.name}`, "data-tag": group.name},
    h("h2", {}, group.name, group.description && h("span", {class: "tag-description"}, group.description)),
    group.operations.map((operation) => operationView(spec, operation)));
}

// -- components/schemas -----------------------------------------------------------------

function schemasSection(spec) {
  const schemas = Object.entries((spec.components || {}).schemas || {});
  if (!schemas.length) return null;
  return h("section", {class: "tag schemas", id: "schemas"},
    h("h2", {}, "Schemas", h("span", {class: "tag-description"}, "The types the operations use")),
    schemas.map(([name, schema]) => {
      const ref = `#/components/schemas/${name}`;
      const fields = Object.keys(schema.properties || {}).join(" ");
      return lazyDetails(
        {class: "op schema", id: schemaAnchor(name),
          "data-search": `${name} ${schema.description || ""} ${fields}`.toLowerCase()},
        [h("code", {class: "path"}, name), h("span", {class: "op-summary"}, schema.description || ""),
          h("span", {class: "chip muted"}, typeNodes(spec, {...schema, title: undefined}))],
        // Seed the recursion guard with the schema itself so a self-reference stops at once.
        // The description is already in the summary line; do not repeat it.
        () => h("div", {class: "op-body"},
          schemaView(spec, {...schema, description: undefined}, new Set([ref]))));
    }));
}

// -- the sidebar, search and deep links --------------------------------------------------

function tocView(groups, spec) {
  const schemas = Object.keys((spec.components || {}).schemas || {});
  return [
    groups.map((group) => h("div", {class: "toc-group", "data-tag": group.name},
      h("a", {href: `#tag-${group.name}`, class: "toc-tag"}, group.name),
      h("ul", {}, group.operations.map((operation) => h("li", {"data-target": operation.id},
        h("a", {href: `#${operation.id}`}, h("span", {class: `dot method-${operation.method}`}),
          operation.op.summary ? operation.id : operation.path)))))),
    schemas.length > 0 && h("div", {class: "toc-group", "data-tag": "schemas"},
      h("a", {href: "#schemas", class: "toc-tag"}, "schemas"),
      h("ul", {}, schemas.map((name) => h("li", {"data-target": schemaAnchor(name)},
        h("a", {href: `#${schemaAnchor(name)}`}, name))))),
  ];
}

/**
 * Show only operations and schemas whose text contains every word typed.
 * A tag heading stays visible while any of its operations does.
 */
function applyFilter(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  let total = 0;
  for (const node of content.querySelectorAll("[data-search]")) {
    const match = words.every((word) => node.dataset.search.includes(word));
    node.hidden = !match;
    total += 1;
    if (match) shown += 1;
    const entry = toc.querySelector(`[data-target="${CSS.escape(node.id)}"]`);
    if (entry) entry.hidden = !match;
  }
  for (const section of content.querySelectorAll("section.tag")) {
    section.hidden = !section.querySelector("[data-search]:not([hidden])");
    const group = toc.querySelector(`.toc-group[data-tag="${CSS.escape(section.dataset.tag || "schemas")}"]`);
    if (group) group.hidden = section.hidden;
  }
  counter.textContent = words.length ? `${shown} of ${total} shown` : "";
}

/** Open and scroll to the operation or schema named in the URL's #fragment. */
function openTarget() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (!id) return;
  const target = document.getElementById(id);
  if (!target) return;
  if (target.hidden && search.value) {
    // The target was filtered out: clear the filter rather than jump nowhere.
    search.value = "";
    applyFilter("");
  }
  if (target.tagName === "DETAILS") target.open = true;
  target.scrollIntoView({block: "start"});
}

function showError(error) {
  replace(content, h("div", {class: "card error"},
    h("h2", {}, "Could not load the API description"),
    h("p", {}, String(error.message || error)),
    h("p", {}, "The raw document is at ", h("a", {href: "/openapi.json"}, "/openapi.json"), ".")));
}

async function main() {
  document.getElementById("theme-slot").replaceWith(themeToggle());
  let spec;
  try {
    spec = await loadSpec();
  } catch (error) {
    showError(error);
    return;
  }
  const title = (spec.info && spec.info.title) || "API";
  document.title = `${title} · API docs`;
  const groups = groupByTag(spec, listOperations(spec));
  replace(content, infoSection(spec), groups.map((group) => tagSection(spec, group)), schemasSection(spec));
  replace(toc, tocView(groups, spec));
  search.addEventListener("input", debounce(() => applyFilter(search.value), 80));
  search.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      search.value = "";
      applyFilter("");
    }
  });
  // "/" focuses the filter, as on most documentation sites.
  document.addEventListener("keydown", (event) => {
    if (event.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
      event.preventDefault();
      search.focus();
    }
  });
  document.getElementById("expand-all").addEventListener("click", () => toggleAll(true));
  document.getElementById("collapse-all").addEventListener("click", () => toggleAll(false));
  window.addEventListener("hashchange", openTarget);
  openTarget();
  document.body.dataset.ready = "true";
}

function toggleAll(open) {
  for (const details of content.querySelectorAll("details.op:not([hidden])")) details.open = open;
}

main();
