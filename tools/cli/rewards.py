"""`terrapin rewards`: compute, publish and claim reward distributions (docs/REWARDS.md).

    terrapin rewards compute [--epoch E | --date YYYY-MM-DD] [--db PATH] [--config FILE]
                             [--out DIR] [--json] [--raw]
    terrapin rewards publish --epoch E [--config FILE]
    terrapin rewards claim --owner ADDR [--keystore FILE] [--config FILE]

The [rewards] section of the gateway config (terrapin.gateway.rewards.settings)
holds the rule's parameters, the reward contract's address and where
distribution files go. With a JSON-RPC chain, compute first syncs block times
and bindings from the chain into the database.
publish and claim need a JSON-RPC chain: the embedded chain lives inside the
gateway process, which publishes there itself (see `terrapin demo`).
compute defaults to the last closed epoch (the one before the epoch the clock is in);
--date names the epoch holding 00:00 UTC of that day. Amounts are shown in tokens
("1,000 TRP", with the token's decimals); --raw shows base units for scripts.
Keys never come from the command line: publish signs with the gateway's chain
key ([chain] keystore or $TERRAPIN_CHAIN_KEY), claim with the owner's key
(--keystore FILE with its password in $TERRAPIN_KEYSTORE_PASSWORD, or
$TERRAPIN_OWNER_KEY).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from terrapin.gateway.chain.nodeerrors import with_node_errors
from terrapin.gateway.errors import ConfigError, TerrapinError
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.rule import RewardsError, normalise_address
from terrapin.gateway.rewards.settings import (
    Settings,
    compute_epoch,
    load_distribution,
    manifest_for_publish,
    owner_account,
)
from terrapin.tools.cli.verify import BundleFalse, NodeUnreachable, NotCheckedOnChain
from terrapin.tools.tokens import DECIMALS, SYMBOL, amount_text, tokens


def last_closed_epoch(epoch_seconds: int, now: float | None = None) -> int:
    """The newest epoch that has ended: the one before the epoch the clock is in."""
    current = int(time.time() if now is None else now) // epoch_seconds
    if current < 1:
        raise TerrapinError("no epoch has ended yet", hint="pass --epoch E")
    return current - 1


def epoch_of_date(day: datetime.datetime, epoch_seconds: int) -> int:
    """The epoch holding 00:00 UTC of `day` (with one-day epochs: that day's number)."""
    midnight = day.replace(tzinfo=datetime.UTC)
    return int(midnight.timestamp()) // epoch_seconds


def token_decimals(settings: Settings) -> int:
    """decimals() of the configured reward token when its chain answers; else 18."""
    try:
        w3, _config = settings.rpc() if settings.config and settings.contract else (None, None)
        if w3 is None:
            return DECIMALS
        from terrapin.gateway.rewards import onchain as rewards_chain

        return int(
            rewards_chain.rewards_contract(w3, settings.contract).functions.decimals().call()
        )
    except Exception:  # no chain here: the amounts are still right, in 18 decimals
        return DECIMALS


common = [
    click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="Gateway config."
    ),
    click.option(
        "--db", type=click.Path(dir_okay=False), help="Gateway database (overrides config)."
    ),
    click.option("--out", type=click.Path(file_okay=False), help="Distribution files directory."),
]


def with_common(fn):
    for option in reversed(common):
        fn = option(fn)
    return fn


@click.group()
def rewards() -> None:
    """Compute, publish and claim reward distributions (docs/REWARDS.md)."""


@rewards.command()
@click.option(
    "--epoch",
    type=click.IntRange(min=0),
    help="Epoch number (UTC day with the default epoch_seconds); default: the last closed one.",
)
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The epoch holding 00:00 UTC of this day (YYYY-MM-DD).",
)
@with_common
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--raw", is_flag=True, help="Amounts in base units, not tokens.")
@with_node_errors
def compute(epoch: int | None, day, config_path, db, out, as_json: bool, raw: bool) -> None:
    """Apply the reward rule through an epoch and write the cumulative distribution file."""
    settings = Settings(config_path, db, out)
    if epoch is not None and day is not None:
        raise click.UsageError("pass --epoch or --date, not both")
    if day is not None:
        epoch = epoch_of_date(day, settings.params.epoch_seconds)
    elif epoch is None:
        epoch = last_closed_epoch(settings.params.epoch_seconds)
        if not as_json:
            click.echo(f"epoch {epoch} (the last closed one; --epoch or --date for another)")
    result, path = compute_epoch(settings, epoch)  # a node that is down: with_node_errors
    if as_json:
        click.echo(json.dumps(compute_json(result, path), indent=2))
    else:
        print_compute(result, path, raw=raw, decimals=token_decimals(settings))


