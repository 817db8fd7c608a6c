// Cross-check for gateway/rewards/distribution.py: build reward distribution trees with
// @openzeppelin/merkle-tree (leaf encoding ["address", "uint256"]) and print roots and proofs.
//
// stdin:  {"cases": [{"values": [["0x<owner>", "<cumulative amount>"], ...]}, ...]}
// stdout: {"results": [{"root": "0x..", "proofs": {"0x<owner>": ["0x..", ...]},
//                       "tree": ["0x..", ...]}, ...]}   (tree: the flat node array of dump())
// Every proof is also checked with StandardMerkleTree.verify before it is printed.
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(ROOT, "package.json"));
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const ENCODING = ["address", "uint256"];

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const { cases } = JSON.parse(input);

const results = cases.map(({ values }) => {
  const tree = StandardMerkleTree.of(values, ENCODING);
  const proofs = {};
  for (const [i, value] of tree.entries()) {
    const proof = tree.getProof(i);
    if (!StandardMerkleTree.verify(tree.root, ENCODING, value, proof)) {
      throw new Error(`own proof of ${value[0]} does not verify`);
    }
    proofs[value[0].toLowerCase()] = proof;
  }
  return { root: tree.root, proofs, tree: tree.dump().tree };
});
process.stdout.write(JSON.stringify({ results }));
