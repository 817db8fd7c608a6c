"""`terrapin vectors`: the wire protocol v1 test vectors, from an independent reference.

The vectors are built without the firmware code (cbor2, python-ecdsa,
pycryptodome; see tools/vectors/reference.py), so a bug shared by our own
modules cannot hide. This module renders them to files and checks them:

docs/vectors/valid.json    readings that every implementation must produce
                           byte for byte and accept (tools/vectors/valid.py)
docs/vectors/invalid.json  envelopes that must be rejected with `reason`
                           (the wire reason code's name, see docs/PROTOCOL.md;
                           tools/vectors/invalid.py)

Keys are fixed (derived from labels), so the output is deterministic:
`terrapin vectors --check` fails if the committed files differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.vectors.invalid import build_invalid
from terrapin.tools.vectors.reference import PROTECTED
from terrapin.tools.vectors.valid import build_valid

VECTORS_DIR = Path(__file__).resolve().parents[2] / "docs" / "vectors"
VERSION = 1


def render() -> dict[str, str]:
    """File name -> exact JSON text."""
    valid = {"version": VERSION, "protected": PROTECTED.hex(), "vectors": build_valid()}
    invalid = {"version": VERSION, "vectors": build_invalid()}
    return {
        "valid.json": json.dumps(valid, indent=2, ensure_ascii=False) + "\n",
        "invalid.json": json.dumps(invalid, indent=2, ensure_ascii=False) + "\n",
    }


def load(name: str, directory: Path = VECTORS_DIR) -> list[dict[str, Any]]:
    """The vectors of docs/vectors/<name>.json ("valid" or "invalid")."""
    return json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))["vectors"]


@click.command()
@click.option("--check", is_flag=True, help="Fail if the committed files differ.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=VECTORS_DIR,
    show_default=True,
    help="Where valid.json and invalid.json live.",
)
def vectors(check: bool, directory: Path) -> None:
    """Regenerate (or --check) the wire protocol v1 test vectors."""
    files = render()
    if check:
        stale = [
            name
            for name, text in files.items()
            if not (directory / name).exists()
            or (directory / name).read_text(encoding="utf-8") != text
        ]
        if stale:
            raise TerrapinError(
                f"test vectors out of date: {', '.join(stale)} in {directory}",
                hint="run `terrapin vectors` and commit the result",
            )
        click.echo(f"vectors up to date in {directory}")
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    valid, invalid = (len(json.loads(files[n])["vectors"]) for n in ("valid.json", "invalid.json"))
    click.echo(f"wrote {valid} valid and {invalid} invalid vectors to {directory}")
