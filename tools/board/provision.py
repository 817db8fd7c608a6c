"""Provision a board over its serial console (TP1, see docs/HOBBYIST.md).

Steps: write the config (secrets go to the board and nowhere else: not the
terminal, not logs, not the answers), make the key on the board (never
overwriting one), read back the public key and address and check that they
belong together, register the board with the gateway, and optionally get
the board's proof-of-possession signature binding it to an owner.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from terrapin.gateway.errors import ConfigError, TerrapinError
from terrapin.gateway.protocol.address import address
from terrapin.gateway.protocol.errors import PublicKeyError
from terrapin.tools.board.serialconsole import BoardConsole, BoardError

CONFIG_CHUNK = 240  # raw config bytes per console line (fits a 512-byte UART buffer)


@dataclass
class Binding:
    owner: str
    chain_id: int
    contract: str
    nonce: int | None = 0
    read_nonce: Callable[[str], int] | None = None  # the chain's bindNonce(board)


@dataclass
class ProvisionResult:
    address: str
    pubkey: str
    key_created: bool
    config_keys: list[str] = field(default_factory=list)
    config_problems: list[str] = field(default_factory=list)
    gateway: str | None = None
    binding: dict | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def secret_input(env: str, prompt: str, interactive: bool) -> str:
    """A secret from $ENV, else typed at a hidden prompt; never echoed."""
    value = os.environ.get(env)
    if value is not None:
        return value
    missing = f"{prompt} is needed: set ${env} (or run in a terminal to type it)"
    if not interactive:
        raise ConfigError(missing)
    if sys.stdin is None or not sys.stdin.isatty():
        # No terminal: read a piped line, without getpass's "may be echoed" and a prompt
        # written to nobody; nothing there (/dev/null, cron) is the one-line error.
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if not line.strip():
            raise ConfigError(missing, hint="without a terminal nothing can be typed")
        return line.rstrip("\r\n")
    try:
        with warnings.catch_warnings():  # getpass warns when there is no terminal
            warnings.simplefilter("ignore")
            return click.prompt(prompt, hide_input=True)
    except click.exceptions.Abort:
        if sys.stdin is not None and sys.stdin.isatty():
            raise  # Ctrl-C at the prompt
        raise ConfigError(missing, hint="without a terminal nothing can be typed") from None


def check_config(cfg: dict, source: str, board: str = "esp32") -> None:
    """Refuse a config the board would refuse or misread, before anything is written:
    the firmware's own schema (terrapin.firmware.config), unknown keys included."""
    from terrapin.tools.board.hostconfig import host_problems

    problems = host_problems(cfg, board)
    if problems:
        raise ConfigError(
            f"{source}: " + "; ".join(problems),
            hint="nothing was written to the board; the keys are in "
            "firmware/config.example.json and docs/FIRMWARE.md",
        )


def check_broker_host(cfg: dict, virtual: bool) -> None:
    """On a real board 127.0.0.1 is the board itself: refuse a loopback broker."""
    from terrapin.gateway.home import is_loopback

    host = (cfg.get("broker") or {}).get("host")
    if virtual or not isinstance(host, str) or not is_loopback(host):
        return
    raise ConfigError(
        f"broker host {host} is the board itself on a real board",
        hint="set [broker] public_host to this machine's LAN address in gateway.toml "
        "(`terrapin gateway init --public-host HOST` writes it), or pass --broker HOST",
    )


def build_config(config_file, wifi_ssid, broker, mqtt_user, ota_pubkey, interactive) -> dict:
    cfg: dict = {}
    if config_file is not None:
        try:
            cfg = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as exc:
            raise TerrapinError(f"cannot read config {config_file}: {exc}") from exc
        if not isinstance(cfg, dict):
            raise TerrapinError(f"{config_file} must hold a JSON object")
    if wifi_ssid:
        cfg["wifi"] = {
            "ssid": wifi_ssid,
            "password": secret_input("TERRAPIN_WIFI_PASSWORD", "WiFi password", interactive),
        }
    if broker:
        host, _, port = broker.partition(":")
        cfg.setdefault("broker", {})["host"] = host
        if port:
            if not port.isdigit():
                raise TerrapinError(f"--broker {broker!r}: the port must be a number")
            cfg["broker"]["port"] = int(port)
    if mqtt_user:
        cfg.setdefault("broker", {})["user"] = mqtt_user
        cfg["broker"]["password"] = secret_input(
            "TERRAPIN_MQTT_PASSWORD", "MQTT password", interactive
        )
    if ota_pubkey:
        cfg["ota_pubkey"] = ota_pubkey
    return cfg


