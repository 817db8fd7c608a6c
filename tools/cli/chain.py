"""`terrapin chain deploy`: deploy TerrapinRegistry + TerrapinAnchor on a real chain
and print the gateway's [chain] section.

    TERRAPIN_KEYSTORE_PASSWORD=... terrapin chain deploy \\
        --rpc https://sepolia.example --keystore ~/.terrapin/deployer.json [--gateway 0x..]

The key comes from --keystore (password in $TERRAPIN_KEYSTORE_PASSWORD) or from
$TERRAPIN_CHAIN_KEY; never from the command line. The deployer is the registry admin
(or --admin) and is granted GATEWAY_ROLE unless --gateway names other addresses.
`python -m terrapin.tools.cli.chain OPTIONS` still runs `terrapin chain deploy OPTIONS`.
"""

from __future__ import annotations

import sys

import click

from terrapin.gateway.chain.node import ChainConfig, deploy_contracts


@click.group()
def chain() -> None:
    """Deploy the contracts a gateway anchors to (docs/CHAIN.md)."""


@chain.command()
@click.option("--rpc", required=True, help="JSON-RPC URL of the chain.")
@click.option("--keystore", type=click.Path(exists=True, dir_okay=False), help="Deployer keystore.")
@click.option("--admin", help="Registry admin (default: the deployer).")
@click.option("--gateway", "gateways", multiple=True, help="Address to grant GATEWAY_ROLE.")
@click.option("--poa", is_flag=True, help="The chain needs the PoA extraData middleware.")
def deploy(rpc: str, keystore: str | None, admin: str | None, gateways: tuple, poa: bool) -> None:
    """Deploy the registry and the anchor; print the gateway's [chain] section."""
    config = ChainConfig(network=rpc, keystore=keystore, poa=poa, registry="-", anchor="-")
    out = deploy_contracts(rpc, config, admin=admin, gateways=gateways)
    click.echo("[chain]")
    for key, value in out.items():
        click.echo(f'{key} = "{value}"')
    if keystore:
        click.echo(f'keystore = "{keystore}"')


if __name__ == "__main__":
    from terrapin.tools.cli.main import main

    sys.exit(main(["chain", "deploy", *sys.argv[1:]]))
