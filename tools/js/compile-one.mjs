// Compile Solidity files with the pinned solcjs from node_modules; print JSON.
//
//   node tools/js/compile-one.mjs gateway/contracts/TerrapinRewards.sol [more.sol ...]
//
// Paths are relative to the repository root; "@openzeppelin/..." imports
// resolve in node_modules. Output on stdout:
//   {"solc": "<version>", "contracts": {"<Name>": {"abi", "bytecode", "deployedBytecode", "source"}}}
// Compilation errors go to stderr with exit code 1.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(path.join(ROOT, "package.json"));
const solc = require("solc");

function findImports(name) {
  const file = name.startsWith("@") ? path.join(ROOT, "node_modules", name) : path.join(ROOT, name);
  try {
    return { contents: fs.readFileSync(file, "utf8") };
  } catch {
    return { error: `not found: ${name}` };
  }
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: compile-one.mjs FILE.sol [FILE.sol ...]");
  process.exit(2);
}
const sources = {};
for (const file of files) {
  const rel = path.relative(ROOT, path.resolve(file)).split(path.sep).join("/");
  sources[rel] = { content: fs.readFileSync(path.join(ROOT, rel), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const contracts = {};
for (const [source, byName] of Object.entries(output.contracts || {})) {
  if (!(source in sources)) continue;
  for (const [name, c] of Object.entries(byName)) {
    contracts[name] = {
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      source,
    };
  }
}
process.stdout.write(JSON.stringify({ solc: solc.version(), contracts }));
