"""`terrapin gateway backup DEST` and `terrapin gateway restore SRC`.

A backup is a folder (mode 0700, every file 0600 from creation):

    manifest.json   format, time, the source home, schema version, counts, files + sha256
    home/...        files that lived inside the gateway's home, by their path in it
    abs/...         files that lived elsewhere (/var/lib/terrapin/gateway.db), by full path

The database is copied with SQLite's online backup API in one step: one read
transaction, so one consistent snapshot, taken while the gateway goes on writing
(WAL readers never block the writer). A plain file copy of a live WAL database can
miss committed transactions or tear pages; this never does. Everything committed
(and so acked) before the backup started is in it.

Restore checks the backup first (checksums, SQLite quick_check), refuses a home
whose gateway runs (the instance lock, instancelock.py) and holds that lock while
it writes, so no gateway starts on a half-restored home. Existing files are kept
beside the new ones as `<name>.bak-<time>` (only with `force`). An older backup is
upgraded by the store's migrations when the gateway next opens it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from terrapin.gateway import mosquitto_conf, secretfile
from terrapin.gateway.config import load_config, parse_config
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.home import OTA_SECRET
from terrapin.gateway.instancelock import InstanceLock, InstanceLocked, holder

FORMAT = 1
MANIFEST = "manifest.json"
_BROKER_READS = ("broker.password_file", "broker.acl_file", "mosquitto.conf")
_TEXT_RELOCATED = ("config", "mosquitto.conf")  # files that name the home's own path


class BackupError(TerrapinError):
    """A backup cannot be written, or a folder is not a usable backup."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stored_name(path: Path, home: Path) -> str:
    try:
        return "home/" + path.relative_to(home).as_posix()
    except ValueError:
        return "abs" + path.as_posix()


def _files_of(cfg, home: Path) -> list[tuple[str, Path]]:
    """(role, path) of every file a gateway home needs besides its database."""
    files = [("config", Path(cfg.path))]
    for role, value in (
        ("mqtt.password_file", cfg.mqtt.password_file),
        ("broker.password_file", cfg.broker.password_file),
        ("broker.acl_file", cfg.broker.acl_file),
    ):
        if value:
            files.append((role, Path(value)))
    for role, path in (
        ("ota.secret", home / OTA_SECRET),
        ("mosquitto.conf", home / "mosquitto" / "mosquitto.conf"),
    ):
        if path.exists():
            files.append((role, path))
    keystore = cfg.section("chain").get("keystore")
    if keystore:
        path = Path(keystore).expanduser()
        files.append(("chain.keystore", path if path.is_absolute() else home / path))
    return files


def _snapshot_db(src: Path, dst: Path) -> dict:
    """The online backup of `src` into the new file `dst` (0600); its counts."""
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    source = sqlite3.connect(str(src), timeout=30)
    target = sqlite3.connect(str(dst))
    try:
        source.backup(target)  # pages=-1: one step, one read transaction, one snapshot
        target.execute("PRAGMA journal_mode=DELETE")  # self-contained: no -wal beside it
        check = target.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the database copy fails SQLite's quick_check: {check}")
        return _counts(target)
    finally:
        target.close()
        source.close()


def _counts(conn: sqlite3.Connection) -> dict:
    def one(sql: str) -> int:
        try:
            return int(conn.execute(sql).fetchone()[0] or 0)
        except sqlite3.OperationalError:  # a table that does not exist yet
            return 0

    return {
        "schema_version": one("PRAGMA user_version"),
        "readings": one("SELECT COUNT(*) FROM readings"),
        "last_reading_id": one("SELECT MAX(id) FROM readings"),
        "batches": one("SELECT COUNT(*) FROM batches"),
        "chain_txs": one("SELECT COUNT(*) FROM chain_txs"),
    }


