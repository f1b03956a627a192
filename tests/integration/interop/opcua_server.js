// A tiny node-opcua server for the OPC UA adapter's interop test: an independent implementation.
// Usage: node opcua_server.js PORT   (NODE_PATH must point at interop/node_modules)
// Serves ns=1;s=Pump.Waveform (Double[64], refreshed every 50 ms) and a writable
// ns=1;s=Pump.Gate (Boolean); prints "READY <url>" when listening and "WRITE Gate <value>" per write.
const {
  OPCUAServer, Variant, DataType, VariantArrayType, StatusCodes, MessageSecurityMode, SecurityPolicy,
} = require("node-opcua");

(async () => {
  const port = parseInt(process.argv[2], 10);
  const server = new OPCUAServer({
    port, hostname: "127.0.0.1", host: "127.0.0.1", resourcePath: "/interop",
    allowAnonymous: true,
    securityModes: [MessageSecurityMode.None], securityPolicies: [SecurityPolicy.None],
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const pump = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Pump", nodeId: "s=Pump" });
  const wave = ns.addVariable({
    componentOf: pump, browseName: "Waveform", nodeId: "s=Pump.Waveform", dataType: "Double",
    valueRank: 1, arrayDimensions: [64], minimumSamplingInterval: 50,
  });
  let gate = false;
  ns.addVariable({
    componentOf: pump, browseName: "Gate", nodeId: "s=Pump.Gate", dataType: "Boolean",
    accessLevel: "CurrentRead | CurrentWrite", userAccessLevel: "CurrentRead | CurrentWrite",
    minimumSamplingInterval: 50,
    value: {
      get: () => new Variant({ dataType: DataType.Boolean, value: gate }),
      set: (v) => { gate = v.value; console.log("WRITE Gate " + gate); return StatusCodes.Good; },
    },
  });
  let k = 0;
  const tick = () => {
    const a = new Float64Array(64);
    for (let i = 0; i < 64; i++) a[i] = Math.sin((i + k) / 5);
    k += 1;
    wave.setValueFromSource(new Variant({ dataType: DataType.Double, arrayType: VariantArrayType.Array, value: a }));
  };
  tick();
  setInterval(tick, 50);
  await server.start();
  console.log("READY " + server.getEndpointUrl());
  const stop = async () => { await server.shutdown(0); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
})().catch((e) => { console.error("FAILED " + e); process.exit(1); });