def compute_json(result: rewards_store.Computed, path: Path | None) -> dict[str, Any]:
    this = result.this_epoch
    dist = result.distribution
    return {
        "epoch": this.epoch,
        "root": None if dist is None else "0x" + dist.root.hex(),
        "total": "0" if dist is None else str(dist.total),
        "file": None if path is None else str(path),
        "boards": {
            b: {
                "readings": this.readings.get(b, 0),
                "flagged": this.flagged.get(b, 0),
                "weight": this.weights.get(b, 0),
                "amount": str(this.boards.get(b, 0)),
            }
            for b in sorted(set(this.readings) | set(this.flagged))
        },
        "owners": {
            o: {
                "epoch_amount": str(this.owners.get(o, 0)),
                "cumulative": str(c.amount),
            }
            for o, c in ({} if dist is None else dist.claims).items()
        },
        "unowned": str(this.unowned),
        "remainder": str(this.remainder),
    }


def print_compute(
    result: rewards_store.Computed,
    path: Path | None,
    *,
    raw: bool = False,
    decimals: int = DECIMALS,
) -> None:
    console = Console()
    unit = "base units" if raw else SYMBOL

    def amount(value: int) -> str:
        return str(int(value)) if raw else tokens(value, decimals)

    this = result.this_epoch
    boards = Table(title=f"Epoch {this.epoch}: boards")
    for name in ("board", "readings", "flagged", "counted", f"earned ({unit})"):
        boards.add_column(name, justify="left" if name == "board" else "right", no_wrap=True)
    for b in sorted(set(this.readings) | set(this.flagged)):
        boards.add_row(
            b,
            str(this.readings.get(b, 0)),
            str(this.flagged.get(b, 0)),
            str(this.weights.get(b, 0)),
            amount(this.boards.get(b, 0)),
        )
    console.print(boards)
    dist = result.distribution
    owners = Table(title=f"Owners through epoch {this.epoch}")
    for name in ("owner", f"this epoch ({unit})", f"cumulative ({unit})"):
        owners.add_column(name, justify="left" if name == "owner" else "right", no_wrap=True)
    for o, c in ({} if dist is None else dist.claims).items():
        owners.add_row(o, amount(this.owners.get(o, 0)), amount(c.amount))
    console.print(owners)
    console.print(
        f"unowned (paid to nobody): {amount(this.unowned)} {unit}; "
        f"rounding remainder: {amount(this.remainder)} {unit}"
    )
    if dist is None:
        console.print("nobody has earned anything yet: no distribution written")
    else:
        console.print(f"root 0x{dist.root.hex()}  total {amount(dist.total)} {unit}")
        console.print(f"wrote {path}")


@rewards.command()
@click.option("--epoch", type=click.IntRange(min=0), required=True)
@with_common
@with_node_errors
def publish(epoch: int, config_path, db, out) -> None:
    """Set EPOCH's distribution root on the reward contract (the oracle's key signs)."""
    from terrapin.gateway.chain.node import load_account
    from terrapin.gateway.rewards import onchain as rewards_chain

    settings = Settings(config_path, db, out)
    dist = load_distribution(settings, epoch)
    w3, config = settings.need_rpc("publish")
    account = load_account(config)
    if account is None:
        raise ConfigError("no oracle key: set [chain] keystore or $" + config.key_env)
    contract = rewards_chain.rewards_contract(w3, settings.contract)
    manifest = manifest_for_publish(settings, dist)  # its hash goes on chain with the root
    if manifest is None:
        click.echo(
            f"warning: no manifest written for epoch {epoch}: nobody can verify it "
            "(run `terrapin rewards manifest --epoch E` before publishing)",
            err=True,
        )
    receipt = rewards_chain.publish_root(w3, account, contract, dist, manifest or bytes(32))
    conn = rewards_store.connect(settings.db)
    try:
        rewards_store.record_published(conn, epoch, bytes(receipt["transactionHash"]))
    finally:
        conn.close()
    click.echo(
        f"published epoch {epoch} root 0x{dist.root.hex()} "
        f"(total {amount_text(dist.total, decimals=token_decimals(settings))}) in tx "
        f"{receipt['transactionHash'].to_0x_hex()} (gas {receipt['gasUsed']})"
    )


@rewards.command()
@click.option("--owner", required=True, help="Owner address (0x...): tokens go there.")
@click.option("--epoch", type=click.IntRange(min=0), help="Distribution to use (default latest).")
@click.option("--keystore", type=click.Path(dir_okay=False), help="Encrypted key of the sender.")
@with_common
@with_node_errors
def claim(owner: str, epoch: int | None, keystore, config_path, db, out) -> None:
    """Claim OWNER's earned and unclaimed tokens with the latest published distribution."""
    from terrapin.gateway.rewards import onchain as rewards_chain

    try:
        owner = normalise_address(owner)
    except RewardsError as exc:
        raise TerrapinError(str(exc)) from None
    settings = Settings(config_path, db, out)
    dist = load_distribution(settings, epoch)
    if owner not in dist.claims:
        raise TerrapinError(f"{owner} has nothing in the distribution of epoch {dist.epoch}")
    w3, _config = settings.need_rpc("claim")
    account = owner_account(keystore)
    contract = rewards_chain.rewards_contract(w3, settings.contract)
    published = contract.functions.epoch().call()
    if published != dist.epoch:
        raise TerrapinError(
            f"the contract's latest root is epoch {published}, the file is epoch {dist.epoch}",
            hint="claim with the distribution file of the published epoch",
        )
    receipt = rewards_chain.claim(w3, account, contract, dist, owner)
    paid = amount_text(dist.claims[owner].amount, decimals=token_decimals(settings))
    click.echo(
        f"claimed for {owner}: cumulative {paid}, tx "
        f"{receipt['transactionHash'].to_0x_hex()} (gas {receipt['gasUsed']})"
    )


