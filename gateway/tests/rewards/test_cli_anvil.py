"""`terrapin rewards compute/publish/claim` against anvil, with keys only from env/keystore."""

from __future__ import annotations

import json
import random

from eth_account import Account
from web3 import Web3

from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, transact
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.tools.cli.main import main
from terrapin.tools.devkit import chainkit as testkit
from terrapin.tools.devkit.simboard import SimBoard

DAY = 86_400


def test_compute_publish_claim_on_anvil(
    anvil, compiled, tmp_path, monkeypatch, capsys, stamped_readings
):
    w3 = anvil.w3
    oracle = Account.from_key(testkit.ANVIL_KEY)  # admin, gateway and oracle
    alice, bob, stranger = anvil.accounts[1], anvil.accounts[2], anvil.accounts[3]
    config = testkit.deploy_on_rpc(anvil_url(w3), confirmations=1, poll_seconds=0.05)
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", testkit.ANVIL_KEY)
    for name in ("TERRAPIN_OWNER_KEY", "TERRAPIN_KEYSTORE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)

    art = compiled["BoardBindingHarness"]  # the registry does not inherit BoardBinding yet
    data = (
        w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor().data_in_transaction
    )
    binder = w3.eth.contract(
        address=transact(w3, oracle, {"data": data, "gas": 2_000_000})["contractAddress"],
        abi=art["abi"],
    )
    token = rewards_chain.deploy_rewards(w3, oracle, admin=alice.address)

    rng = random.Random(5)
    boards = [SimBoard.make(rng) for _ in range(2)]
    day = w3.eth.get_block("latest")["timestamp"] // DAY + 3
    w3.provider.make_request("evm_setNextBlockTimestamp", [day * DAY + 60])
    for board, owner in zip(boards, (alice, bob), strict=True):
        sig = board.private.sign_recoverable(
            bind_digest(owner.address, 0, w3.eth.chain_id, binder.address), hasher=None
        )
        address = Web3.to_checksum_address(board.address)
        call = binder.functions.bindBoard(address, owner.address, pack_signature(sig[:64], sig[64]))
        transact(w3, stranger, {"to": binder.address, "data": call._encode_transaction_data()})

    db = tmp_path / "gateway.sqlite"
    conn = testkit.make_db(db)
    stamped_readings(conn, [boards[0]], 1, day * DAY + 60)
    stamped_readings(conn, [boards[1]], 3, day * DAY + 60)
    chain = Chain.connect(config)
    batcher, anchorer = Batcher(db), Anchorer(db, chain)
    batcher.close_due(force=True)
    anchorer.anchor_pending(until="confirmed", timeout=60)
    batcher.close()
    anchorer.close()

    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[store]\npath = "{db}"\n'
        f'[chain]\nnetwork = "{config.network}"\n'
        f'registry = "{config.registry}"\nanchor = "{config.anchor}"\n'
        f'[rewards]\ncontract = "{token.address}"\nbinding = "{binder.address}"\n'
        'budget = "1000"\ncap = 10\n'
    )
    base = ["--config", str(cfg)]

    # compute syncs block times and bindings over JSON-RPC, then works from the database.
    assert main(["rewards", "compute", "--epoch", str(day), "--json", *base]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["owners"] == {
        alice.address.lower(): {"epoch_amount": "250", "cumulative": "250"},
        bob.address.lower(): {"epoch_amount": "750", "cumulative": "750"},
    }
    assert out["file"].endswith(f"rewards/epoch-{day}.json")

    # The epoch's manifest needs a cut-off past the epoch's end; then publish commits to it.
    assert main(["rewards", "manifest", "--epoch", str(day), *base]) == 1
    assert "has not ended on chain yet" in capsys.readouterr().err
    w3.provider.make_request("evm_setNextBlockTimestamp", [(day + 1) * DAY + 1])
    w3.provider.make_request("evm_mine", [])
    assert main(["rewards", "manifest", "--epoch", str(day), *base]) == 0
    manifest = tmp_path / "rewards" / f"epoch-{day}.manifest.json"
    assert str(manifest) in capsys.readouterr().out

    # publish: only with the oracle's key.
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", stranger.key.to_0x_hex())
    assert main(["rewards", "publish", "--epoch", str(day), *base]) == 1
    assert "AccessControlUnauthorizedAccount" in capsys.readouterr().err
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", testkit.ANVIL_KEY)
    assert main(["rewards", "publish", "--epoch", str(day), *base]) == 0
    assert token.functions.merkleRoot().call().hex() == out["root"][2:]
    capsys.readouterr()
    (event,) = token.events.RootPublished().get_logs(from_block=0)
    assert event["args"]["manifestHash"] == Web3.keccak(manifest.read_bytes())
    # The owners came from a contract other than the anchor's registry: verify says so.
    verify = ["rewards", "verify", "--epoch", str(day), "--manifest", str(manifest)]
    assert main([*verify, "--rpc", anvil_url(w3), "--anchor", config.anchor]) == 1
    assert "bindings on chain: bindings come from" in capsys.readouterr().err

    # claim: no key -> a config error (never a key on the command line).
    assert main(["rewards", "claim", "--owner", alice.address, *base]) == 2
    assert "TERRAPIN_OWNER_KEY" in capsys.readouterr().err
    monkeypatch.setenv("TERRAPIN_OWNER_KEY", alice.key.to_0x_hex())
    assert main(["rewards", "claim", "--owner", alice.address, *base]) == 0
    assert token.functions.balanceOf(alice.address).call() == 250
    assert main(["rewards", "claim", "--owner", alice.address, *base]) == 1  # twice: nothing more
    assert "NothingToClaim" in capsys.readouterr().err
    assert token.functions.balanceOf(alice.address).call() == 250

    # Bob claims from an encrypted keystore; the password comes from the environment.
    keystore = tmp_path / "bob.json"
    keystore.write_text(json.dumps(Account.encrypt(bob.key, "correct horse", iterations=2)))
    monkeypatch.delenv("TERRAPIN_OWNER_KEY")
    monkeypatch.setenv("TERRAPIN_KEYSTORE_PASSWORD", "correct horse")
    assert (
        main(["rewards", "claim", "--owner", bob.address, "--keystore", str(keystore), *base]) == 0
    )
    assert token.functions.balanceOf(bob.address).call() == 750
    # A stranger's address has nothing to claim.
    assert (
        main(["rewards", "claim", "--owner", stranger.address, "--keystore", str(keystore), *base])
        == 1
    )


def anvil_url(w3: Web3) -> str:
    return w3.provider.endpoint_uri
