"""Deploy a gateway's contracts on a JSON-RPC chain and write them into gateway.toml.

`deploy_network` deploys TerrapinRegistry, TerrapinAnchor and (optionally, through
the caller's function) TerrapinRewards with three roles kept apart (docs/CHAIN.md,
docs/REWARDS.md):

- the deployer pays for the deployment and holds no role afterwards, unless it is
  also the gateway or the admin;
- the gateway (hot key, runs with `terrapin gateway run`) gets GATEWAY_ROLE on the
  registry (it anchors) and ORACLE_ROLE on the rewards contract (it publishes roots);
- the admin (cold key; only its address is needed here) ends up with
  DEFAULT_ADMIN_ROLE on both: the registry is deployed with the deployer as its
  admin so that it can grant GATEWAY_ROLE, then hands the admin role over and
  renounces it.

`write_sections` puts the addresses into gateway.toml: it rewrites only the keys it
sets, inside their own sections (appending a section that is not there), keeps every
other line and comment, checks the result with the gateway's config loader and
replaces the file in one rename.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from terrapin.gateway.chain.node import ChainError, deploy, grant_gateway, transact
from terrapin.gateway.errors import ConfigError

_HEADER = re.compile(r"^\s*\[([A-Za-z0-9_.-]+)\]\s*(#.*)?$")


@dataclass
class Deployed:
    """What deploy_network made: addresses, roles, and the block to read events from."""

    registry: str
    anchor: str
    rewards: str | None = None
    admin: str = ""
    gateway: str = ""
    deployer: str = ""
    from_block: int = 0
    transactions: list[str] = field(default_factory=list)


def _send(w3: Web3, account: LocalAccount, call: Any) -> str:
    receipt = transact(w3, account, {"to": call.address, "data": call._encode_transaction_data()})
    return receipt["transactionHash"].to_0x_hex()


def deploy_network(
    w3: Web3,
    deployer: LocalAccount,
    *,
    admin: str,
    gateway: str,
    extra_gateways: tuple[str, ...] = (),
    rewards: Callable[[Web3, LocalAccount, str, str], Any] | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> Deployed:
    """Deploy the contracts; the gateway gets its roles, the admin gets the admin roles.

    `rewards(w3, deployer, admin, oracle)` deploys the rewards contract (it lives in
    terrapin.gateway.rewards.onchain, which depends on this package, not the reverse)."""
    admin, gateway = Web3.to_checksum_address(admin), Web3.to_checksum_address(gateway)
    if rewards is not None and admin == gateway:
        raise ChainError(
            f"the admin and the gateway (oracle) are the same key ({admin})",
            hint="keep the admin cold: --admin-key-env VAR or --admin ADDRESS of another key",
        )
    start = int(w3.eth.block_number)
    registry, anchor = deploy(w3, deployer)  # the deployer is the registry's first admin
    say(f"registry {registry.address}, anchor {anchor.address}")
    for address in dict.fromkeys((gateway, *extra_gateways)):
        grant_gateway(w3, deployer, registry, Web3.to_checksum_address(address))
        say(f"GATEWAY_ROLE granted to {address}")
    out = Deployed(
        registry.address, anchor.address, admin=admin, gateway=gateway, deployer=deployer.address
    )
    out.from_block = start + 1
    if admin != deployer.address:
        role = registry.functions.DEFAULT_ADMIN_ROLE().call()
        out.transactions.append(_send(w3, deployer, registry.functions.grantRole(role, admin)))
        call = registry.functions.renounceRole(role, deployer.address)
        out.transactions.append(_send(w3, deployer, call))
        say(f"registry admin handed to {admin}")
    if rewards is not None:
        contract = rewards(w3, deployer, admin, gateway)
        out.rewards = contract.address
        say(f"rewards {contract.address} (admin {admin}, oracle {gateway})")
    return out


def set_keys(text: str, sections: dict[str, dict[str, Any]]) -> str:
    """`text` with each section's keys set: a key line replaced in place, a missing key
    added at the end of its section, a missing section appended. Nothing else changes."""
    from terrapin.gateway.config import toml_value  # the one TOML writer (init uses it too)

    lines = text.splitlines()
    for name, keys in sections.items():
        starts = [i for i, line in enumerate(lines) if (m := _HEADER.match(line)) and m[1] == name]
        if len(starts) > 1:
            raise ConfigError(f"[{name}] appears {len(starts)} times in the config")
        if not starts:
            if lines and lines[-1].strip():
                lines.append("")
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
            continue
        begin = starts[0] + 1
        end = next((i for i in range(begin, len(lines)) if _HEADER.match(lines[i])), len(lines))
        last = begin - 1  # the section's last line that is not blank
        for i in range(begin, end):
            if lines[i].strip():
                last = i
        added: list[str] = []
        for key, value in keys.items():
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            found = [i for i in range(begin, end) if pattern.match(lines[i])]
            line = f"{key} = {toml_value(value)}"
            if found:
                lines[found[0]] = line
            else:
                added.append(line)
        lines[last + 1 : last + 1] = added
    return "\n".join(lines) + "\n"


def write_sections(
    path: Path,
    sections: dict[str, dict[str, Any]],
    check: Callable[[Any], None] | None = None,
) -> None:
    """Set keys in gateway.toml (see set_keys), checked first by the gateway's loader,
    the [chain] schema and `check(cfg)` (the caller's, e.g. for [rewards])."""
    from terrapin.gateway.config import parse_config

    try:
        old = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", hint="make it with `terrapin gateway init`"
        ) from None
    new = set_keys(old, sections)
    # A ConfigError from any of these leaves the file as it was.
    cfg = parse_config(new, path.resolve())
    if "chain" in cfg.sections:
        from terrapin.gateway.chain.node import ChainConfig

        ChainConfig.from_mapping(dict(cfg.section("chain")))
    if check is not None:
        check(cfg)
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gateway.toml.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