# -- epoch manifests (issue 19): write one, verify one from the chain alone ---------------
@rewards.command()
@click.option("--epoch", type=click.IntRange(min=0), required=True, help="Epoch number.")
@with_common
def manifest(epoch: int, config_path, db, out) -> None:
    """Write EPOCH's manifest: every input and figure of its rewards (docs/REWARDS.md).

    An epoch already settled is rebuilt from the database to the same bytes (its cut-off
    and evidence are frozen); another one needs a JSON-RPC chain past the epoch's end."""
    from terrapin.gateway.rewards.settings import write_manifest

    path, digest, root = write_manifest(Settings(config_path, db, out), epoch)
    click.echo(f"wrote {path}")
    click.echo(f"manifest hash 0x{digest.hex()}  root {root}")


def _network_rewards(network: str | None) -> str | None:
    """The optional "rewards" address of a --network file (the network's TerrapinRewards)."""
    if network is None:
        return None
    try:
        value = json.loads(Path(network).read_text()).get("rewards")
    except (OSError, ValueError, AttributeError):
        return None  # _trust has already said what is wrong with the file
    return value if isinstance(value, str) else None


# `rewards verify` exits as `terrapin verify` does: one set of exit-code errors.
EpochFalse, EpochUnreachable, EpochOffline = BundleFalse, NodeUnreachable, NotCheckedOnChain


@rewards.command()
@click.option("--epoch", type=click.IntRange(min=0), required=True, help="Epoch number.")
@click.option("--rpc", help="JSON-RPC URL of the chain (without it: offline checks only).")
@click.option("--anchor", help="Address of the anchor contract you trust (the network's).")
@click.option(
    "--network",
    type=click.Path(dir_okay=False),
    help="JSON file the network publishes: chain_id, anchor, registry (what you trust).",
)
@click.option(
    "--rewards",
    "rewards_address",
    help="TerrapinRewards address you trust (the network's); without it, or a --network "
    'file with "rewards", nothing is verified (exit 3).',
)
@click.option(
    "--manifest",
    "source",
    help="Manifest file or URL (e.g. http://GATEWAY/api/rewards/epochs/E/manifest); "
    "default ./epoch-E.manifest.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def verify(
    epoch: int,
    rpc: str | None,
    anchor: str | None,
    network: str | None,
    rewards_address: str | None,
    source: str | None,
    as_json: bool,
) -> None:
    """Recompute EPOCH from its manifest and the chain: readings in anchored batches,
    bindings, flags, amounts, cumulative amounts, root and manifest hash, and that no
    reading was counted in an earlier epoch (their manifests, beside this one). Exit 0
    verified on chain, 1 a difference (the first one named), 2 unreachable or unreadable,
    3 not verified against what you trust (offline only, or the rewards contract not
    pinned)."""
    from terrapin.tools.cli.verify import _trust
    from terrapin.tools.rewardsverify import earlier_source, read_manifest, run
    from terrapin.tools.verifier import Trust, TrustError

    trust = _trust(anchor, network)
    if rpc and trust is None:
        raise TrustError(
            "refusing to check on chain without a trust statement: the manifest names its "
            "own contracts",
            hint="pass --anchor ADDRESS (the network's anchor) or --network FILE",
        )
    rewards_address = rewards_address or _network_rewards(network)
    pinned = Trust.address(rewards_address, "--rewards") if rewards_address else None
    source = source or f"epoch-{epoch}.manifest.json"
    data = read_manifest(source)
    history = earlier_source(source, epoch)
    checks = run(data, epoch, rpc=rpc, trust=trust, rewards=pinned, history=history)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks.items], indent=2))
    else:
        for c in checks.items:
            mark = click.style("✓", fg="green") if c.ok else click.style("✗", fg="red")
            click.echo(f"{mark} {c.name}: {c.detail}")
    if checks.unreachable:
        raise EpochUnreachable(f"cannot reach the node at {rpc}: {checks.unreachable}")
    failed = [c for c in checks.items if not c.ok]
    if failed:
        raise EpochFalse(f"epoch {epoch} does not verify: {failed[0].name}: {failed[0].detail}")
    if not checks.on_chain:
        raise EpochOffline(
            "the manifest is consistent, but NOTHING was checked on chain: not a verification",
            hint="pass --rpc URL with --anchor ADDRESS or --network FILE",
        )
    if pinned is None:  # a contract the oracle deployed itself would verify too
        raise EpochOffline(
            "the root was checked on the rewards contract the manifest names, which you "
            "did not pin: not a verification",
            hint="pass --rewards ADDRESS (the network's TerrapinRewards), or a --network "
            'file with "rewards"',
        )
    if not as_json:
        click.echo(f"  epoch {epoch} verified on chain against the anchor and rewards you trust")
