"""`terrapin device bind` against a virtual board (real firmware on the unix port) and
anvil: the board signs the EIP-712 binding, the registry binds it; a finished board
refuses; a signature for another owner, a replayed one or a forged one fails on chain."""

from __future__ import annotations

import json

import pytest

from terrapin.gateway.rewards import binding as rewards_binding
from terrapin.tools.cli.main import main

OWNER = "0x" + "ab" * 20
OWNER2 = "0x" + "ef" * 20


def test_bind_needs_a_chain_and_a_valid_owner(tmp_path, capsys) -> None:
    port = ["device", "bind", "--port", "socket://127.0.0.1:1"]
    assert main([*port, "--owner", OWNER]) == 1
    assert "which chain?" in capsys.readouterr().err
    assert main([*port, "--owner", "0x1234", "--rpc", "http://127.0.0.1:1"]) == 1
    assert "--owner: not an address" in capsys.readouterr().err
    assert main([*port, "--owner", OWNER, "--rpc", "http://127.0.0.1:1"]) == 1
    assert "--contract" in capsys.readouterr().err
    embedded = tmp_path / "gateway.toml"
    embedded.write_text(f'[store]\npath = "{tmp_path / "gw.db"}"\n[chain]\nnetwork = "embedded"\n')
    assert main([*port, "--owner", OWNER, "--config", str(embedded)]) == 1
    assert "embedded chain" in capsys.readouterr().err


@pytest.mark.anvil
def test_device_bind_on_anvil(start_board, anvil_exe, tmp_path, capsys, monkeypatch) -> None:
    from eth_account import Account
    from web3 import Web3

    from terrapin.firmware import keystore, secp256k1
    from terrapin.gateway.chain.node import ChainError
    from terrapin.gateway.rewards.onchain import bind_board, binding_contract
    from terrapin.tools.devkit import chainkit as testkit

    node = testkit.Anvil(anvil_exe, tmp_path).start()
    try:
        chain_cfg = testkit.deploy_on_rpc(node.url)
        registry = chain_cfg.registry
        monkeypatch.setenv("TP_TEST_KEY", testkit.ANVIL_KEY)
        board = start_board("tcp")
        con = board.console()
        try:
            made = con.request("keygen", timeout=30)
        finally:
            con.link.close()
        w3 = Web3(Web3.HTTPProvider(node.url))
        chain = binding_contract(w3, registry)
        board_addr = Web3.to_checksum_address("0x" + made["addr"])

        # 1. --rpc --contract --key-env: bound to OWNER with the board's own signature.
        base = ["device", "bind", "--port", board.port, "--json"]
        rpc = ["--rpc", node.url, "--contract", registry, "--key-env", "TP_TEST_KEY"]
        assert main([*base, *rpc, "--owner", OWNER]) == 0, capsys.readouterr().err + board.context()
        first = json.loads(capsys.readouterr().out)
        assert first["board"] == "0x" + made["addr"]
        assert first["nonce"] == 0 and first["chain"]["owner"] == OWNER
        assert first["chain"]["tx"].startswith("0x")
        assert chain.functions.ownerOfBoard(board_addr).call().lower() == OWNER
        assert chain.functions.bindNonce(board_addr).call() == 1
        rewards_binding.check_binding(
            made["addr"], OWNER, 0, 31337, registry, bytes.fromhex(first["signature"])
        )
        # The key never crossed the console.
        priv = keystore.load_key(str(board.flash))
        assert priv.hex() not in board.vb.console_log()
        assert secp256k1.public_key(priv).hex() == made["pub"]

        # 2. --config: the gateway's chain, registry and key; the nonce moves on to 1.
        monkeypatch.setenv("TERRAPIN_CHAIN_KEY", testkit.ANVIL_KEY)
        gw = tmp_path / "gateway.toml"
        gw.write_text(
            f'[store]\npath = "{tmp_path / "gw.db"}"\n[chain]\nnetwork = "{node.url}"\n'
            f'registry = "{registry}"\nanchor = "{chain_cfg.anchor}"\n'
        )
        assert main([*base, "--config", str(gw), "--owner", OWNER2]) == 0, capsys.readouterr().err
        second = json.loads(capsys.readouterr().out)
        assert second["nonce"] == 1 and second["chain"]["owner"] == OWNER2
        assert chain.functions.ownerOfBoard(board_addr).call().lower() == OWNER2

        # 3. Attempts that must fail on chain, sent straight to the registry.
        sender = Account.from_key(testkit.ANVIL_KEY)
        old_sig = bytes.fromhex(first["signature"])  # the board's, for OWNER at nonce 0
        with pytest.raises(ChainError, match="BoardSignatureInvalid"):  # replayed
            bind_board(w3, sender, chain, board_addr, OWNER, old_sig)
        with pytest.raises(ChainError, match="BoardSignatureInvalid"):  # other owner
            bind_board(w3, sender, chain, board_addr, sender.address, old_sig)
        forger = Account.create()  # a key that is not the board's signs the right digest
        digest = rewards_binding.bind_digest(sender.address, 2, 31337, registry)
        sig, v = secp256k1.sign_recoverable(bytes(forger.key), digest)
        forged = rewards_binding.pack_signature(sig, v)
        with pytest.raises(ChainError, match="BoardSignatureInvalid"):
            bind_board(w3, sender, chain, board_addr, sender.address, forged)
        assert chain.functions.ownerOfBoard(board_addr).call().lower() == OWNER2

        # 4. A finished board (out of provisioning mode) refuses to sign; nothing is sent.
        con = board.console()
        try:
            con.request("done")
        finally:
            con.link.close()
        assert main([*base, *rpc, "--owner", OWNER]) == 1
        err = capsys.readouterr().err
        assert "refused to sign the binding" in err and "provisioning mode" in err, err
        assert chain.functions.ownerOfBoard(board_addr).call().lower() == OWNER2
        assert chain.functions.bindNonce(board_addr).call() == 2
    finally:
        node.stop()
