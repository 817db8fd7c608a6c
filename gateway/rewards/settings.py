"""The [rewards] section of the gateway config, and what the rewards commands do with it.

The section holds the rule's parameters (epoch_seconds, budget, cap), the reward
contract's address (contract), the contract whose BoardBound events say who owns a
board (binding; default: the [chain] registry), where to start reading them
(from_block), where distribution files go (out_dir; default: `rewards/` beside the
database) and the rewards stage's loop period (poll_seconds). Used by the rewards
stage (stage.py) and by `terrapin rewards` (tools/cli/rewards.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terrapin.gateway.errors import ConfigError, TerrapinError
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.distribution import DistributionError
from terrapin.gateway.rewards.rule import RewardsError

REWARDS_KEYS = {
    "epoch_seconds",
    "budget",
    "cap",
    "contract",
    "binding",
    "from_block",
    "out_dir",
    "poll_seconds",  # the rewards stage's loop period (gateway/rewards/stage.py)
}
OWNER_KEY_ENV = "TERRAPIN_OWNER_KEY"


def rule_params(section: dict[str, Any]) -> rewards_store.Params:
    """The rule's parameters from a [rewards] section; ConfigError names a bad key."""
    unknown = sorted(set(section) - REWARDS_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown [rewards] key(s): {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(REWARDS_KEYS))}",
        )
    try:
        return rewards_store.Params.from_mapping(section)
    except (RewardsError, ValueError) as exc:
        raise ConfigError(f"[rewards]: {exc}") from None


class Settings:
    """What the rewards commands need from the config file and their options."""

    def __init__(self, config_path: str | None, db: str | None, out: str | None):
        from terrapin.gateway.config import default_path, load_config

        self.config = None
        path = Path(config_path) if config_path else default_path()
        if config_path or (db is None and path.exists()):
            self.config = load_config(path)
        section = dict(self.config.section("rewards")) if self.config else {}
        self.params = rule_params(section)
        if db is None and self.config is None:
            raise ConfigError(
                "no database: pass --db PATH or --config FILE",
                hint="the gateway config's [store] path is the database",
            )
        self.db = Path(db) if db else Path(self.config.store.path)
        self.contract = section.get("contract")
        self.chain = dict(self.config.section("chain")) if self.config else {}
        # Where BoardBound events come from: the registry (it inherits BoardBinding).
        self.binding = section.get("binding") or self.chain.get("registry")
        self.from_block = section.get("from_block", 0)
        if not isinstance(self.from_block, int) or self.from_block < 0:
            raise ConfigError("[rewards] from_block must be a block number >= 0")
        default_out = self.db.parent / "rewards"
        self.out_dir = Path(out or section.get("out_dir") or default_out)

    def chain_config(self):
        from terrapin.gateway.chain.node import ChainConfig

        return ChainConfig.from_mapping(self.chain)

    def rpc(self):
        """web3 for the configured JSON-RPC chain, or None for the embedded one."""
        from terrapin.gateway.chain.node import EMBEDDED, rpc_web3

        config = self.chain_config()
        if config.network == EMBEDDED:
            return None, config
        return rpc_web3(config.network, timeout=config.rpc_timeout, poa=config.poa), config

    def need_rpc(self, what: str):
        w3, config = self.rpc()
        if w3 is None:
            raise TerrapinError(
                f"{what} needs a JSON-RPC chain, and [chain] network is the embedded one",
                hint="the embedded chain lives inside the gateway process; "
                "set [chain] network to an http(s) URL",
            )
        if not self.contract:
            raise ConfigError(f"{what} needs [rewards] contract (the TerrapinRewards address)")
        return w3, config


def compute_epoch(settings: Settings, epoch: int) -> tuple[rewards_store.Computed, Path | None]:
    """Apply the rule through `epoch`, write and record the distribution file (if any).

    With a JSON-RPC chain, first syncs block times and bindings into the database."""
    if not settings.db.exists():
        raise TerrapinError(f"no database at {settings.db}")
    conn = rewards_store.connect(settings.db)
    try:
        w3, _config = settings.rpc() if settings.config else (None, None)
        chain_id = None
        if w3 is not None:
            from terrapin.gateway.rewards import onchain as rewards_chain

            binding = settings.binding
            reg = rewards_chain.binding_contract(w3, binding) if binding else None
            rewards_store.sync(conn, w3, reg, settings.from_block)
            chain_id = w3.eth.chain_id
        try:
            result = rewards_store.compute(
                conn, epoch, settings.params, chain_id=chain_id, contract=settings.contract
            )
        except rewards_store.MissingChainData as exc:
            raise TerrapinError(
                str(exc), hint="run the gateway (it syncs) or set [chain] network to a URL"
            ) from None
        path = None
        if result.distribution is not None:
            path = distribution.write(
                result.distribution, rewards_store.distribution_path(settings.out_dir, epoch)
            )
            rewards_store.record(conn, result.distribution, path)
    finally:
        conn.close()
    return result, path


