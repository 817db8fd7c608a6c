"""`terrapin chain deploy`: deploy the registry, the anchor and (--rewards) the rewards
contract on a JSON-RPC chain, and write the gateway's [chain] and [rewards] sections.

    terrapin chain deploy --rpc URL --key-env VAR [--rewards]
        [--admin-key-env VAR | --admin ADDRESS] [--oracle-key-env VAR]
        [--config gateway.toml [--enable-stages]] [--network-file FILE]

Keys come from environment variables (or --keystore FILE with its password in
$TERRAPIN_KEYSTORE_PASSWORD), never from the command line. --key-env names the
deployer's key (default $TERRAPIN_CHAIN_KEY): it pays. --oracle-key-env names the
gateway's hot key (default: the deployer's): GATEWAY_ROLE and ORACLE_ROLE go to it and
[chain] key_env names its variable. The admin (--admin-key-env, or --admin with only
the address of a cold key) gets the admin role of both contracts; with --rewards it
must be another key than the gateway's. With --config the sections are written into
that gateway.toml (everything else kept); without, they are printed.
--network-file FILE also writes what verifiers pin (`terrapin verify --network FILE`):
{"chain_id", "anchor", "registry"}. `python -m terrapin.tools.cli.chain OPTIONS` still
runs `terrapin chain deploy OPTIONS`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from terrapin.gateway.errors import ConfigError, TerrapinError

DEFAULT_KEY_ENV = "TERRAPIN_CHAIN_KEY"


@click.group()
def chain() -> None:
    """Deploy the contracts a gateway anchors to (docs/CHAIN.md)."""


def _address_from_env(var: str, what: str) -> str:
    from eth_account import Account

    key = os.environ.get(var)
    if not key:
        raise ConfigError(f"{what} key: ${var} is not set", hint="export it first (a hex key)")
    try:
        return Account.from_key(key).address
    except (ValueError, TypeError):
        raise ConfigError(f"${var} does not hold a private key (hex, 32 bytes)") from None


@chain.command()
@click.option("--rpc", required=True, help="JSON-RPC URL of the chain.")
@click.option("--key-env", help=f"Env var with the deployer's key (default ${DEFAULT_KEY_ENV}).")
@click.option("--keystore", type=click.Path(exists=True, dir_okay=False), help="Deployer keystore.")
@click.option("--admin-key-env", help="Env var with the admin's key (only its address is used).")
@click.option("--admin", help="Admin address (a cold key); default: the deployer.")
@click.option("--oracle-key-env", help="Env var with the gateway's key (default: the deployer's).")
@click.option("--gateway", "gateways", multiple=True, help="Also grant GATEWAY_ROLE to ADDRESS.")
@click.option("--rewards", is_flag=True, help="Also deploy TerrapinRewards.")
@click.option(
    "--epoch-seconds",
    type=click.IntRange(min=1),
    default=86_400,
    show_default=True,
    help="Reward epoch length (the contract's and [rewards] epoch_seconds).",
)
@click.option(
    "--budget", type=click.IntRange(min=0), default=1000, show_default=True, help="TRP per epoch."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write [chain] and [rewards] into this gateway.toml (other lines kept).",
)
@click.option("--enable-stages", is_flag=True, help="With --config: switch the chain stages on.")
@click.option("--poa", is_flag=True, help="The chain needs the PoA extraData middleware.")
@click.option(
    "--network-file",
    type=click.Path(dir_okay=False),
    help="Also write the network file verifiers pin (chain_id, anchor, registry).",
)
def deploy(
    rpc: str,
    key_env: str | None,
    keystore: str | None,
    admin_key_env: str | None,
    admin: str | None,
    oracle_key_env: str | None,
    gateways: tuple[str, ...],
    rewards: bool,
    epoch_seconds: int,
    budget: int,
    config_path: Path | None,
    enable_stages: bool,
    poa: bool,
    network_file: str | None,
) -> None:
    """Deploy the contracts, grant the roles, write or print the config sections."""
    from web3 import Web3
    from web3.exceptions import Web3Exception

    from terrapin.gateway.chain.deploy import deploy_network, write_sections
    from terrapin.gateway.chain.node import ChainConfig, load_account, rpc_web3

    if admin and admin_key_env:
        raise click.UsageError("pass --admin or --admin-key-env, not both")
    if enable_stages and config_path is None:
        raise click.UsageError("--enable-stages needs --config")
    if config_path is not None and not config_path.exists():
        raise ConfigError(
            f"no gateway config at {config_path}",
            hint="make one with `terrapin gateway init --dir DIR` first",
        )
    key_env = key_env or DEFAULT_KEY_ENV
    config = ChainConfig(network=rpc, keystore=keystore, key_env=key_env, poa=poa)
    deployer = load_account(config)
    if deployer is None:
        raise TerrapinError(
            "no deployer key", hint=f"use --keystore or set ${key_env} in the environment"
        )
    if admin_key_env:
        admin = _address_from_env(admin_key_env, "admin")
    gateway = _address_from_env(oracle_key_env, "gateway") if oracle_key_env else deployer.address
    w3 = rpc_web3(rpc, timeout=config.rpc_timeout, poa=poa)
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:  # requests' and web3's connection errors alike
        from terrapin.gateway.chain.nodeerrors import unreachable

        raise unreachable(rpc, exc) from None
    if not int(w3.eth.get_balance(deployer.address)):
        raise TerrapinError(
            f"the deployer {deployer.address} has no funds on chain {chain_id}",
            hint="fund it (a faucet on a testnet), or name another key with --key-env",
        )

    def deploy_rewards(w3: Any, deployer: Any, admin: str, oracle: str) -> Any:
        from terrapin.gateway.rewards.onchain import deploy_rewards as deploy_token

        return deploy_token(
            w3,
            deployer,
            admin=admin,
            oracle=oracle,
            epoch_seconds=epoch_seconds,
            epoch_cap=budget * 10**18,
        )

    try:
        done = deploy_network(
            w3,
            deployer,
            admin=Web3.to_checksum_address(admin) if admin else deployer.address,
            gateway=gateway,
            extra_gateways=tuple(Web3.to_checksum_address(g) for g in gateways),
            rewards=deploy_rewards if rewards else None,
            say=lambda text: click.echo(text, err=True),
        )
    except (Web3Exception, OSError) as exc:  # the node refused a transaction or went away
        raise TerrapinError(f"deployment stopped: {exc}") from None
    if not int(w3.eth.get_balance(gateway)):
        click.echo(f"note: the gateway {gateway} has no funds to pay for anchors", err=True)
    sections = config_sections(done, rpc, oracle_key_env or key_env, keystore, poa)
    if rewards:
        sections["rewards"] = {
            "contract": done.rewards,
            "epoch_seconds": epoch_seconds,
            "budget": str(budget * 10**18),
            "from_block": done.from_block,
        }
    if config_path is not None:
        if enable_stages:
            stages = ["batch", "anchor", *(["rewards"] if rewards else [])]
            sections["pipeline"] = {"stages": stages}
        write_sections(config_path, sections, check=check_rewards)
        names = ", ".join(f"[{name}]" for name in sections)
        click.echo(f"wrote {names} into {config_path}")
    else:
        for name, keys in sections.items():
            click.echo(f"[{name}]")
            for key, value in keys.items():
                click.echo(f"{key} = {json.dumps(value)}")
    if network_file:
        trusted = {"chain_id": chain_id, "anchor": done.anchor, "registry": done.registry}
        Path(network_file).write_text(json.dumps(trusted, indent=2) + "\n")


def check_rewards(cfg: Any) -> None:
    from terrapin.gateway.rewards.settings import rule_params

    rule_params(dict(cfg.section("rewards")))


def config_sections(
    done: Any, rpc: str, key_env: str, keystore: str | None, poa: bool
) -> dict[str, dict[str, Any]]:
    """The [chain] section the gateway runs with: where, which contracts, whose key."""
    section: dict[str, Any] = {"network": rpc, "registry": done.registry, "anchor": done.anchor}
    if keystore and done.gateway == done.deployer:
        section["keystore"] = keystore
    else:
        section["key_env"] = key_env
    if poa:
        section["poa"] = True
    return {"chain": section}


if __name__ == "__main__":
    from terrapin.tools.cli.main import main

    sys.exit(main(["chain", "deploy", *sys.argv[1:]]))
