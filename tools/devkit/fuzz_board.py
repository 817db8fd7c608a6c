"""Fuzz targets on the board's side that need state: the TP1 console and OTA bundles.

The console runs on CPython over a temporary directory that plays the board's
flash (a known key, a valid config, the release key it trusts); the directory
is put back after every input that may have changed it, so each input is
reproduced alone. OTA manifests are signed per input with the fuzzer's own
release key, so mutated manifests get past the signature to the JSON checks.

In these runs the firmware's ECDSA verify (pure Python, ~7 ms) is swapped for
libsecp256k1's (coincurve) around each input: same maths, ~100x faster. The
firmware's own ECDSA is tested against the protocol vectors elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import multiprocessing.util
import os
import random
import shutil
import sys
import tempfile
from contextlib import contextmanager

import coincurve

from terrapin.tools.devkit import fuzz_mutate as m
from terrapin.tools.devkit.fuzz import Invariant
from terrapin.tools.devkit.fuzz_targets import Target

RELEASE_KEY = coincurve.PrivateKey(bytes([7]) * 32)
RELEASE_PUB = RELEASE_KEY.public_key.format(compressed=False)
BOARD_KEY = bytes(range(1, 33))
BOARD_MPY = 2822  # sys.implementation._mpy of MicroPython 1.2x on an ESP32


def scratch_dir(name: str) -> str:
    """A directory playing the board's flash: in RAM (/dev/shm) where there is one,
    removed when the process (a fuzz worker too) exits."""
    ram = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix=f"terrapin-fuzz-{name}-", dir=ram)
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(path, True), exitpriority=1)
    return path


@contextmanager
def fast_verify():
    """The firmware's verify_digest backed by libsecp256k1 while the block runs."""
    from terrapin.firmware import secp256k1
    from terrapin.gateway.protocol.signature import verify_digest

    def verify(pub, digest, sig):
        try:
            verify_digest(bytes(pub), bytes(digest), bytes(sig))
        except ValueError:
            return False
        return True

    saved = secp256k1.verify_digest
    secp256k1.verify_digest = verify
    try:
        yield
    finally:
        secp256k1.verify_digest = saved


# -- OTA -----------------------------------------------------------------------

