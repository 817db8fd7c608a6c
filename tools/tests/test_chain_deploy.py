"""`terrapin chain deploy` end to end on anvil: deploy registry, anchor and rewards with
separate deployer, admin and gateway (oracle) keys, write them into gateway.toml, run the
gateway with every stage, a board's readings anchored, an epoch published, its owner
claims with `terrapin rewards claim`. And the section writer keeps everything else."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from terrapin.gateway.chain.deploy import set_keys, write_sections
from terrapin.gateway.chain.node import artifact, transact
from terrapin.gateway.config import load_config, render_config
from terrapin.gateway.errors import ConfigError
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.chainkit import ANVIL_KEY, Anvil, next_batch_id
from terrapin.tools.devkit.gatewayhome import GatewayHome, GatewayProcess, start_broker
from terrapin.tools.devkit.simboard import SimBoard

EPOCH_SECONDS = 6
TRP = 10**18


def test_set_keys_rewrites_only_its_keys() -> None:
    text = render_config({"store": {"path": "gw.db"}}) + '\n[chain]\n# my node\nnetwork = "x"\n'
    out = set_keys(
        text,
        {"chain": {"network": "http://n:8545", "anchor": "0xA"}, "rewards": {"budget": "5"}},
    )
    lines = out.splitlines()
    assert 'network = "http://n:8545"' in lines and "# my node" in lines
    assert lines.index('anchor = "0xA"') == lines.index('network = "http://n:8545"') + 1
    assert lines[-2:] == ["[rewards]", 'budget = "5"']
    removed = set(text.splitlines()) - set(lines)
    assert removed == {'network = "x"'}  # every other line and comment is kept
    with pytest.raises(ConfigError, match="appears 2 times"):
        set_keys("[chain]\n[chain]\n", {"chain": {"network": "y"}})


def test_write_sections_refuses_what_the_gateway_would(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(render_config())
    path.chmod(0o640)
    before = path.read_text()
    with pytest.raises(ConfigError, match="unknown"):
        write_sections(path, {"chain": {"netwrk": "http://127.0.0.1:1"}})
    assert path.read_text() == before  # untouched
    write_sections(path, {"pipeline": {"workers": 1}})
    assert load_config(path).pipeline.workers == 1 and path.stat().st_mode & 0o777 == 0o640


def test_a_dead_node_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from terrapin.tools.devkit.broker import free_port

    monkeypatch.setenv("TP_DEPLOYER", ANVIL_KEY)
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["chain", "deploy", "--rpc", dead, "--key-env", "TP_DEPLOYER"]) == 1
    err = capsys.readouterr().err
    assert f"the chain node at {dead} does not answer (connection refused)" in err
    argv = ["chain", "deploy", "--rpc", dead, "--config", str(tmp_path / "gateway.toml")]
    assert main(argv) == 2
    assert "gateway init" in capsys.readouterr().err


def fund(w3: Web3, *accounts) -> None:
    for account in accounts:
        tx = w3.eth.send_transaction(
            {"from": w3.eth.accounts[0], "to": account.address, "value": 10**20}
        )
        w3.eth.wait_for_transaction_receipt(tx)


def wait_for(what: str, check, timeout: float, context=lambda: "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{context()}")


@pytest.mark.anvil
@pytest.mark.mosquitto
def test_deploy_anchor_reward_claim_on_anvil(anvil_exe, tmp_path: Path, monkeypatch, capsys):
    node = Anvil(anvil_exe, tmp_path, "--block-time", "1").start()
    broker = gw = board = None
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        admin, oracle, owner = Account.create(), Account.create(), Account.create()
        fund(w3, oracle, owner)
        monkeypatch.setenv("TP_DEPLOYER", ANVIL_KEY)
        monkeypatch.setenv("TP_ADMIN", admin.key.to_0x_hex())
        monkeypatch.setenv("TP_ORACLE", oracle.key.to_0x_hex())
        home = GatewayHome(tmp_path / "gw")
        before = home.config_path.read_text()

        monkeypatch.setenv("TP_POOR", Account.create().key.to_0x_hex())
        assert main(["chain", "deploy", "--rpc", node.url, "--key-env", "TP_POOR"]) == 1
        assert "has no funds on chain 31337" in capsys.readouterr().err
        argv = ["chain", "deploy", "--rpc", node.url, "--key-env", "TP_DEPLOYER", "--rewards"]
        # The admin must not be the gateway's hot key (here both the deployer's).
        deployer = Account.from_key(ANVIL_KEY).address
        sent = w3.eth.get_transaction_count(deployer)
        assert main(argv) == 1
        assert "the admin and the gateway (oracle) are the same key" in capsys.readouterr().err
        assert w3.eth.get_transaction_count(deployer) == sent  # refused before deploying
        argv += [
            "--oracle-key-env",
            "TP_ORACLE",
            "--admin-key-env",
            "TP_ADMIN",
            "--epoch-seconds",
            str(EPOCH_SECONDS),
        ]
        argv += ["--config", str(home.config_path), "--enable-stages"]
        assert main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr()
        assert "wrote [chain], [rewards], [pipeline]" in out.out
        for secret in (ANVIL_KEY, admin.key.hex(), oracle.key.hex()):
            assert secret.removeprefix("0x") not in out.out + out.err

        cfg = load_config(home.config_path)
        chain, rewards = cfg.section("chain"), cfg.section("rewards")
        assert chain["network"] == node.url and chain["key_env"] == "TP_ORACLE"
        assert rewards["epoch_seconds"] == EPOCH_SECONDS
        assert cfg.pipeline.stages == ["batch", "anchor", "rewards"]
        kept = set(before.splitlines()) - set(home.config_path.read_text().splitlines())
        assert kept == {"stages = []"}  # the one line replaced; comments and the rest kept

        # Roles: the gateway anchors and publishes, the admin administers, the deployer
        # holds nothing once done.
        registry = w3.eth.contract(
            address=chain["registry"], abi=artifact("TerrapinRegistry")["abi"]
        )
        token = rewards_chain.rewards_contract(w3, rewards["contract"])
        admin_role = registry.functions.DEFAULT_ADMIN_ROLE().call()
        assert registry.functions.isGateway(oracle.address).call()
        assert registry.functions.hasRole(admin_role, admin.address).call()
        assert not registry.functions.hasRole(admin_role, deployer).call()
        oracle_role = token.functions.ORACLE_ROLE().call()
        assert token.functions.hasRole(oracle_role, oracle.address).call()
        assert token.functions.hasRole(admin_role, admin.address).call()
        assert not token.functions.hasRole(oracle_role, deployer).call()

        # Fast batches for the test; the same writer.
        write_sections(
            home.config_path,
            {
                "chain": {"batch_seconds": 0.5, "poll_seconds": 0.2},
                "rewards": {"poll_seconds": 0.5},
            },
        )
        key, password = home.add_sim_board()
        board = SimBoard("127.0.0.1", home.mqtt_port, key, password=password)
        digest = bind_digest(owner.address, 0, w3.eth.chain_id, registry.address)
        sig = board.private.sign_recoverable(digest, hasher=None)
        call = rewards_chain.binding_contract(w3, registry.address).functions.bindBoard(
            Web3.to_checksum_address(board.hex), owner.address, pack_signature(sig[:64], sig[64])
        )
        transact(w3, owner, {"to": registry.address, "data": call._encode_transaction_data()})

        broker = start_broker(home)
        gw = GatewayProcess(home, env={"TP_ORACLE": oracle.key.to_0x_hex()}).start()
        board.start()
        seqs = range(1, 6)
        for seq in seqs:
            board.publish(board.envelope(seq), seq)
        assert board.wait_settled(seqs, timeout=20), gw.log_tail()
        assert all(s in board.acked for s in seqs)

        def published() -> int | None:
            if token.functions.merkleRoot().call() == bytes(32):
                return None
            return int(token.functions.epoch().call())

        wait_for("an epoch published", published, 90, gw.log_tail)
        anchor = w3.eth.contract(address=chain["anchor"], abi=artifact("TerrapinAnchor")["abi"])
        assert next_batch_id(anchor, oracle.address) >= 1  # anchored with the gateway's key
        # The distribution file of the latest published epoch is the gateway's own.
        epoch = wait_for(
            "the gateway's distribution file",
            lambda: (
                published()
                if (home.dir / "rewards" / f"epoch-{published()}.json").exists()
                else None
            ),
            30,
            gw.log_tail,
        )
        dist = distribution.load(home.dir / "rewards" / f"epoch-{epoch}.json")
        earned = dist.claims[owner.address.lower()].amount
        assert earned >= 1000 * TRP and earned % (1000 * TRP) == 0  # the whole budget per epoch

        monkeypatch.setenv("TERRAPIN_OWNER_KEY", owner.key.to_0x_hex())
        argv = ["rewards", "claim", "--owner", owner.address, "--config", str(home.config_path)]
        argv += ["--epoch", str(epoch)]
        assert main(argv) == 0, capsys.readouterr().err
        said = capsys.readouterr().out
        assert f"cumulative {earned // TRP:,} TRP" in said, said
        assert token.functions.balanceOf(owner.address).call() == earned
    finally:
        if board is not None:
            board.stop()
        if gw is not None:
            gw.stop()
        if broker is not None:
            broker.stop()
        node.stop()
