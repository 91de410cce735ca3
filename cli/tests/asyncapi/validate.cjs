// Validates an AsyncAPI document with the AsyncAPI project's own parser (and its Avro schema
// parser): prints every diagnostic, exits 1 when any is an error.
// Usage: node validate.cjs <document> (NODE_PATH names the node_modules holding the parsers).
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");
const { AvroSchemaParser } = require("@asyncapi/avro-schema-parser");

async function main() {
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  const text = fs.readFileSync(process.argv[2], "utf8");
  const { document, diagnostics } = await parser.parse(text);
  let errors = 0;
  for (const d of diagnostics) {
    // 0 error, 1 warning, 2 information, 3 hint
    if (d.severity === 0) errors++;
    console.log(`${["error", "warning", "info", "hint"][d.severity]} ${d.code} ${d.path.join(".")}: ${d.message}`);
  }
  if (!document) errors++;
  else console.log(`channels=${document.channels().length} operations=${document.operations().length} messages=${document.messages().length}`);
  process.exit(errors > 0 ? 1 : 0);
}
main().catch((e) => { console.error(e); process.exit(1); });
