"""`terrapin device provision` and `terrapin device bind`: a board's key, config and owner.

provision writes the board's config, has the board make its key, registers it
with a gateway and optionally binds it to an owner; bind does only the on-chain
binding, with the board's own EIP-712 signature. The work is in
tools/board/provision.py; these are the commands around it.
"""

from __future__ import annotations

from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.cli.device_common import check_target, emit, open_link, port_options


# -- provision -------------------------------------------------------------------
@click.command()
@port_options
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON config to write (may hold secrets; never printed).",
)
@click.option("--wifi-ssid", help="WiFi network; the password comes from $TERRAPIN_WIFI_PASSWORD.")
@click.option("--broker", help="MQTT broker HOST[:PORT].")
@click.option("--mqtt-user", help="MQTT user; password from $TERRAPIN_MQTT_PASSWORD.")
@click.option("--ota-pubkey", help="Release public key the board trusts for updates (hex).")
@click.option(
    "--gateway-config",
    type=click.Path(dir_okay=False),
    help="Register with this gateway (allow-list + broker user; credentials go to the board).",
)
@click.option(
    "--gateway-db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Only allow-list the board in this gateway database.",
)
@click.option("--owner", help="Bind the board to this owner address (0x...).")
@click.option("--chain-id", type=int, help="Chain id of the registry (with --owner).")
@click.option("--contract", help="Registry contract address (with --owner).")
@click.option("--nonce", type=int, help="Binding nonce (default: read from the chain, else 0).")
@click.option("--rpc", help="JSON-RPC URL: send bindBoard there (with --owner).")
@click.option("--key-env", help="Env var holding the private key that pays for bindBoard.")
@click.option("--finish", is_flag=True, help="Leave provisioning mode afterwards.")
@click.option("--no-prompt", is_flag=True, help="Never prompt; secrets from the environment.")
@click.option("--json", "as_json", is_flag=True)
def provision(
    port,
    target,
    flash_dir,
    config_file,
    wifi_ssid,
    broker,
    mqtt_user,
    ota_pubkey,
    gateway_config,
    gateway_db,
    owner,
    chain_id,
    contract,
    nonce,
    rpc,
    key_env,
    finish,
    no_prompt,
    as_json,
) -> None:
    """Configure a board, make its key on the board, register and bind it."""
    from terrapin.tools.board import provision as prov
    from terrapin.tools.board.serialconsole import BoardConsole

    # Every input is checked here, before the board is touched.
    virtual = target == "unix"
    cfg = prov.build_config(config_file, wifi_ssid, broker, mqtt_user, ota_pubkey, not no_prompt)
    if cfg:
        source = str(config_file) if config_file is not None else "the board config"
        prov.check_config(cfg, source, "unix" if virtual else "esp32")
        prov.check_broker_host(cfg, virtual)
    binding = None
    submit = None
    if owner:
        if not contract:
            raise TerrapinError("--owner needs --contract (the registry) and --chain-id or --rpc")
        if rpc:
            chain, read_nonce, submit = prov.chain_binding(owner, contract, rpc, key_env)
            binding = prov.Binding(owner, chain_id or chain, contract, nonce)
            binding.read_nonce = read_nonce if nonce is None else None
        elif chain_id is None:
            raise TerrapinError("--owner needs --chain-id and --contract (the registry)")
        else:
            binding = prov.Binding(owner, chain_id, contract, nonce or 0)
    register = None
    if gateway_config:
        register = prov.register_with_gateway(gateway_config, virtual=virtual)
    elif gateway_db:
        register = prov.register_in_store(gateway_db)
    port = check_target(port, target, flash_dir)  # last: it may look for the port

    def say(text: str) -> None:
        if not as_json:
            click.echo(text)

    with open_link(port, target, flash_dir) as link:
        console = BoardConsole(link)
        try:
            result = prov.provision(
                console,
                config=cfg,
                register=register,
                binding=binding,
                finish=finish,
                say=say,
                submit=submit,
            )
        finally:
            console.leave_console_mode()  # the app runs again (docs/PROTOCOL.md section 11)
    emit(
        as_json,
        result.as_dict(),
        f"board {result.address}\npublic key {result.pubkey}"
        + ("".join(f"\nconfig: {p}" for p in result.config_problems)),
    )


# -- bind ------------------------------------------------------------------------
@click.command()
@port_options
@click.option("--owner", required=True, help="Bind the board to this owner address (0x...).")
@click.option("--rpc", help="JSON-RPC URL of the chain with the registry.")
@click.option("--contract", help="Registry address (default with --config: [chain] registry).")
@click.option("--key-env", help="Env var holding the private key that pays for bindBoard.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Gateway config: chain, registry and (without --key-env) the gateway's key.",
)
@click.option("--json", "as_json", is_flag=True)
def bind(port, target, flash_dir, owner, rpc, contract, key_env, config_path, as_json) -> None:
    """Bind a board to an owner on chain with the board's own signature (EIP-712).

    Reads the board's address, the registry's bindNonce, has the board sign the
    BindBoard digest (only in provisioning mode), checks that the signature recovers
    to the board, sends bindBoard and prints the transaction and the new owner.
    """
    from terrapin.gateway.rewards.rule import RewardsError, normalise_address
    from terrapin.tools.board import provision as prov
    from terrapin.tools.board.serialconsole import BoardConsole

    port = check_target(port, target, flash_dir)
    try:
        owner = normalise_address(owner)
    except RewardsError as exc:
        raise TerrapinError(f"--owner: {exc}") from None
    w3 = sender = None
    if config_path:
        w3, registry, sender = prov.chain_from_config(config_path, key_env)
        contract = contract or registry
    elif not rpc:
        raise TerrapinError(
            "which chain? pass --rpc URL --contract REGISTRY --key-env VAR, or --config FILE"
        )
    if not contract:
        raise TerrapinError("--rpc needs --contract (the registry address)")
    if not key_env and sender is None:
        raise TerrapinError(
            "no key to pay for bindBoard",
            hint="pass --key-env VAR with a funded account's private key in $VAR",
        )
    chain_id, read_nonce, submit = prov.chain_binding(
        owner, contract, rpc, key_env, w3=w3, sender=sender
    )
    binding = prov.Binding(owner, chain_id, contract, None, read_nonce)

    def say(text: str) -> None:
        if not as_json:
            click.echo(text)

    with open_link(port, target, flash_dir) as link:
        console = BoardConsole(link)
        try:
            addr = prov.board_address(console)
            say(f"board 0x{addr}")
            result = prov.bind_and_submit(console, addr, binding, submit, say)
        finally:
            console.leave_console_mode()
    result["board"] = "0x" + addr
    emit(
        as_json,
        result,
        f"board 0x{addr} is now owned by {result['chain']['owner']} "
        f"(tx {result['chain']['tx']}, block {result['chain']['block']}, nonce {result['nonce']})",
    )