_BODIES = {"terrapin/firmware/app.mpy": b"app v2", "terrapin/firmware/x/y.py": b"y" * 700}
MANIFEST = {
    "format": 1,
    "version": "0.2.0",
    "release": 7,
    "mpy": BOARD_MPY,
    "files": [
        {"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
        for p, b in _BODIES.items()
    ],
}
OFFER = {"v": 1, "version": "0.2.0", "release": 7, "size": 1234, "sha256": "ab" * 32, "chunk": 256}


def signed_bundle(raw_manifest: bytes, bodies: bytes, size: int | None = None) -> bytes:
    """A TPOTA1 bundle: magic, length, manifest, release signature, file bodies."""
    from terrapin.firmware.ota import MAGIC

    head = MAGIC + (len(raw_manifest) if size is None else size).to_bytes(4, "big")
    digest = hashlib.sha256(head + raw_manifest).digest()
    sig = RELEASE_KEY.sign_recoverable(digest, hasher=None)[:64]
    return head + raw_manifest + sig + bodies


def golden_bundle() -> bytes:
    return signed_bundle(json.dumps(MANIFEST).encode(), b"".join(_BODIES.values()))


def _gen_ota(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return b"O" + m.mutate_json_text(rng, json.dumps(OFFER)).encode("utf-8", "surrogatepass")
    bodies = b"".join(_BODIES.values())
    r = rng.random()
    if r < 0.6:  # a damaged manifest, correctly signed
        text = m.mutate_json_text(rng, json.dumps(MANIFEST))
        raw = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.2:
            bodies = m.mutate_bytes(rng, bodies)
        return b"M" + signed_bundle(raw, bodies)
    if r < 0.7:  # a length field that lies
        raw = json.dumps(MANIFEST).encode()
        size = rng.choice((0, 1, len(raw) - 1, len(raw) + 1, 16384, 16385, 2**32 - 1))
        return b"M" + signed_bundle(raw, bodies, size)
    if r < 0.95:
        return b"M" + m.mutate_bytes(rng, golden_bundle())
    return b"M" + m.random_bytes(rng, 120)


def ota_target() -> Target:
    from terrapin.firmware import ota, ota_install, ota_mqtt

    root = scratch_dir("ota")

    def install(bundle: bytes) -> None:
        # A manifest that passed: the installer stages it, as a board with this mpy would.
        path = os.path.join(root, "incoming.bin")
        with open(path, "wb") as f:
            f.write(bundle)
        had = hasattr(sys.implementation, "_mpy")
        if not had:
            sys.implementation._mpy = BOARD_MPY
        try:
            ota.install(root, path, RELEASE_PUB, allow_same_release=True)
        finally:
            if not had:
                del sys.implementation._mpy
            shutil.rmtree(root)
            os.mkdir(root)

    def run(data: bytes) -> None:
        kind, payload = data[:1], data[1:]
        if kind == b"O":
            offer = ota_mqtt.parse_offer(payload)
            if not 0 < offer["size"] <= ota_mqtt.MAX_BUNDLE or len(offer["digest"]) != 32:
                raise Invariant("an offer out of range was accepted")
            return
        with fast_verify():
            manifest = ota_install.read_manifest(io.BytesIO(payload), RELEASE_PUB)
            if not isinstance(manifest.get("files"), list):
                raise Invariant("a manifest without a file list was accepted")
            install(payload)

    return Target("ota", _gen_ota, run, (ota.OTAError, ValueError))


# -- TP1 console -----------------------------------------------------------------

_WORDS = ("info", "keygen", "config-set", "config-begin", "config-chunk", "config-end")
_WORDS += ("sign-digest", "done", "ota-begin", "ota-chunk", "ota-end", "reboot", "nope", "")
_ARGS = ("", "force", "bind", "-1", "0", "1e9", "524289", "abc", "0x10", "Ａ", "=", "\x00", "==")
_STATEFUL = (b"config", b"done", b"ota", b"keygen")
BOARD_CONFIG = {"broker": {"host": "gw.local"}, "sensors": [{"driver": "simulated"}]}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _config_text(rng: random.Random) -> bytes:
    if rng.random() < 0.03:  # nested past the parser's recursion limit
        return ('{"sensors": ' + m.deep_nesting(rng, rng.choice("[{"), "")).encode()
    text = m.mutate_json_text(rng, json.dumps(BOARD_CONFIG))
    return text.encode("utf-8", "surrogatepass")


def _line(rng: random.Random) -> str:
    word = rng.choice(_WORDS)
    if word == "config-set":
        return f"{word} {_b64(_config_text(rng))}"
    if word == "sign-digest":
        return f"{word} {rng.randbytes(rng.choice((32, 32, 31, 33))).hex()} {rng.choice(_ARGS)}"
    if word in ("config-chunk", "ota-chunk"):
        return f"{word} {_b64(rng.randbytes(rng.randrange(1100)))}"
    args = [rng.choice(_ARGS) for _ in range(rng.choice((0, 0, 1, 2)))]
    return " ".join((word, *args))


def _session(rng: random.Random) -> list[str]:
    """A whole exchange: a chunked config, an OTA push, or a few loose commands."""
    r = rng.random()
    if r < 0.15:
        raw = _config_text(rng)
        digest = hashlib.sha256(raw).hexdigest() if rng.random() < 0.8 else "00" * 32
        step = rng.randrange(1, 1100)  # base64 of a part must fit a 1536-byte line
        parts = [raw[i : i + step] for i in range(0, len(raw), step)][:12]
        return ["config-begin", *(f"config-chunk {_b64(p)}" for p in parts), f"config-end {digest}"]
    if r < 0.25:
        bundle = golden_bundle()
        if rng.random() < 0.5:
            bundle = m.mutate_bytes(rng, bundle)
        size = len(bundle) + rng.choice((0, 0, 0, -1, 1))
        chunks = [bundle[i : i + 1000] for i in range(0, len(bundle), 1000)]
        return [f"ota-begin {size}", *(f"ota-chunk {_b64(c)}" for c in chunks), "ota-end"]
    return [_line(rng) for _ in range(rng.randrange(1, 5))]


def _gen_console(rng: random.Random) -> bytes:
    out = []
    session = _session(rng)
    damage = 0.4 / len(session)  # most long sessions arrive intact, to reach their end
    for text in session:
        line = ("TP1 " if rng.random() < 0.97 else "") + text
        raw = line.encode("utf-8", "surrogatepass")
        if rng.random() < damage:
            raw = m.mutate_bytes(rng, raw).replace(b"\n", b"")
        if rng.random() < damage / 10:
            raw += b"A" * rng.choice((1600, 3100))
        out.append(raw + rng.choice((b"\n", b"\r\n")))
    return b"".join(out)


def console_target() -> Target:
    from terrapin.firmware import console
    from terrapin.gateway.protocol.signature import address

    pub = coincurve.PrivateKey(BOARD_KEY).public_key.format(compressed=False)
    identity = (pub, address(pub))
    root = scratch_dir("console")

    def baseline() -> None:
        for name in os.listdir(root):
            path = os.path.join(root, name)
            (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
        with open(os.path.join(root, "key.bin"), "wb") as f:
            f.write(BOARD_KEY)
        with open(os.path.join(root, console.CONFIG_FILE), "w") as f:
            json.dump(BOARD_CONFIG, f)

    baseline()

    def run(data: bytes) -> None:
        out: list[bytes] = []
        con = console.Console(
            root,
            out.append,
            reboot=lambda: None,
            trusted_release=RELEASE_PUB.hex(),
            identity=identity,
        )
        try:
            with fast_verify():
                con.feed(data)
        finally:
            con.abandon()
            if any(word in data for word in _STATEFUL):
                baseline()
        for line in out:
            if not (line.startswith(b"TP1 ") and line.endswith(b"\n")) or b"\n" in line[:-1]:
                raise Invariant(f"answer is not one TP1 line: {line[:80]!r}")
            if line.startswith(b"TP1 ERR INTERNAL"):
                raise Invariant(f"a command raised inside the console: {line.decode()!r}")

    return Target("console", _gen_console, run, ())
