"""`terrapin chain deploy`: deploy TerrapinRegistry + TerrapinAnchor on a real chain
and print the gateway's [chain] section.

    TERRAPIN_KEYSTORE_PASSWORD=... terrapin chain deploy \\
        --rpc https://sepolia.example --keystore ~/.terrapin/deployer.json [--gateway 0x..]

The key comes from --keystore (password in $TERRAPIN_KEYSTORE_PASSWORD) or from
$TERRAPIN_CHAIN_KEY; never from the command line. The deployer is the registry admin
(or --admin) and is granted GATEWAY_ROLE unless --gateway names other addresses.
`python -m terrapin.tools.cli.chain OPTIONS` still runs `terrapin chain deploy OPTIONS`.
--network-file FILE also writes what verifiers pin (`terrapin verify --network FILE`):
{"chain_id", "anchor", "registry"}, for the network to publish.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from terrapin.gateway.chain.node import ChainConfig, deploy_contracts, rpc_web3


@click.group()
def chain() -> None:
    """Deploy the contracts a gateway anchors to (docs/CHAIN.md)."""


@chain.command()
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
def deploy(
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


if __name__ == "__main__":
    from terrapin.tools.cli.main import main

    sys.exit(main(["chain", "deploy", *sys.argv[1:]]))
