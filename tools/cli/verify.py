"""`terrapin verify BUNDLE [--rpc URL (--anchor ADDRESS | --network FILE)]`: check a
proof bundle without the gateway.

The checks are the bundle verifier's (tools/verifier.py); this prints a tick or the
reason each failed. Exit codes a script can use (docs/CHAIN.md):
  0  verified, on chain too, against the anchor you trust
  1  the bundle is false (a check failed)
  2  the node is unreachable, or the bundle or trust statement cannot be read or used
  3  the offline checks passed but nothing was checked on chain: not a verification
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from terrapin.gateway.chain import bundle
from terrapin.gateway.errors import TerrapinError
from terrapin.tools.verifier import Trust, TrustError, describe, run_checks

OFFLINE = (
    "offline checks passed, but NOTHING was checked on chain: this root may never have "
    "been anchored, so the reading is not verified"
)


class BundleFalse(TerrapinError):
    exit_code = 1


class NodeUnreachable(TerrapinError):
    exit_code = 2


class NotCheckedOnChain(TerrapinError):
    exit_code = 3


def _trust(anchor: str | None, network: str | None) -> Trust | None:
    trust = Trust.from_network_file(network) if network else None
    if anchor:
        pinned = Trust.address(anchor, "--anchor")
        if trust is not None and trust.anchor != pinned:
            raise TrustError(f"--anchor {anchor} is not the anchor of --network {network}")
        trust = trust or Trust(anchor=pinned)
    return trust


@click.command()
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--rpc", help="JSON-RPC URL of the chain: also check the anchor on chain.")
@click.option("--anchor", help="Address of the anchor contract you trust (the network's).")
@click.option(
    "--network",
    type=click.Path(dir_okay=False),
    help="JSON file the network publishes: chain_id, anchor, registry (what you trust).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def verify(
    bundle_file: str, rpc: str | None, anchor: str | None, network: str | None, as_json: bool
) -> None:
    """Check a proof bundle: signature, digest, leaf, proof and (with --rpc and a trust
    statement) the anchor on chain. Exit 0 verified on chain, 1 false, 2 unreachable or
    unreadable, 3 offline checks only."""
    try:
        data = bundle.parse_json(Path(bundle_file).read_text())
    except (OSError, ValueError) as exc:
        raise TerrapinError(f"cannot read {bundle_file} as JSON: {exc}", exit_code=2) from None
    trust = _trust(anchor, network)
    checks = run_checks(data, rpc, trust=trust)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks.items], indent=2))
    else:
        for c in checks.items:
            mark = click.style("✓", fg="green") if c.ok else click.style("✗", fg="red")
            click.echo(f"{mark} {c.name}: {c.detail}")
    if checks.unreachable:
        raise NodeUnreachable(f"cannot reach the node at {rpc}: {checks.unreachable}")
    failed = [c.name for c in checks.items if not c.ok]
    if failed:
        raise BundleFalse(f"bundle does not verify: {', '.join(failed)}")
    if not checks.on_chain:
        if not as_json:
            click.echo(f"  {OFFLINE}")
            _say_what(
                "What the bundle claims (signed by the board; the anchor NOT checked):", checks
            )
        raise NotCheckedOnChain(
            OFFLINE, hint="pass --rpc URL with --anchor ADDRESS or --network FILE"
        )
    if not as_json:
        click.echo(f"  verified on chain against the anchor you trust (0x{trust.anchor.hex()})")
        _say_what("What this bundle proves:", checks)


def _say_what(heading: str, checks) -> None:
    """The reading in words (board, seq, time, records, anchor) after the checks."""
    lines = describe(checks)
    if lines:
        click.echo("")
        click.echo(heading)
        for line in lines:
            click.echo(f"  {line}")
