// Eclipse Tahu's sparkplug-payload as an independent Sparkplug B codec for interop tests.
// stdin: {"op": "decode", "b64": "..."} -> stdout: the decoded payload as JSON (64-bit ints as strings)
//        {"op": "encode", "payload": {...}} -> stdout: {"b64": "..."}
const path = require("path");
const root = process.env.INTEROP_NODE_MODULES || path.resolve(__dirname, "../../../interop/node_modules");
const sp = require(path.join(root, "sparkplug-payload")).get("spBv1.0");

let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const req = JSON.parse(input);
  if (req.op === "decode") {
    const p = sp.decodePayload(Buffer.from(req.b64, "base64"));
    const out = JSON.stringify(p, (k, v) =>
      v && typeof v === "object" && typeof v.low === "number" && typeof v.high === "number" ? v.toString() : v
    );
    process.stdout.write(out);
  } else {
    const p = req.payload;
    for (const m of p.metrics || []) {
      if (typeof m.value === "string" && m.big) { m.value = BigInt(m.value); delete m.big; }
    }
    process.stdout.write(JSON.stringify({ b64: Buffer.from(sp.encodePayload(p)).toString("base64") }));
  }
});
