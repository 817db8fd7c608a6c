// Cross-check for gateway/chain/merkle.py: build the same trees with
// @openzeppelin/merkle-tree and print their roots and proofs.
//
// stdin:  {"cases": [{"values": [["0x<board>", "<seq>", "0x<digest>"], ...],
//                     "proofs": [value indices to prove]}, ...]}
// stdout: {"results": [{"root": "0x..", "leaves": {"<i>": "0x.."}, "proofs": {"<i>": ["0x..", ...]},
//                       "treeIndex": {"<i>": n}}, ...]}
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(ROOT, "package.json"));
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const ENCODING = ["address", "uint64", "bytes32"];

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const { cases } = JSON.parse(input);

const results = cases.map(({ values, proofs }) => {
  const tree = StandardMerkleTree.of(values, ENCODING);
  const out = { root: tree.root, leaves: {}, proofs: {}, treeIndex: {} };
  for (const i of proofs) {
    out.proofs[i] = tree.getProof(i);
    out.leaves[i] = StandardMerkleTree.verify(tree.root, ENCODING, values[i], out.proofs[i])
      ? tree.tree[tree.values[i].treeIndex]
      : "unverifiable";
    out.treeIndex[i] = tree.values[i].treeIndex;
  }
  return out;
});
process.stdout.write(JSON.stringify({ results }));