def backup_home(
    config_path: str | Path | None, dest: str | Path, *, say: Callable[[str], None] = print
) -> dict:
    """Write a backup of the gateway home of `config_path` into the new folder `dest`."""
    cfg = load_config(config_path)
    home = Path(cfg.path).parent
    out = Path(dest).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty folder", hint="give a new DEST")
    db = Path(cfg.store.path)
    if not db.exists():
        raise BackupError(f"no database at {db}", hint="is [store] path right?")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    manifest: dict = {"format": FORMAT, "created_at": time.time(), "home": str(home), "files": []}
    size = sum(os.path.getsize(f"{db}{s}") for s in ("", "-wal") if os.path.exists(f"{db}{s}"))
    say(f"copying database {db} ({size / 1e6:.1f} MB, online backup while the gateway runs)")
    t0 = time.monotonic()
    name = _stored_name(db, home)
    manifest["counts"] = _snapshot_db(db, out / name)
    manifest["files"].append({"role": "database", "path": str(db), "name": name})
    counts = manifest["counts"]
    say(
        f"  {counts['readings']} readings, {counts['batches']} batches, "
        f"schema version {counts['schema_version']}, in {time.monotonic() - t0:.1f} s"
    )
    for role, path in _files_of(cfg, home):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BackupError(f"cannot read {role} {path}: {exc.strerror}") from None
        name = _stored_name(path, home)
        (out / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secretfile.write_secret(out / name, data, replace=False)
        manifest["files"].append({"role": role, "path": str(path), "name": name})
        say(f"  {role}: {path}")
    for entry in manifest["files"]:
        entry["sha256"] = _sha256(out / entry["name"])
    secretfile.write_secret(out / MANIFEST, json.dumps(manifest, indent=2) + "\n", replace=False)
    say(f"backup written to {out} (mode 0700; it holds the broker secrets: keep it safe)")
    return manifest


def read_manifest(src: str | Path) -> dict:
    """The manifest of backup folder `src`, after checking every file's checksum."""
    folder = Path(src).resolve()
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{folder} is not a gateway backup ({MANIFEST}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: backup format {manifest.get('format')!r}, known {FORMAT}")
    for entry in manifest["files"]:
        name = entry["name"]
        if ".." in Path(name).parts or not name.startswith(("home/", "abs/")):
            raise BackupError(f"{folder}: bad file name {name!r} in {MANIFEST}")
        path = folder / name
        if not path.is_file() or _sha256(path) != entry["sha256"]:
            raise BackupError(f"{folder}: {name} is missing or damaged (checksum)")
    return manifest


def _check_db(path: Path) -> None:
    """SQLite's quick_check on the backed-up database, opened read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        check = str(exc)
    finally:
        conn.close()
    if check != "ok":
        raise BackupError(f"{path}: the backed-up database is damaged ({check})")


def _target(entry: dict, home: Path) -> Path:
    """Where a backed-up file goes: inside the new home, or back to its full path."""
    name = entry["name"]
    return home / name.removeprefix("home/") if name.startswith("home/") else Path(name[3:])


def restore_home(src: str | Path, directory: str | Path, *, force: bool = False) -> list[str]:
    """Restore backup `src` into the stopped gateway home `directory`."""
    folder = Path(src).resolve()
    manifest = read_manifest(folder)
    old_home, home = Path(manifest["home"]), Path(directory).resolve()
    entries = {e["role"]: e for e in manifest["files"]}
    if "config" not in entries or "database" not in entries:
        raise BackupError(f"{folder}: the backup has no config or no database")
    _check_db(folder / entries["database"]["name"])
    config_text = _relocated((folder / entries["config"]["name"]).read_text(), old_home, home)
    cfg = parse_config(config_text, home / "gateway.toml")
    db = Path(cfg.store.path)
    pid = holder(db)
    if pid is not None:
        raise InstanceLocked(
            f"the gateway with pid {pid} runs on {db}: not restoring over a live home",
            hint="stop it first (systemctl stop terrapin-gateway), then restore",
        )
    targets = {role: _target(e, home) for role, e in entries.items()}
    targets["config"] = home / "gateway.toml"
    targets["database"] = db
    existing = [p for p in targets.values() if p.exists()]
    if existing and not force:
        raise BackupError(
            f"{home} already has a gateway ({', '.join(p.name for p in existing)})",
            hint="restore into an empty home, or --force (the existing files are kept "
            "as <name>.bak-<time>)",
        )
    lines: list[str] = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with InstanceLock(db).acquire("restore"):  # no gateway starts on a half-restored home
        for role, path in targets.items():
            if path.exists():
                for suffix in ("", "-wal", "-shm") if role == "database" else ("",):
                    old = Path(f"{path}{suffix}")
                    if old.exists():
                        old.rename(old.with_name(f"{old.name}.bak-{stamp}"))
                lines.append(f"kept the old {path} as {path.name}.bak-{stamp}")
            data = (folder / entries[role]["name"]).read_bytes()
            if role in _TEXT_RELOCATED:
                data = _relocated(data.decode(), old_home, home).encode()
            path.parent.mkdir(parents=True, exist_ok=True)
            # The broker reads these after it drops to its own user: open them to its group.
            group = mosquitto_conf.broker_group() if role in _BROKER_READS else None
            secretfile.write_secret(path, data, group=group)
            lines.append(f"restored {role}: {path}")
        if targets.get("mosquitto.conf"):
            mosquitto_conf.make_data_dir(targets["mosquitto.conf"].parent / "data")
    counts = manifest.get("counts", {})
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(manifest["created_at"]))
    lines.append(
        f"restored the backup of {made}: {counts.get('readings', '?')} readings, "
        f"{counts.get('batches', '?')} batches"
    )
    lines.append(f"next: terrapin gateway run --config {home / 'gateway.toml'}")
    return lines


def _relocated(text: str, old_home: Path, home: Path) -> str:
    """A config file that named the old home's folder names the new one."""
    if old_home == home:
        return text
    return text.replace(f"{old_home}/", f"{home}/")
