// Rendering JSON Schemas (OpenAPI 3.1 flavour) as readable, nested field tables.
//
// $refs to components are shown by name, linked to the component's own section
// (#schema-Name), and expanded in place so a reader never has to jump around.
// A ref already being expanded higher up the tree is not expanded again: that
// is what keeps recursive schemas (a Category with sub-categories) finite.

import {h} from "./dom.js";
import {constraints, enumValues, refName, resolvePointer, schemaTypes} from "./openapi.js";

/** The anchor id of a component schema section. */
export function schemaAnchor(name) {
  return `schema-${name}`;
}

/** A link to a component schema's section. */
function refLink(ref) {
  const name = refName(ref);
  return h("a", {href: `#${schemaAnchor(name)}`, class: "ref"}, name);
}

/**
 * The type of a schema as inline nodes: text, with every $ref a link.
 * "array of [User]", "[OrderStatus] | null", "map of string → integer".
 */
export function typeNodes(spec, schema, depth = 0) {
  if (!schema || typeof schema !== "object") return ["any"];
  if (depth > 4) return ["…"];
  if (schema.$ref) return [refLink(schema.$ref)];
  const variants = schema.oneOf || schema.anyOf || schema.allOf;
  if (variants) {
    const joiner = schema.allOf ? " & " : " | ";
    const seen = new Set();
    const parts = [];
    for (const variant of variants) {
      const key = variant.$ref || JSON.stringify(variant);
      if (seen.has(key)) continue; // EventEnvelope.data lists User twice
      seen.add(key);
      if (parts.length) parts.push(joiner);
      parts.push(...typeNodes(spec, variant, depth + 1));
    }
    return parts;
  }
  if ("const" in schema) return [`const ${JSON.stringify(schema.const)}`];
  const types = schemaTypes(schema);
  if (!types.length) return [schema.enum ? "enum" : "any"];
  const parts = [];
  for (const type of types) {
    if (parts.length) parts.push(" | ");
    if (type === "array") {
      parts.push("array of ", ...typeNodes(spec, schema.items, depth + 1));
    } else if (type === "object" && !schema.properties && isSchema(schema.additionalProperties)) {
      parts.push("map of string → ", ...typeNodes(spec, schema.additionalProperties, depth + 1));
    } else {
      parts.push(schema.format && type !== "null" ? `${type} (${schema.format})` : type);
    }
  }
  return parts;
}

function isSchema(value) {
  return value !== null && typeof value === "object";
}

/**
 * The part of a schema worth expanding into a nested table, or null for a
 * plain value: an object with fields, a ref to one, the items of an array,
 * the values of a map, or a set of alternatives with something to show.
 */
function expandable(spec, schema) {
  if (!isSchema(schema)) return null;
  if (schema.$ref) {
    const target = resolvePointer(spec, schema.$ref);
    return target && expandable(spec, target) ? schema : null;
  }
  if (schema.properties && Object.keys(schema.properties).length) return schema;
  const variants = schema.oneOf || schema.anyOf || schema.allOf;
  if (variants && variants.some((v) => expandable(spec, v))) return schema;
  if (schema.items) return expandable(spec, schema.items);
  if (isSchema(schema.additionalProperties)) return expandable(spec, schema.additionalProperties);
  return null;
}

/** Enum values as chips. */
export function enumChips(values) {
  return h("span", {class: "enum"}, values.map((v) => h("code", {class: "chip"}, JSON.stringify(v))));
}

/** Description, constraints and enum values of one field or parameter. */
export function fieldDetails(spec, schema, description) {
  const text = description || (schema && schema.description) || "";
  const rules = constraints(schema);
  const values = enumValues(spec, schema);
  return [
    text && h("div", {class: "description"}, text),
    rules.length > 0 && h("div", {class: "constraints"}, rules.map((r) => h("span", {class: "chip"}, r))),
    values && enumChips(values),
  ];
}

/**
 * A schema as nodes: a field table for objects, alternatives for
 * oneOf/anyOf/allOf, or a one-line description for plain values.
 * `seen` holds the refs being expanded on the way down from the root.
 */
export function schemaView(spec, schema, seen = new Set(), depth = 0) {
  if (!isSchema(schema)) return h("p", {class: "muted"}, "Any JSON value.");
  if (schema.$ref) {
    if (seen.has(schema.$ref)) {
      return h("p", {class: "muted recursive"}, "↻ ", refLink(schema.$ref), " (recursive, shown above)");
    }
    const target = resolvePointer(spec, schema.$ref);
    if (!target) return h("p", {class: "muted"}, "Unresolved reference ", h("code", {}, schema.$ref));
    return schemaView(spec, target, new Set(seen).add(schema.$ref), depth);
  }
  const variants = schema.oneOf || schema.anyOf || schema.allOf;
  if (variants) return variantsView(spec, schema, variants, seen, depth);
  if (schema.properties && Object.keys(schema.properties).length) {
    return objectTable(spec, schema, seen, depth);
  }
  const inner = expandable(spec, schema);
  return h("div", {class: "schema-plain"},
    h("div", {}, h("span", {class: "type"}, typeNodes(spec, schema))),
    fieldDetails(spec, schema),
    inner && inner !== schema && h("div", {class: "nested"}, schemaView(spec, inner, seen, depth + 1)),
  );
}

function variantsView(spec, schema, variants, seen, depth) {
  const label = schema.allOf ? "All of" : schema.oneOf ? "Exactly one of" : "Any of";
  const unique = [];
  const keys = new Set();
  for (const variant of variants) {
    const key = variant.$ref || JSON.stringify(variant);
    if (!keys.has(key)) {
      keys.add(key);
      unique.push(variant);
    }
  }
  return h("div", {class: "variants"},
    h("div", {class: "muted"}, `${label}:`),
    unique.map((variant) => {
      const nested = expandable(spec, variant);
      if (!nested) return h("div", {class: "variant"}, h("span", {class: "type"}, typeNodes(spec, variant)));
      return h("details", {class: "variant", open: depth < 1 && unique.length <= 3},
        h("summary", {}, h("span", {class: "type"}, typeNodes(spec, variant))),
        schemaView(spec, variant, seen, depth + 1));
    }),
  );
}

function objectTable(spec, schema, seen, depth) {
  const required = new Set(schema.required || []);
  const rows = [];
  for (const [name, prop] of Object.entries(schema.properties)) {
    rows.push(h("tr", {},
      h("td", {class: "fname"}, h("code", {}, name),
        required.has(name) && h("span", {class: "required", title: "required"}, "required")),
      h("td", {class: "type"}, typeNodes(spec, prop)),
      h("td", {}, fieldDetails(spec, prop)),
    ));
    const nested = expandable(spec, prop);
    if (nested) {
      const recursive = nested.$ref && seen.has(nested.$ref);
      rows.push(h("tr", {class: "nested-row"}, h("td", {colspan: 3},
        recursive
          ? schemaView(spec, nested, seen, depth + 1)
          : h("details", {open: depth < 1},
            h("summary", {}, "fields of ", h("code", {}, name)),
            schemaView(spec, nested, seen, depth + 1)),
      )));
    }
  }
  const extra = schema.additionalProperties;
  return h("div", {class: "schema-object"},
    depth === 0 && schema.description && h("p", {class: "description"}, schema.description),
    h("table", {class: "fields"},
      h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Type"), h("th", {}, "Details"))),
      h("tbody", {}, rows)),
    extra === false && h("p", {class: "muted small"}, "No other fields are accepted."),
    isSchema(extra) && h("p", {class: "muted small"}, "Other fields: ", typeNodes(spec, extra)),
  );
}
