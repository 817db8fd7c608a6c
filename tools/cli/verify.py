"""`terrapin verify BUNDLE [--rpc URL]`: check a proof bundle without the gateway.

The checks are the bundle verifier's (tools/verifier.py); this prints a tick or
the reason each failed, and fails (exit code 1) unless all pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from terrapin.gateway.chain import bundle
from terrapin.gateway.errors import TerrapinError
from terrapin.tools.verifier import run_checks


@click.command()
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(exists=True, dir_okay=False))
@click.option("--rpc", help="JSON-RPC URL of the chain the bundle names: also check the anchor.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def verify(bundle_file: str, rpc: str | None, as_json: bool) -> None:
    """Check a proof bundle: signature, digest, leaf, proof and (with --rpc) the anchor."""
    try:
        data = bundle.parse_json(Path(bundle_file).read_text())
    except (OSError, ValueError) as exc:
        raise TerrapinError(f"cannot read {bundle_file} as JSON: {exc}") from None
    checks = run_checks(data, rpc)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks.items], indent=2))
    else:
        for c in checks.items:
            mark = click.style("✓", fg="green") if c.ok else click.style("✗", fg="red")
            click.echo(f"{mark} {c.name}: {c.detail}")
        if not rpc:
            click.echo("  (offline: pass --rpc URL to check the anchor on chain)")
    failed = [c.name for c in checks.items if not c.ok]
    if failed:
        raise TerrapinError(f"bundle does not verify: {', '.join(failed)}")
