// Builds GraphiQL for polyport's /graphql page into src/polyport/web/static/graphiql/:
// index.html, graphiql.js (one ES module, React in production mode), graphiql.css
// (fonts inlined) and THIRD_PARTY_LICENSES.txt. No CDN: the page works offline.
//
//   npm ci && npm run build        (or: scripts/build-graphiql.sh from the repository root)
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, "../../src/polyport/web/static/graphiql");
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: { graphiql: join(here, "src/main.jsx") },
  outdir: out,
  bundle: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  minify: true,
  legalComments: "eof", // license headers of the bundled packages stay in the files
  define: { "process.env.NODE_ENV": '"production"' },
  loader: { ".woff": "dataurl", ".woff2": "dataurl", ".svg": "dataurl" },
  metafile: true,
  logLevel: "info",
});
copyFileSync(join(here, "src/index.html"), join(out, "index.html"));

// Every npm package that ended up in the bundle, with its license text.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match && !packages.has(match[1])) {
    const root = join(here, "node_modules", match[1]);
    const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    const file = readdirSync(root).find((name) => /^(licen[sc]e|copying)/i.test(name));
    const text = file ? readFileSync(join(root, file), "utf8").trim() : `License: ${meta.license}`;
    packages.set(match[1], `${meta.name}@${meta.version} (${meta.license})\n\n${text}`);
  }
}
const notices = [...packages.keys()].sort().map((name) => packages.get(name));
writeFileSync(
  join(out, "THIRD_PARTY_LICENSES.txt"),
  "Packages bundled into graphiql.js and graphiql.css (built by web-src/graphiql/build.mjs)\n\n" +
    notices.join("\n\n" + "-".repeat(78) + "\n\n") +
    "\n",
);
for (const name of ["graphiql.js", "graphiql.css", "index.html"]) {
  if (!existsSync(join(out, name))) throw new Error(`missing ${name}`);
}
console.log(`${packages.size} packages bundled into ${relative(process.cwd(), out)}`);