def address_of(pub_hex: str) -> str:
    try:
        return address(bytes.fromhex(pub_hex)).hex()
    except PublicKeyError:
        raise TerrapinError("the board sent a public key that is not 65 bytes 0x04||X||Y") from None


def send_config(console: BoardConsole, config: dict) -> dict:
    """config-begin / config-chunk / config-end: the board checks the SHA-256."""
    raw = json.dumps(config, separators=(",", ":")).encode()
    console.request("config-begin")
    for i in range(0, len(raw), CONFIG_CHUNK):
        console.request("config-chunk", base64.b64encode(raw[i : i + CONFIG_CHUNK]).decode())
    return console.request("config-end", hashlib.sha256(raw).hexdigest())


def provision(
    console: BoardConsole,
    *,
    config: dict | None = None,
    register: Callable[[str, str], dict] | None = None,
    binding: Binding | None = None,
    finish: bool = False,
    say: Callable[[str], None] = lambda s: None,
    submit: Callable[[str, dict], dict] | None = None,
) -> ProvisionResult:
    info = console.wait_ready()
    say(f"board answers: firmware {info.get('fw')}, console protocol {info.get('proto')}")
    keys, problems = list(info.get("config") or []), []
    if config:
        answer = send_config(console, config)
        keys, problems = answer.get("keys", []), answer.get("problems", [])
        say(f"config written ({len(keys)} keys: {', '.join(keys)})")
    made = console.request("keygen", timeout=30)
    pub, addr = made["pub"], made["addr"]
    if address_of(pub) != addr:
        raise TerrapinError("the board's address does not match its public key")
    say("made a new key on the board" if made["created"] else "the board already had a key")
    result = ProvisionResult(addr, pub, made["created"], keys, problems)
    if register is not None:
        reg = register(addr, pub)
        result.gateway = reg["text"]
        say(f"gateway: {result.gateway}")
        if reg.get("config"):
            # The broker credentials the gateway made go to the board only.
            answer = send_config(console, reg["config"])
            result.config_keys = answer.get("keys", [])
            result.config_problems = answer.get("problems", [])
            say("broker credentials written to the board")
    if binding is not None:
        result.binding = bind_and_submit(console, addr, binding, submit, say)
    if finish:
        console.request("done")
    return result


def bind(console: BoardConsole, addr: str, b: Binding) -> dict:
    """Ask the board to build and sign the EIP-712 BindBoard digest (it signs no digest
    a host hands it); check that the signature recovers to the board."""
    from terrapin.gateway.rewards import binding as rb

    nonce = b.read_nonce(addr) if b.read_nonce is not None else (b.nonce or 0)
    digest = rb.bind_digest(b.owner, nonce, b.chain_id, b.contract)
    owner, contract = b.owner.removeprefix("0x"), b.contract.removeprefix("0x")
    try:
        answer = console.request(
            "sign-bind", owner, str(nonce), str(b.chain_id), contract, timeout=60
        )
    except BoardError as exc:
        if exc.code != "DENIED":
            raise
        raise TerrapinError(
            f"the board refused to sign the binding: {exc.text}",
            hint="a board signs bind messages only in provisioning mode (before "
            "`device provision --finish`); a finished board must be wiped (TP1 `wipe "
            "<address>`) and provisioned again, which makes a new key",
        ) from exc
    if answer.get("digest") != digest.hex():
        raise TerrapinError(
            f"the board built the bind digest {answer.get('digest')}, not {digest.hex()}"
        )
    signature = bytes.fromhex(answer["sig"])
    try:
        rb.check_binding(addr, b.owner, nonce, b.chain_id, b.contract, signature)
    except rb.BindingError as exc:
        raise TerrapinError(f"the board's bind signature does not check: {exc}") from exc
    return {
        "owner": b.owner,
        "chain_id": b.chain_id,
        "contract": b.contract,
        "nonce": nonce,
        "digest": digest.hex(),
        "signature": signature.hex(),
    }


