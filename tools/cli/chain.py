"""Deploy TerrapinRegistry + TerrapinAnchor on a real chain and print the [chain] section.

    TERRAPIN_KEYSTORE_PASSWORD=... python -m terrapin.tools.cli.chain \\
        --rpc https://sepolia.example --keystore ~/.terrapin/deployer.json [--gateway 0x..]

The key comes from --keystore (password in $TERRAPIN_KEYSTORE_PASSWORD) or from
$TERRAPIN_CHAIN_KEY; never from the command line. The deployer is the registry admin
(or --admin) and is granted GATEWAY_ROLE unless --gateway names other addresses.
--network-file FILE also writes what verifiers pin (`terrapin verify --network FILE`):
{"chain_id", "anchor", "registry"}, for the network to publish.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from web3 import Web3

from terrapin.gateway.chain.node import ChainConfig, deploy, grant_gateway, load_account, rpc_web3
from terrapin.gateway.errors import TerrapinError


def deploy_contracts(
    rpc: str, config: ChainConfig, *, admin: str | None = None, gateways: tuple[str, ...] = ()
) -> dict[str, str]:
    account = load_account(config)
    if account is None:
        raise TerrapinError(
            "no deployer key", hint=f"use --keystore or set ${config.key_env} in the environment"
        )
    w3 = rpc_web3(rpc, timeout=config.rpc_timeout, poa=config.poa)
    registry, anchor = deploy(w3, account, admin)
    if admin is None or Web3.to_checksum_address(admin) == account.address:
        for gateway in gateways or (account.address,):
            grant_gateway(w3, account, registry, Web3.to_checksum_address(gateway))
    return {"network": rpc, "registry": registry.address, "anchor": anchor.address}


@click.command()
@click.option("--rpc", required=True, help="JSON-RPC URL of the chain.")
@click.option("--keystore", type=click.Path(exists=True, dir_okay=False), help="Deployer keystore.")
@click.option("--admin", help="Registry admin (default: the deployer).")
@click.option("--gateway", "gateways", multiple=True, help="Address to grant GATEWAY_ROLE.")
@click.option("--poa", is_flag=True, help="The chain needs the PoA extraData middleware.")
@click.option(
    "--network-file",
    type=click.Path(dir_okay=False),
    help="Also write the network file verifiers pin (chain_id, anchor, registry).",
)
def deploy_cmd(
    rpc: str,
    keystore: str | None,
    admin: str | None,
    gateways: tuple,
    poa: bool,
    network_file: str | None,
) -> None:
    """Deploy the registry and the anchor; print the gateway's [chain] section."""
    config = ChainConfig(network=rpc, keystore=keystore, poa=poa, registry="-", anchor="-")
    out = deploy_contracts(rpc, config, admin=admin, gateways=gateways)
    click.echo("[chain]")
    for key, value in out.items():
        click.echo(f'{key} = "{value}"')
    if keystore:
        click.echo(f'keystore = "{keystore}"')
    if network_file:
        chain_id = rpc_web3(rpc, timeout=config.rpc_timeout, poa=poa).eth.chain_id
        trusted = {"chain_id": chain_id, "anchor": out["anchor"], "registry": out["registry"]}
        Path(network_file).write_text(json.dumps(trusted, indent=2) + "\n")


def main() -> int:
    try:
        deploy_cmd(standalone_mode=False)
    except TerrapinError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
