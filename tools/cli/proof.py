"""`terrapin proof DEVICE SEQ`: write the proof bundle of one stored, anchored reading.

The bundle (made by terrapin.gateway.chain.proof; format in
terrapin.gateway.chain.bundle and docs/PROTOCOL.md) carries everything
`terrapin verify` needs without this gateway's database.
"""

from __future__ import annotations

from pathlib import Path

import click

from terrapin.gateway.chain.proof import make_bundle
from terrapin.gateway.errors import TerrapinError


def parse_device(text: str) -> bytes:
    raw = text[2:] if text.lower().startswith("0x") else text
    try:
        device = bytes.fromhex(raw)
    except ValueError:
        device = b""
    if len(device) != 20:
        raise TerrapinError(f"device {text!r} is not a 20-byte hex address")
    return device


@click.command()
@click.argument("device")
@click.argument("seq", type=click.IntRange(min=0))
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    help="Gateway database: a file or a postgresql:// URL (default: the gateway config's store).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def proof(device: str, seq: int, db_path: str | None, out: str | None) -> None:
    """Write the proof bundle (JSON) for reading SEQ of board DEVICE."""
    if db_path is None:
        db_path = _default_db()
    text = make_bundle(db_path, parse_device(device), seq).dumps()
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


def _default_db() -> str:
    try:
        from terrapin.gateway.config import load_config
        from terrapin.gateway.pgsql import store_location

        return store_location(load_config())  # [store] url (PostgreSQL) or the file
    except Exception as exc:
        raise TerrapinError(
            f"no --db given and the gateway config gives none ({exc})", hint="pass --db PATH"
        ) from None
