// Reading an OpenAPI 3.1 document: operations, $ref resolution, type labels,
// constraints and example values. No DOM here, so both pages can share it.

export const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** Fetch and parse the node's OpenAPI document. */
export async function loadSpec(url = "/openapi.json") {
  const response = await fetch(url, {cache: "no-cache", headers: {accept: "application/json"}});
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

/** The component name a local $ref points to: "#/components/schemas/User" → "User". */
export function refName(ref) {
  return ref.slice(ref.lastIndexOf("/") + 1);
}

/**
 * Follow a local JSON pointer ("#/components/schemas/User") inside the
 * document. Remote refs cannot be followed offline, so they resolve to null and
 * the caller shows the ref as it is.
 */
export function resolvePointer(spec, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#/")) return null;
  let node = spec;
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || !(key in node)) return null;
    node = node[key];
  }
  return node;
}

/**
 * Resolve a parameter, request body or response that may itself be a $ref
 * (components/parameters etc.). Chains of refs are followed, cycles stop.
 */
export function deref(spec, value) {
  const seen = new Set();
  while (value && typeof value === "object" && typeof value.$ref === "string") {
    if (seen.has(value.$ref)) return {};
    seen.add(value.$ref);
    value = resolvePointer(spec, value.$ref) || {};
  }
  return value || {};
}

/**
 * Every operation of the document, in document order, with the path-level
 * parameters merged in (an operation's own parameter wins on name + in).
 */
export function listOperations(spec) {
  const operations = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    const pathItem = deref(spec, item);
    const shared = (pathItem.parameters || []).map((p) => deref(spec, p));
    for (const method of HTTP_METHODS) {
      const op = pathItem[method];
      if (!op) continue;
      const own = (op.parameters || []).map((p) => deref(spec, p));
      const key = (p) => `${p.in}:${p.name}`;
      const ownKeys = new Set(own.map(key));
      const parameters = [...shared.filter((p) => !ownKeys.has(key(p))), ...own];
      operations.push({
        id: op.operationId || `${method}_${path}`.replace(/[^A-Za-z0-9_]+/g, "_"),
        method,
        path,
        op,
        parameters,
        tags: op.tags && op.tags.length ? op.tags : ["default"],
      });
    }
  }
  return operations;
}

/**
 * Tags in the order the document declares them, then any tag only used by
 * operations, each with its description and its operations.
 */
export function groupByTag(spec, operations) {
  const groups = new Map();
  for (const tag of spec.tags || []) {
    groups.set(tag.name, {name: tag.name, description: tag.description || "", operations: []});
  }
  for (const operation of operations) {
    for (const tag of operation.tags) {
      if (!groups.has(tag)) groups.set(tag, {name: tag, description: "", operations: []});
      groups.get(tag).operations.push(operation);
    }
  }
  return [...groups.values()].filter((group) => group.operations.length);
}

/** The JSON body schema of a request body or response, and its media type. */
export function jsonContent(content) {
  if (!content) return null;
  const types = Object.keys(content);
  const type = types.find((t) => /[/+]json\b/.test(t)) || types[0];
  return type ? {type, schema: content[type].schema, media: content[type]} : null;
}

/** The types a schema allows, as a list ("type": "x" or ["x", "null"]). */
export function schemaTypes(schema) {
  if (!schema) return [];
  if (Array.isArray(schema.type)) return schema.type;
  if (schema.type) return [schema.type];
  if (schema.properties) return ["object"];
  if (schema.items) return ["array"];
  return [];
}

// 2^63 does not fit a double exactly: JSON.parse turns int64 max into 2^63.
// Show the bound the server meant rather than the rounded number.
const INT64_MAX = 2 ** 63;

/** A number as the document meant it, without float rounding noise for int64 bounds. */
export function formatNumber(value) {
  if (value === INT64_MAX) return "9223372036854775807";
  if (value === -INT64_MAX) return "-9223372036854775808";
  return String(value);
}

/**
 * A one-line type label: "integer (int64)", "array of User", "string | null",
 * "map of string → integer". Named components keep their name.
 */
export function typeLabel(spec, schema, depth = 0) {
  if (!schema || typeof schema !== "object") return "any";
  if (depth > 4) return "…";
  if (schema.$ref) return refName(schema.$ref);
  const variants = schema.oneOf || schema.anyOf;
  if (variants) {
    const labels = [...new Set(variants.map((s) => typeLabel(spec, s, depth + 1)))];
    return labels.join(" | ");
  }
  if (schema.allOf) return schema.allOf.map((s) => typeLabel(spec, s, depth + 1)).join(" & ");
  if ("const" in schema) return `const ${JSON.stringify(schema.const)}`;
  const types = schemaTypes(schema);
  if (!types.length) return schema.enum ? "enum" : "any";
  return types.map((type) => {
    if (type === "array") return `array of ${typeLabel(spec, schema.items, depth + 1)}`;
    if (type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object" &&
        !schema.properties) {
      return `map of string → ${typeLabel(spec, schema.additionalProperties, depth + 1)}`;
    }
    return schema.format && type !== "null" ? `${type} (${schema.format})` : type;
  }).join(" | ");
}

/**
 * The validation keywords of a schema as short human phrases:
 * ["≥ 1", "≤ 1000", "length 1–200", "default 100", …]. Enums are returned
 * separately (see `enumValues`) because the pages show them as chips.
 */