def bind_and_submit(
    console: BoardConsole,
    addr: str,
    binding: Binding,
    submit: Callable[[str, dict], dict] | None,
    say: Callable[[str], None] = lambda s: None,
) -> dict:
    """The board signs the binding (checked here), then `submit` sends bindBoard.

    Shared by `device provision --owner` and `device bind`."""
    result = bind(console, addr, binding)
    say(f"bind signature for owner {binding.owner} made by the board and checked")
    if submit is not None:
        result["chain"] = submit(addr, result)
        say(f"bound on chain in tx {result['chain']['tx']}")
    return result


def board_address(console: BoardConsole) -> str:
    """The board's address (40 hex digits) from `info`; it must already have its key."""
    info = console.wait_ready()
    addr = info.get("addr")
    if not addr:
        raise TerrapinError(
            "the board has no key yet", hint="run `terrapin device provision` first"
        )
    if info.get("pub") and address_of(info["pub"]) != addr:
        raise TerrapinError("the board's address does not match its public key")
    return addr


def key_from_env(key_env: str | None):
    """The LocalAccount that pays for bindBoard, from $key_env (never the command line)."""
    from eth_account import Account

    if not key_env or not os.environ.get(key_env):
        raise TerrapinError(
            "the bind signature is ready but no key to send it",
            hint="pass --key-env VAR with a funded account's private key in $VAR",
        )
    try:
        return Account.from_key(os.environ[key_env].strip())
    except (ValueError, TypeError):
        raise TerrapinError(f"${key_env} is not a 32-byte hex private key") from None


def chain_binding(
    owner: str,
    registry: str,
    rpc: str | None,
    key_env: str | None,
    *,
    w3=None,
    sender=None,
):
    """Binding parameters read from the chain (chain id, the board's bind nonce) and a
    submit(addr, binding_dict) that sends bindBoard and checks ownerOfBoard.

    The chain is `rpc` (a URL) or a ready `w3`; the payer is `sender`, else the key
    in $key_env (read only when the signature is ready to send)."""
    from web3 import Web3

    from terrapin.gateway.chain.node import rpc_web3
    from terrapin.gateway.rewards import onchain as rewards_chain

    try:
        w3 = w3 or rpc_web3(rpc)
        chain_id = w3.eth.chain_id
    except Exception as exc:
        from terrapin.gateway.chain.nodeerrors import node_down, unreachable

        if isinstance(exc, node_down()):  # one sentence, not urllib3's paragraph
            raise unreachable(rpc, exc) from None
        raise TerrapinError(f"cannot reach the chain at {rpc}: {exc}") from exc
    contract = rewards_chain.binding_contract(w3, registry)
    if not w3.eth.get_code(contract.address):
        raise TerrapinError(f"no registry contract at {contract.address} on chain {chain_id}")

    # The payer is checked now, before the board is touched: a key, and funds.
    payer = sender or key_from_env(key_env)
    if not int(w3.eth.get_balance(payer.address)):
        raise TerrapinError(
            f"the account paying for bindBoard ({payer.address}) has no funds on chain {chain_id}",
            hint="fund it, or pass --key-env VAR naming a funded account's key",
        )

    def nonce(addr: str) -> int:
        return contract.functions.bindNonce(Web3.to_checksum_address("0x" + addr)).call()

    def submit(addr: str, binding: dict) -> dict:
        from web3.exceptions import Web3Exception

        # A revert (forged or replayed signature, wrong owner) is a ChainError by name.
        try:
            receipt = rewards_chain.bind_board(
                w3, payer, contract, "0x" + addr, owner, bytes.fromhex(binding["signature"])
            )
        except (Web3Exception, OSError) as exc:  # the node refused or went away
            raise TerrapinError(f"bindBoard was not sent: {exc}") from None
        bound = contract.functions.ownerOfBoard(Web3.to_checksum_address("0x" + addr)).call()
        if bound.lower() != owner.lower():
            raise TerrapinError(f"bindBoard was mined but the board's owner is {bound}")
        return {
            "tx": receipt["transactionHash"].to_0x_hex(),
            "block": receipt["blockNumber"],
            "owner": bound.lower(),
        }

    return chain_id, nonce, submit


