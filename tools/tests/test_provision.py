"""Provision over real serial paths: config without echoing secrets, the key made
on the board, registration with the gateway, the bind signature."""

from __future__ import annotations

import base64
import json

import pytest

from terrapin.firmware import keystore, secp256k1
from terrapin.gateway.rewards import binding as rewards_binding
from terrapin.gateway.store import Store
from terrapin.tools.board.serialconsole import BoardError
from terrapin.tools.cli.main import main

OWNER = "0x" + "ab" * 20
REGISTRY = "0x" + "cd" * 20
WIFI_SECRET = "correct-horse-battery-staple"


def secret_forms(priv: bytes) -> list[bytes]:
    return [
        priv,
        priv.hex().encode(),
        priv.hex().upper().encode(),
        base64.b64encode(priv),
        str(int.from_bytes(priv, "big")).encode(),
    ]


def gateway_config(tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[store]\npath = "{tmp_path / "gw.db"}"\n'
        f'[broker]\npassword_file = "{tmp_path / "passwd"}"\npublic_host = "gw.local"\n'
        "[mqtt]\nport = 18830\n"
    )
    return cfg


def test_provision_makes_key_on_board_and_never_exposes_secrets(
    board, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TERRAPIN_WIFI_PASSWORD", WIFI_SECRET)
    cfg = gateway_config(tmp_path)
    args = ["device", "provision", "--port", board.port, "--wifi-ssid", "home"]
    args += ["--gateway-config", str(cfg), "--owner", OWNER, "--chain-id", "31337"]
    args += ["--contract", REGISTRY, "--no-prompt", "--json"]
    assert main(args) == 0, capsys.readouterr().err + board.context()
    out, err = capsys.readouterr()
    result = json.loads(out)

    # The key was made on the board and only its public half came back.
    priv = keystore.load_key(str(board.flash))
    assert priv is not None and result["key_created"] is True
    assert result["pubkey"] == secp256k1.public_key(priv).hex()
    received = board.vb.console_log().encode()  # every byte the board sent to the host
    host_side = received + out.encode() + err.encode()
    for form in secret_forms(priv):
        assert form not in host_side

    # Secrets reached the board's config, and nothing else.
    stored = json.loads((board.flash / "config.json").read_text())
    mqtt_password = stored["broker"]["password"]
    assert stored["wifi"] == {"ssid": "home", "password": WIFI_SECRET}
    assert stored["broker"]["user"] == result["address"] and stored["broker"]["host"] == "gw.local"
    for secret in (WIFI_SECRET, mqtt_password):
        assert secret.encode() not in host_side
    assert result["address"] in (tmp_path / "passwd").read_text()

    # The gateway allow-lists the board with its public key.
    store = Store(tmp_path / "gw.db")
    try:
        devices = {d.address.hex(): d.pubkey for d in store.devices()}
    finally:
        store.close()
    assert devices == {result["address"]: bytes.fromhex(result["pubkey"])}

    # The binding signature is the board's own over the EIP-712 digest.
    sig = bytes.fromhex(result["binding"]["signature"])
    rewards_binding.check_binding(result["address"], OWNER, 0, 31337, REGISTRY, sig)

    # Provisioning again keeps the key; --finish leaves provisioning mode.
    assert main([*args[:4], "--no-prompt", "--finish", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["address"] == result["address"] and again["key_created"] is False
    con = board.console()
    try:
        with pytest.raises(BoardError) as denied:
            con.request("sign-bind", OWNER, "0", "31337", REGISTRY)
        assert denied.value.code == "DENIED"
    finally:
        con.link.close()


def test_provision_errors_are_messages(tmp_path, capsys):
    assert main(["device", "provision", "--port", str(tmp_path / "ttyNONE"), "--no-prompt"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["device", "provision", "--target", "unix"]) == 1
    assert "--target unix needs --dir" in capsys.readouterr().err
    code = main(["device", "provision", "--port", "socket://127.0.0.1:1", "--owner", OWNER])
    assert code == 1
    assert "--owner needs --contract" in capsys.readouterr().err


def binding_registry(node_exe: str, url: str) -> str:
    """The registry if it already carries BoardBinding, else the test-only harness of it."""
    import subprocess

    from eth_account import Account

    from terrapin.gateway.chain import node
    from terrapin.tools.devkit import chainkit as testkit

    if any(item.get("name") == "bindBoard" for item in node.artifact("TerrapinRegistry")["abi"]):
        return testkit.deploy_on_rpc(url).registry
    harness = "gateway/tests/rewards/BoardBindingHarness.sol"
    proc = subprocess.run(
        [node_exe, "tools/js/compile-one.mjs", harness],
        cwd=testkit.REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    art = json.loads(proc.stdout)["contracts"]["BoardBindingHarness"]
    w3 = node.rpc_web3(url)
    data = (
        w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor().data_in_transaction
    )
    receipt = node.transact(
        w3, Account.from_key(testkit.ANVIL_KEY), {"data": data, "gas": 3_000_000}
    )
    return receipt["contractAddress"]


@pytest.mark.anvil
def test_provision_binds_the_board_on_chain(
    start_board, anvil_exe, node_exe, tmp_path, capsys, monkeypatch
):
    from web3 import Web3

    from terrapin.gateway.rewards.onchain import binding_contract
    from terrapin.tools.devkit import chainkit as testkit

    node = testkit.Anvil(anvil_exe, tmp_path).start()
    try:
        registry = binding_registry(node_exe, node.url)
        monkeypatch.setenv("TP_TEST_KEY", testkit.ANVIL_KEY)
        board = start_board("tcp")
        base = ["device", "provision", "--port", board.port, "--contract", registry]
        base += ["--rpc", node.url, "--key-env", "TP_TEST_KEY", "--no-prompt", "--json"]
        assert main([*base, "--owner", OWNER]) == 0, capsys.readouterr().err + board.context()
        first = json.loads(capsys.readouterr().out)
        chain = binding_contract(Web3(Web3.HTTPProvider(node.url)), registry).functions
        board_addr = Web3.to_checksum_address("0x" + first["address"])
        assert chain.ownerOfBoard(board_addr).call().lower() == OWNER
        assert first["binding"]["nonce"] == 0 and first["binding"]["chain"]["tx"]

        # A new owner: the nonce comes from the chain, so the old signature cannot replay.
        owner2 = "0x" + "ef" * 20
        assert main([*base, "--owner", owner2]) == 0, capsys.readouterr().err
        second = json.loads(capsys.readouterr().out)
        assert second["binding"]["nonce"] == 1
        assert chain.ownerOfBoard(board_addr).call().lower() == owner2
    finally:
        node.stop()


def test_secrets_typed_at_the_prompt_are_not_echoed(board, tmp_path):
    from click.testing import CliRunner

    from terrapin.tools.cli.main import cli

    secret_wifi, secret_mqtt = "typed-wifi-secret-1", "typed-mqtt-secret-2"
    args = ["device", "provision", "--port", board.port, "--wifi-ssid", "home"]
    args += ["--broker", "gw.local:1883", "--mqtt-user", "board1"]
    result = CliRunner().invoke(
        cli,
        args,
        input=f"{secret_wifi}\n{secret_mqtt}\n",
        env={"TERRAPIN_WIFI_PASSWORD": None, "TERRAPIN_MQTT_PASSWORD": None},
    )
    assert result.exit_code == 0, result.output + board.context()
    # Piped (CliRunner's stdin is no terminal): read line by line, no prompt and no
    # getpass "may be echoed" warning written to nobody.
    assert "password:" not in result.output.lower() and "echoed" not in result.output
    for secret in (secret_wifi, secret_mqtt):
        assert secret not in result.output
        assert secret.encode() not in board.vb.console_log().encode()
    stored = json.loads((board.flash / "config.json").read_text())
    assert stored["wifi"]["password"] == secret_wifi
    assert stored["broker"] == {
        "host": "gw.local",
        "port": 1883,
        "user": "board1",
        "password": secret_mqtt,
    }