export function constraints(schema) {
  if (!schema || typeof schema !== "object") return [];
  const out = [];
  const range = (low, high, unit) => {
    if (low !== undefined && high !== undefined) out.push(`${unit} ${low}–${high}`);
    else if (low !== undefined) out.push(`${unit} ≥ ${low}`);
    else if (high !== undefined) out.push(`${unit} ≤ ${high}`);
  };
  if (schema.minimum !== undefined) out.push(`≥ ${formatNumber(schema.minimum)}`);
  if (schema.exclusiveMinimum !== undefined) out.push(`> ${formatNumber(schema.exclusiveMinimum)}`);
  if (schema.maximum !== undefined) out.push(`≤ ${formatNumber(schema.maximum)}`);
  if (schema.exclusiveMaximum !== undefined) out.push(`< ${formatNumber(schema.exclusiveMaximum)}`);
  if (schema.multipleOf !== undefined) out.push(`multiple of ${schema.multipleOf}`);
  range(schema.minLength, schema.maxLength, "length");
  range(schema.minItems, schema.maxItems, "items");
  range(schema.minProperties, schema.maxProperties, "properties");
  if (schema.uniqueItems) out.push("unique items");
  if (schema.pattern) out.push(`pattern ${schema.pattern}`);
  if (schema.default !== undefined) out.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.deprecated) out.push("deprecated");
  if (schema.readOnly) out.push("read-only");
  if (schema.writeOnly) out.push("write-only");
  return out;
}

/** The enum values of a schema, following one $ref (OrderStatus is a component). */
export function enumValues(spec, schema) {
  const target = schema && schema.$ref ? resolvePointer(spec, schema.$ref) : schema;
  return target && Array.isArray(target.enum) ? target.enum : null;
}

// Plausible strings for well-known formats, so a prefilled body passes validation.
const FORMAT_EXAMPLES = {
  "date-time": () => new Date().toISOString(),
  date: () => new Date().toISOString().slice(0, 10),
  time: () => new Date().toISOString().slice(11, 19),
  email: () => "user@example.com",
  uuid: () => "3fa85f64-5717-4562-b3fc-2c963f66afa6",
  uri: () => "https://example.com/",
  "uri-reference": () => "/path",
  decimal: () => "1.00",
  ipv4: () => "192.0.2.1",
  ipv6: () => "2001:db8::1",
  hostname: () => "example.com",
};

function clamp(value, schema) {
  if (schema.minimum !== undefined && value < schema.minimum) value = schema.minimum;
  if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
    value = schema.exclusiveMinimum + 1;
  }
  if (schema.maximum !== undefined && value > schema.maximum) value = schema.maximum;
  if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) {
    value = schema.exclusiveMaximum - 1;
  }
  return value;
}

function exampleString(schema, name) {
  if (schema.format && FORMAT_EXAMPLES[schema.format]) return FORMAT_EXAMPLES[schema.format]();
  // Field names are often the only hint (an email validated by a pattern, not a format).
  if (/e-?mail/i.test(name || "")) return "user@example.com";
  let text = name ? String(name) : "string";
  const min = schema.minLength || 0;
  while (text.length < min) text += "x";
  return schema.maxLength !== undefined ? text.slice(0, Math.max(schema.maxLength, 0)) : text;
}

/**
 * An example value built from a schema, to prefill "Try it" bodies. Explicit
 * examples and defaults win; otherwise the smallest value that satisfies the
 * bounds (1 for ids with minimum 1, one item for minItems 1). `seen` holds the
 * refs being expanded, so a recursive schema stops instead of looping.
 */
export function exampleFor(spec, schema, name = "", seen = new Set(), depth = 0) {
  if (!schema || typeof schema !== "object" || depth > 8) return null;
  if (schema.$ref) {
    if (seen.has(schema.$ref)) return null;
    const target = resolvePointer(spec, schema.$ref);
    const inner = new Set(seen).add(schema.$ref);
    return exampleFor(spec, target, name, inner, depth + 1);
  }
  if (schema.example !== undefined) return schema.example;
  if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
  if (schema.default !== undefined) return schema.default;
  if ("const" in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  const variants = schema.oneOf || schema.anyOf;
  if (variants && variants.length) {
    const usable = variants.find((v) => !schemaTypes(v).includes("null") || v.$ref) || variants[0];
    return exampleFor(spec, usable, name, seen, depth + 1);
  }
  if (schema.allOf) {
    return schema.allOf.reduce((merged, part) => {
      const value = exampleFor(spec, part, name, seen, depth + 1);
      return value && typeof value === "object" && !Array.isArray(value) ? {...merged, ...value} : merged;
    }, {});
  }
  const type = schemaTypes(schema).find((t) => t !== "null") || "null";
  switch (type) {
    case "object": {
      const value = {};
      for (const [key, prop] of Object.entries(schema.properties || {})) {
        value[key] = exampleFor(spec, prop, key, seen, depth + 1);
      }
      return value;
    }
    case "array": {
      const item = exampleFor(spec, schema.items, name, seen, depth + 1);
      return Array.from({length: Math.max(1, schema.minItems || 0)}, () => item);
    }
    case "integer":
      return clamp(1, schema);
    case "number":
      return clamp(1.5, schema);
    case "boolean":
      return false;
    case "string":
      return exampleString(schema, name);
    default:
      return null;
  }
}

/**
 * What an operation's `security` says, in words the page can show:
 * the alternatives (each a list of scheme names with scopes) and whether an
 * anonymous caller is allowed (an empty `{}` alternative means auth is optional).
 */
export function securityOf(spec, op) {
  const requirements = op.security !== undefined ? op.security : spec.security || [];
  const alternatives = requirements.filter((r) => Object.keys(r).length);
  const optional = requirements.length === 0 || requirements.some((r) => !Object.keys(r).length);
  return {alternatives, optional, declared: requirements.length > 0};
}
