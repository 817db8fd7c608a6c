// Compile gateway/contracts/*.sol with the pinned solcjs from node_modules and write
// gateway/contracts/build/<Contract>.json (ABI, bytecode, compiler version, settings hash).
//
//   node tools/js/build-contracts.mjs           write the artifacts
//   node tools/js/build-contracts.mjs --check   compile in memory, exit 1 if any artifact differs
//
// Settings are fixed here; their SHA-256 (over the canonical JSON) is stored in every
// artifact so a rebuild with other settings is visible.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(ROOT, "package.json"));
const solc = require("solc");

const SOLC_VERSION = "0.8.30";
const CONTRACTS_DIR = "gateway/contracts";
const BUILD_DIR = join(ROOT, CONTRACTS_DIR, "build");
// The contracts we deploy; interfaces and libraries are compiled but get no artifact.
const DEPLOYABLE = ["TerrapinRegistry", "TerrapinAnchor", "TerrapinRewards"];

export const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  remappings: ["@openzeppelin/=node_modules/@openzeppelin/"],
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

function sha256(text) {
  return createHash("sha256").update(text).digest("hex");
}

function findImports(path) {
  const file = join(ROOT, path);
  if (!file.startsWith(ROOT) || !existsSync(file)) return { error: `not found: ${path}` };
  return { contents: readFileSync(file, "utf8") };
}

export function compile() {
  if (!solc.version().startsWith(SOLC_VERSION + "+")) {
    throw new Error(`solc ${solc.version()} in node_modules, expected ${SOLC_VERSION}`);
  }
  const sources = {};
  for (const name of readdirSync(join(ROOT, CONTRACTS_DIR)).sort()) {
    if (name.endsWith(".sol")) {
      const unit = `${CONTRACTS_DIR}/${name}`;
      sources[unit] = { content: readFileSync(join(ROOT, unit), "utf8") };
    }
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) throw new Error(`${errors.length} compiler error(s)`);
  const settingsHash = sha256(JSON.stringify(sortKeys(SETTINGS)));
  const artifacts = {};
  for (const [unit, contracts] of Object.entries(output.contracts)) {
    for (const [name, c] of Object.entries(contracts)) {
      if (!DEPLOYABLE.includes(name)) continue;
      artifacts[name] = {
        contractName: name,
        sourceName: unit,
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        compiler: { name: "solc", version: solc.version(), settings: sortKeys(SETTINGS) },
        settingsHash,
        sourceHash: sha256(sources[unit].content),
      };
    }
  }
  for (const name of DEPLOYABLE) if (!artifacts[name]) throw new Error(`no output for ${name}`);
  return artifacts;
}

function main() {
  const check = process.argv.includes("--check");
  const artifacts = compile();
  let stale = 0;
  for (const [name, artifact] of Object.entries(artifacts)) {
    const file = join(BUILD_DIR, `${name}.json`);
    const text = JSON.stringify(artifact, null, 2) + "\n";
    if (check) {
      const old = existsSync(file) ? readFileSync(file, "utf8") : "";
      if (old !== text) {
        process.stderr.write(`stale: ${file} differs from a fresh build\n`);
        stale++;
      } else {
        process.stdout.write(`ok: ${name} rebuilds identically\n`);
      }
    } else {
      writeFileSync(file, text);
      process.stdout.write(`wrote ${file}\n`);
    }
  }
  if (stale) process.exit(1);
}

main();
