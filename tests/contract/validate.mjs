// Validate an AsyncAPI document with the official parser; print its diagnostics as JSON.
// Usage: node validate.mjs path/to/asyncapi.yaml  (exit 0 when it has no errors)
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), {
  source: path,
});
const out = diagnostics.map((d) => ({
  severity: ["error", "warning", "info", "hint"][d.severity] ?? String(d.severity),
  code: d.code,
  message: d.message,
  path: d.path.join("/"),
}));
console.log(JSON.stringify({ valid: document !== undefined, diagnostics: out }, null, 1));
process.exit(out.some((d) => d.severity === "error") || !document ? 1 : 0);
