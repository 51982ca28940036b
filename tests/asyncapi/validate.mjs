// Parse AsyncAPI documents with the official parser (@asyncapi/parser) and print what it
// found in each, as JSON: {"<file>": [{"code", "severity", "message", "path"}, …], …}.
// Severity is Spectral's: 0 error, 1 warning, 2 information, 3 hint. A document with an
// error has no parsed form ("parsed": false). tests/http/test_asyncapi.py runs this.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
const report = {};
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(file, "utf8"));
  report[file] = {
    parsed: document !== undefined,
    diagnostics: diagnostics.map((d) => ({
      code: String(d.code),
      severity: d.severity,
      message: d.message,
      path: d.path.join("/"),
    })),
  };
}
process.stdout.write(JSON.stringify(report));