def load_distribution(settings: Settings, epoch: int | None) -> distribution.Distribution:
    """Epoch `epoch`'s distribution file, or the latest one in out_dir."""
    if epoch is None:
        files = sorted(
            settings.out_dir.glob("epoch-*.json"),
            key=lambda p: int(p.stem.split("-")[1]) if p.stem.split("-")[1].isdigit() else -1,
        )
        if not files:
            raise TerrapinError(
                f"no distribution in {settings.out_dir}", hint="run rewards compute"
            )
        path = files[-1]
    else:
        path = rewards_store.distribution_path(settings.out_dir, epoch)
    try:
        return distribution.load(path)
    except DistributionError as exc:
        raise TerrapinError(
            str(exc), hint="run `terrapin rewards compute --epoch E` first"
        ) from None


def owner_account(keystore: str | None):
    """The owner's key: --keystore FILE (password in the environment) or $TERRAPIN_OWNER_KEY."""
    from terrapin.gateway.chain.node import ChainConfig, load_account

    account = load_account(ChainConfig(keystore=keystore, key_env=OWNER_KEY_ENV))
    if account is None:
        raise ConfigError(
            f"no owner key: pass --keystore FILE (password in $TERRAPIN_KEYSTORE_PASSWORD) "
            f"or set ${OWNER_KEY_ENV}",
            hint="keys are never taken from the command line",
        )
    return account


def write_manifest(settings: Settings, epoch: int) -> tuple[Path, bytes, str | None]:
    """`terrapin rewards manifest`: (file, hash, root) of epoch `epoch`'s manifest.

    An epoch already written is rebuilt from the database with its frozen cut-off and
    evidence, and must hash as recorded. Another one is built now, with the chain's latest
    block as its cut-off (a JSON-RPC chain past the epoch's end), and frozen."""
    from terrapin.gateway.rewards import ledger
    from terrapin.gateway.rewards.manifest import manifest_hash, to_bytes
    from terrapin.gateway.rewards.tables import address_bytes, gateway_keys

    if not settings.db.exists():
        raise TerrapinError(f"no database at {settings.db}")
    conn = rewards_store.connect(settings.db)
    try:
        ledger.ensure(conn)
        before = ledger.stored(conn, epoch)
        chain = cutoff = None
        if ledger.frozen(conn, epoch) is None:
            w3, config = settings.need_rpc("a manifest of an epoch not settled yet")
            binding = settings.binding
            registry = None
            if binding:
                from terrapin.gateway.rewards import onchain as rewards_chain

                registry = rewards_chain.binding_contract(w3, binding)
            rewards_store.sync(conn, w3, registry, settings.from_block)
            head = w3.eth.get_block("latest")
            end = (epoch + 1) * settings.params.epoch_seconds
            if int(head["timestamp"]) < end:
                raise TerrapinError(f"epoch {epoch} has not ended on chain yet (ends at {end})")
            if not config.anchor:
                raise ConfigError("a manifest needs [chain] anchor")
            chain = ledger.ChainRef(
                int(w3.eth.chain_id),
                address_bytes(config.anchor),
                address_bytes(binding) if binding else bytes(20),
                address_bytes(settings.contract),
                settings.from_block,
                gateway_keys(conn),
            )
            cutoff = (int(head["number"]), int(head["timestamp"]))
        try:
            m = ledger.build_manifest(conn, epoch, settings.params.rule(), chain, cutoff)
        except rewards_store.MissingChainData as exc:
            raise TerrapinError(str(exc), hint="run the gateway (it syncs)") from None
        path = ledger.manifest_path(settings.out_dir, epoch)
        digest = manifest_hash(to_bytes(m))
        if before is not None and before[1] != digest:
            raise TerrapinError(
                f"epoch {epoch}'s manifest rebuilt to hash 0x{digest.hex()}, "
                f"it was written as 0x{before[1].hex()}",
                hint="the database changed under a settled epoch (a reorg?)",
            )
        ledger.write(conn, m, path)
    finally:
        conn.close()
    return path, digest, None if m.root is None else "0x" + m.root.hex()


def manifest_for_publish(settings: Settings, dist: distribution.Distribution) -> bytes | None:
    """The hash of the manifest written for the distribution's epoch, to publish with its
    root (None if none was written); TerrapinError if the two disagree on the root."""
    from terrapin.gateway.rewards import ledger
    from terrapin.gateway.rewards.manifest import ManifestError, loads

    conn = rewards_store.connect(settings.db)
    try:
        ledger.ensure(conn)
        found = ledger.stored(conn, dist.epoch)
    finally:
        conn.close()
    if found is None:
        return None
    path, digest = found
    try:
        m = loads(path.read_bytes())
    except (OSError, ManifestError) as exc:
        raise TerrapinError(f"cannot read epoch {dist.epoch}'s manifest {path}: {exc}") from None
    if m.root != dist.root:
        raise TerrapinError(
            f"epoch {dist.epoch}: the manifest's root is not the distribution's",
            hint="run `terrapin rewards compute` and `terrapin rewards manifest` again",
        )
    return digest
