"""Host side of firmware updates: release keys, signed bundles, pushing them.

The bundle format and the board's rules (verify, stage, trial boot, confirm,
rollback) are in firmware/ota.py. The release key is a secp256k1 key kept
by whoever publishes firmware; boards trust its public key through the
`ota_pubkey` config entry (130 hex characters, uncompressed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

from coincurve import PrivateKey

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.board.deploy import FIRMWARE_DIR, PACKAGE_PREFIX, BoardMpy, build_image
from terrapin.tools.board.deploy import find_mpy_cross as _find_mpy_cross

MAGIC = b"TPOTA1\n"
# Raw bytes per `ota-chunk` line: 320 base64 characters, so one request line fits
# an ESP32 REPL receive buffer (512 bytes) even when the app polls slowly.
CHUNK = 240


def new_release_key(path: Path) -> str:
    """Write a new release private key (hex, mode 0600); return the public key hex."""
    if path.exists():
        raise TerrapinError(f"{path} exists; not overwriting a release key")
    key = PrivateKey()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.secret.hex() + "\n")
    return key.public_key.format(compressed=False).hex()


def load_release_key(path: Path) -> PrivateKey:
    try:
        return PrivateKey(bytes.fromhex(Path(path).read_text().strip()))
    except (OSError, ValueError) as exc:
        raise TerrapinError(f"cannot read the release key {path}: {exc}") from exc


def public_hex(key: PrivateKey) -> str:
    return key.public_key.format(compressed=False).hex()


def build_bundle(
    files: dict[str, bytes], *, version: str, release: int, key: PrivateKey, mpy: int | None
) -> bytes:
    """Manifest + signature + bodies (firmware/ota.py documents the layout)."""
    if not files:
        raise TerrapinError("a bundle needs at least one file")
    names = sorted(files)
    manifest = {
        "format": 1,
        "version": version,
        "release": int(release),
        "mpy": mpy,
        "files": [
            {"path": n, "size": len(files[n]), "sha256": hashlib.sha256(files[n]).hexdigest()}
            for n in names
        ],
    }
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    head = MAGIC + struct.pack(">I", len(raw))
    digest = hashlib.sha256(head + raw).digest()
    sig = key.sign_recoverable(digest, hasher=None)[:64]  # libsecp256k1 gives low-S
    return head + raw + sig + b"".join(files[n] for n in names)


def read_manifest(bundle: bytes) -> dict:
    size = struct.unpack(">I", bundle[len(MAGIC) : len(MAGIC) + 4])[0]
    return json.loads(bundle[len(MAGIC) + 4 : len(MAGIC) + 4 + size])


def stamp_version(src: Path, version: str, out: Path) -> Path:
    """A copy of the firmware folder whose status.py reports `version` as "fw".

    The board's retained status carries FW_VERSION, so a bundle's firmware
    says which release it is once it runs (what `ota publish` waits for).
    """
    import re
    import shutil

    if not re.fullmatch(r"[0-9A-Za-z.+_-]{1,32}", version):
        raise TerrapinError(f"bad version {version!r} (1-32 of 0-9 A-Z a-z . + _ -)")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    status = out / "status.py"
    if status.exists():
        text = status.read_text()
        text = re.sub(r'^FW_VERSION = "[^"]*"', f'FW_VERSION = "{version}"', text, flags=re.M)
        status.write_text(text)
    return out


def firmware_files(
    board: BoardMpy,
    src: Path = FIRMWARE_DIR,
    mpy_cross: str | None = None,
    version: str | None = None,
):
    """The firmware package compiled for `board`, as bundle paths (no main.py).

    With `version`, the status message of the built firmware reports it.
    """
    cross = _find_mpy_cross(board, mpy_cross)
    if version is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="terrapin-ota-") as tmp:
            stamped = stamp_version(Path(src), version, Path(tmp) / "firmware")
            image = build_image(cross, board, stamped)
    else:
        image = build_image(cross, board, src)
    prefix = PACKAGE_PREFIX.removeprefix("lib/")
    return {
        prefix + path[len(PACKAGE_PREFIX) :]: data
        for path, data in image.items()
        if path.startswith(PACKAGE_PREFIX)
    }


def push_serial(console, bundle: bytes, progress: Callable[[int, int], None] | None = None):
    """Send a bundle over the TP1 console; the board verifies and stages it."""
    console.request("ota-begin", str(len(bundle)))
    for i in range(0, len(bundle), CHUNK):
        console.request("ota-chunk", base64.b64encode(bundle[i : i + CHUNK]).decode())
        if progress:
            progress(min(i + CHUNK, len(bundle)), len(bundle))
    return console.request("ota-end", timeout=60)


def install_dir(flash_dir: Path, bundle_path: Path, trusted_pub_hex: str) -> dict:
    """Run firmware/ota.install on the unix port against a virtual board's flash dir."""
    from terrapin.tools.micropython import run_micropython

    repo = Path(FIRMWARE_DIR).parent
    bundle = str(Path(bundle_path).resolve())
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, 'lib'); sys.path.append({str(repo)!r})\n"
        "try:\n from terrapin.firmware import ota\n"
        "except ImportError:\n from firmware import ota\n"
        "from binascii import unhexlify\n"
        f"try:\n m = ota.install('.', {bundle!r}, unhexlify({trusted_pub_hex!r}))\n"
        " print(json.dumps({'ok': True, 'version': m['version'], 'release': m['release']}))\n"
        "except ota.OTAError as e:\n"
        " print(json.dumps({'ok': False, 'error': type(e).__name__, 'text': str(e)}))\n"
    )
    proc = run_micropython("-c", code, cwd=flash_dir, timeout=120)
    if proc.returncode != 0:
        raise TerrapinError("the unix port failed: " + proc.stderr.decode()[-400:])
    answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if not answer["ok"]:
        raise TerrapinError(f"the board refused the bundle: {answer['error']}: {answer['text']}")
    return answer