def chain_from_config(config_path: str, key_env: str | None):
    """(w3, registry, sender) for `device bind --config`: the gateway's JSON-RPC chain,
    its registry (or [rewards] binding) and, unless --key-env, the gateway's key."""
    from terrapin.gateway.chain.node import EMBEDDED, ChainConfig, load_account, rpc_web3
    from terrapin.gateway.config import load_config

    cfg = load_config(config_path)
    chain = ChainConfig.from_mapping(dict(cfg.section("chain")))
    if chain.network == EMBEDDED:
        raise TerrapinError(
            f"{config_path} uses the embedded chain, which lives inside the gateway process",
            hint="bind against a JSON-RPC chain: set [chain] network, or pass --rpc URL",
        )
    registry = dict(cfg.section("rewards")).get("binding") or chain.registry
    sender = None if key_env else load_account(chain)
    if sender is None and not key_env:
        raise TerrapinError(
            f"no key to send bindBoard: {config_path} has no [chain] keystore and "
            f"${chain.key_env} is not set",
            hint="or pass --key-env VAR with a funded account's private key in $VAR",
        )
    w3 = rpc_web3(chain.network, timeout=chain.rpc_timeout, poa=chain.poa)
    return w3, registry, sender


def register_in_store(db: Path) -> Callable[[str, str], dict]:
    """Allow-list the board in a gateway SQLite store (no broker user)."""

    def register(addr: str, pub: str) -> dict:
        from terrapin.gateway.store import Store

        store = Store(db)
        try:
            added = store.add_device(bytes.fromhex(addr), bytes.fromhex(pub))
        finally:
            store.close()
        return {"text": f"{'added to' if added else 'already in'} {db}"}

    return register


def register_with_gateway(
    config_path: str | None, label: str = "", *, virtual: bool = True
) -> Callable[[str, str], dict]:
    """What `terrapin device add` does (terrapin.gateway.allowlist), then the credentials
    go into the board's config instead of onto the terminal.

    The gateway config is read here, before the board is touched; for a board that is
    not `virtual`, a loopback broker address is refused (check_broker_host)."""
    from terrapin.gateway.config import load_config

    try:
        gateway_cfg = load_config(config_path)
    except ConfigError as exc:
        raise ConfigError(
            str(exc),
            hint="make one with `terrapin gateway init --dir DIR`, then pass "
            "--gateway-config DIR/gateway.toml",
        ) from None
    host = gateway_cfg.broker.public_host or gateway_cfg.mqtt.host
    check_broker_host({"broker": {"host": host}}, virtual)

    def register(addr: str, pub: str) -> dict:
        from terrapin.gateway import allowlist

        # A board provisioned again gets a new password, written to it right here
        # (so the rotation is never silent: the board in hand receives it).
        added = allowlist.add_board(
            config_path, bytes.fromhex(addr), bytes.fromhex(pub), label, rotate=True
        )
        cfg = added.cfg
        broker = {
            "host": cfg.broker.public_host or cfg.mqtt.host,
            "port": cfg.mqtt.port,
            "user": addr,
            "password": added.password,
        }
        if added.broker_user:
            made = (
                "broker user created" if added.new else "already allowed, broker password replaced"
            )
            text = f"allowed, {made} ({allowlist.reload_hint(cfg)})"
        else:
            broker.pop("user")
            broker.pop("password")
            text = ("allowed; " if added.new else "already allowed; ") + allowlist.reload_hint(cfg)
        return {"text": text, "config": {"broker": broker}}

    return register
