"""The parsers `terrapin fuzz` feeds, each with its input generator and its allowed errors.

| target   | parser (what faces the network or a user's file)              | allowed error      |
| envelope | protocol/envelope.py decode_envelope, decode_payload, peek_seq | EnvelopeError      |
| ack      | firmware/ack.py decode (the board reads the gateway's ACK)     | ack.AckError       |
| bundle   | chain/bundle.py load, parse_envelope (after json.loads)        | BundleError        |
| gateway-config | gateway/config.py parse_config (a TOML text)             | ConfigError        |
| board-config   | firmware/config.py parse (a JSON text; returns errors)   | none: never raises |
| console  | firmware/console.py Console.feed (TP1 lines, a temp dir)       | its ERR replies    |
| ota      | firmware/ota_install.py read_manifest, ota_mqtt.parse_offer    | OTAError, ValueError |
| status   | gateway/ingest.py _parse_status (a board's retained status)    | none: never raises |

Each generator mutates the golden inputs (docs/vectors, the example configs,
a signed OTA bundle) far more often than it makes random bytes. The seeds are
built once per process.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from terrapin.tools.devkit import fuzz_mutate as m
from terrapin.tools.devkit.fuzz import Invariant


@dataclass
class Target:
    name: str
    generate: Any  # (rng) -> input
    run: Any  # (input) -> None; raises `expected` or, for a crash, anything else
    expected: tuple = ()
    text: bool = False  # inputs are str (saved as UTF-8 with surrogates kept)

    def to_bytes(self, data) -> bytes:
        return data.encode("utf-8", "surrogatepass") if self.text else bytes(data)

    def from_bytes(self, raw: bytes):
        return raw.decode("utf-8", "surrogatepass") if self.text else raw


VECTORS_DIR = Path(__file__).resolve().parents[2] / "docs" / "vectors"


def _vectors(name: str) -> list[dict]:
    """The golden vectors of docs/vectors/<name>.json (written by `terrapin vectors`)."""
    return json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))["vectors"]


# -- envelope ----------------------------------------------------------------


def _envelope_target() -> Target:
    from terrapin.gateway.protocol import envelope as e

    valid = [bytes.fromhex(v["envelope"]) for v in _vectors("valid")]
    invalid = [bytes.fromhex(v["envelope"]) for v in _vectors("invalid")]
    pool = valid + invalid
    parts = [cbor2.loads(v).value for v in valid]  # [protected, {4: kid}, payload, sig]

    def generate(rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.25:
            return m.mutate_bytes(rng, rng.choice(pool), pool)
        if r < 0.45:
            return m.mutate_cbor(rng, rng.choice(pool))
        if r < 0.85:  # a well-formed envelope around a damaged payload
            protected, unprot, payload, sig = rng.choice(parts)
            payload = (m.mutate_cbor if rng.random() < 0.6 else m.mutate_bytes)(rng, payload)
            return e.assemble(unprot[4], payload, sig, protected)
        if r < 0.98:
            return m.random_bytes(rng, 300)
        return rng.choice(valid)

    def payload_checks(payload: bytes) -> None:
        seq = e.peek_seq(payload)  # never raises
        try:
            reading = e.decode_payload(payload)
        except e.EnvelopeError:
            return
        if e.encode_payload(reading.seq, reading.time, reading.records) != payload:
            raise Invariant("an accepted payload is not its own canonical encoding")
        if seq != reading.seq:
            raise Invariant(f"peek_seq says {seq}, decode_payload {reading.seq}")

    def run(data: bytes) -> None:
        payload_checks(data)
        env = e.decode_envelope(data)
        if e.assemble(env.kid, env.payload, env.signature) != data or len(env.kid) != 20:
            raise Invariant("an accepted envelope is not the canonical v1 layout")
        payload_checks(env.payload)

    return Target("envelope", generate, run, (e.EnvelopeError,))


# -- ack ---------------------------------------------------------------------


def _ack_target() -> Target:
    from terrapin.firmware import ack
    from terrapin.gateway.protocol.ack import encode_ack

    seeds = [
        encode_ack([1]),
        encode_ack(range(1, 50), [(60, 11), (70, 13)]),
        encode_ack([0, 2**32, 2**63 - 1], [(5, 7)]),
        encode_ack([], [(s, 1 + s % 14) for s in range(0, 4000, 37)]),
        encode_ack(range(0, 600, 2)),
    ]

    def generate(rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.4:
            return m.mutate_bytes(rng, rng.choice(seeds), seeds)
        if r < 0.8:
            return m.mutate_cbor(rng, rng.choice(seeds))
        if r < 0.9:  # pairs of boundary integers, any encoding cbor2 makes
            pairs = [[rng.choice(m._INTS), rng.choice(m._INTS)] for _ in range(rng.randrange(4))]
            body = {rng.choice((1, 2, 1)): pairs} if rng.random() < 0.8 else {1: pairs, 2: pairs}
            return m.cbor_encode(rng, body)
        return m.random_bytes(rng, 64)

    def run(data: bytes) -> None:
        ranges, rejections = ack.decode(data)
        for lo, hi in ranges:
            if not 0 <= lo <= hi or ack.covers(ranges, rejections, lo) != 0:
                raise Invariant(f"range [{lo}, {hi}] accepted but not covered")
        for seq, reason in rejections:
            if seq < 0 or reason < 0:
                raise Invariant("negative rejection accepted")
            ack.reason_name(reason)

    return Target("ack", generate, run, (ack.AckError,))


# -- proof bundle --------------------------------------------------------------


def golden_bundles() -> list[str]:
    """Well-formed bundle files around the golden envelopes (fields made up, formats right)."""
    out = []
    for i, v in enumerate(_vectors("valid")[:4]):
        out.append(
            json.dumps(
                {
                    "version": 1,
                    "envelope": v["envelope"],
                    "pubkey": v["public_key"],
                    "device": "0x" + v["address"],
                    "seq": v["seq"],
                    "digest": "0x" + v["digest"],
                    "leaf": "0x" + "11" * 32,
                    "proof": ["0x" + f"{i:02x}" * 32] * i,
                    "root": "0x" + "22" * 32,
                    "batch": i,
                    "chain_id": 31337,
                    "contract": "0x" + "33" * 20,
                    "tx": "0x" + "44" * 32,
                    "block": 7 + i,
                },
                indent=2,
            )
        )
    return out


# What `terrapin verify` runs with: it imports web3, whose py_ecc sets this at import.
VERIFIER_RECURSION_LIMIT = 100_000


def _bundle_target() -> Target:
    from terrapin.gateway.chain import bundle

    seeds = golden_bundles()
    envelopes = [bytes.fromhex(v["envelope"]) for v in _vectors("valid")]

    def generate(rng: random.Random) -> str:
        r = rng.random()
        if r < 0.2:  # the envelope inside damaged, the rest intact
            doc = json.loads(rng.choice(seeds))
            env = rng.choice(envelopes)
            bad = (m.mutate_cbor if rng.random() < 0.5 else m.mutate_bytes)(rng, env)
            doc["envelope"] = bad.hex()
            return json.dumps(doc)
        return m.mutate_json_text(rng, rng.choice(seeds))

    def run(text: str) -> None:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(VERIFIER_RECURSION_LIMIT)
        try:
            data = bundle.parse_json(text)  # as `terrapin verify` reads the file
        except ValueError:
            return  # BundleError or json's: the command says "cannot read ... as JSON"
        finally:
            sys.setrecursionlimit(limit)
        b = bundle.load(data)
        env = bundle.parse_envelope(b.envelope)
        if len(env.signature) != 64 or len(b.proof) > bundle.MAX_PROOF:
            raise Invariant("a bundle outside the format was accepted")

    return Target("bundle", generate, run, (bundle.BundleError,), text=True)


# -- configs --------------------------------------------------------------------

_TOML_VALUES = (
    "0", "-1", "65536", "99999999999999999999", "1.5", "nan", "inf", "-inf", "1e999", "true",
    '""', '"x"', '"\\u0000"', '"\\ud800"', "'''a\nb'''", "[]", "[1, 2]", '["batch", "batch"]',
    '["terrapin.gateway.chain.stage:batcher"]', "{}", "{ a = 1 }", "[[1, 2], 3]",
    "1979-05-27T07:32:00Z", "07:32:00", '"/abs/path"', '"rel/../x"', '"a\\u0000b"', "0x10",
)  # fmt: skip
_TOML_LINES = ("[x]", "[[x]]", "[mqtt.sub]", "a.b.c = 1", "[pipeline]", "= 1", "mqtt = 1", "[api]")


def _mutate_toml(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    r = rng.random()
    i = rng.randrange(len(lines))
    if r < 0.45 and "=" in lines[i]:  # a new value for one key
        key = lines[i].split("=", 1)[0]
        lines[i] = key + "= " + rng.choice(_TOML_VALUES)
    elif r < 0.6:
        lines.insert(i, rng.choice(_TOML_LINES))
    elif r < 0.7:
        del lines[i]
    elif r < 0.75:
        lines.insert(i, "x = " + m.deep_nesting(rng, rng.choice("[{"), ""))
    elif r < 0.8:
        lines.insert(i, lines[rng.randrange(len(lines))])
    else:
        return m.mutate_text(rng, text)
    return "\n".join(lines)


def _gateway_config_target() -> Target:
    from terrapin.gateway import config
    from terrapin.gateway.errors import ConfigError

    seeds = [
        config.render_config(),
        config.render_config({"pipeline": {"stages": ["batch", "anchor", "rewards"]}})
        + '\n[chain]\nurl = "http://127.0.0.1:8545"\n[rewards]\nepoch_s = 60\n',
        '[policy]\nranges = { C = [-40, 85], "%" = [0, 100] }\n[store]\npath = "db.sqlite"\n',
    ]
    path = Path("/nonexistent/terrapin/gateway.toml")

    def generate(rng: random.Random) -> str:
        text = rng.choice(seeds)
        for _ in range(rng.choice((1, 1, 2, 3))):
            text = _mutate_toml(rng, text)
        return text

    quiet = logging.getLogger("terrapin.gateway.config")

    def run(text: str) -> None:
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # old [pipeline] entries log a warning each time
        try:
            config.parse_config(text, path)
        finally:
            quiet.setLevel(level)

    return Target("gateway-config", generate, run, (ConfigError,), text=True)


def _board_config_target() -> Target:
    from terrapin.firmware import config

    example = (Path(config.__file__).parent / "config.example.json").read_text()
    seeds = [
        example,
        json.dumps(config.DEFAULTS),
        '{"broker": {"host": "gw.local"}, "sensors": [{"driver": "simulated"}]}',
        '{"broker": {"host": "h", "user": "u", "password": "secret-pw"},'
        ' "serial_uplink": {"uart": 1, "tx": 25, "rx": 26}, "ota_pubkey": "04"}',
    ]

    def generate(rng: random.Random) -> str:
        board = "esp32" if rng.random() < 0.5 else "unix"
        text = rng.choice(seeds)
        for _ in range(rng.choice((1, 1, 2, 3))):
            text = m.mutate_json_text(rng, text)
        return board + "\n" + text

    def run(data: str) -> None:
        board, text = data.split("\n", 1)
        out = config.parse(text, board)
        if not (isinstance(out, tuple) and len(out) == 4 and isinstance(out[1], list)):
            raise Invariant("parse() must return (data, errors, sensor_errors, warnings)")
        for message in out[1] + out[2]:
            if "secret-pw" in message:
                raise Invariant("a config message quotes a password")

    return Target("board-config", generate, run, (), text=True)


def _status_target() -> Target:
    from terrapin.gateway.ingest import _parse_status

    seeds = [
        json.dumps({"state": "online", "fw": "0.1.0", "heap_free": 41234, "seq": 17, "ota": None}),
        json.dumps({"state": "boot", "errors": ["broker.port must be ..."], "rssi": -61.5}),
    ]

    def generate(rng: random.Random) -> bytes:
        if rng.random() < 0.05:
            return b"offline"
        text = m.mutate_json_text(rng, rng.choice(seeds))
        return text.encode("utf-8", "surrogatepass")

    def run(data: bytes) -> None:
        out = _parse_status(data)
        if not isinstance(out, dict) or len(out) > 21:
            raise Invariant("a status parses to more than the 20 short fields shown")

    return Target("status", generate, run, ())


# -- console and OTA live in fuzz_board.py (they need a key, a temp dir) --------


@functools.cache
def target(name: str) -> Target:
    from terrapin.tools.devkit import fuzz_board

    makers = {
        "envelope": _envelope_target,
        "ack": _ack_target,
        "bundle": _bundle_target,
        "gateway-config": _gateway_config_target,
        "board-config": _board_config_target,
        "status": _status_target,
        "console": fuzz_board.console_target,
        "ota": fuzz_board.ota_target,
    }
    if name not in makers:
        raise KeyError(name)
    return makers[name]()


TARGETS = ("envelope", "ack", "bundle", "gateway-config", "board-config", "console", "ota")
TARGETS += ("status",)
