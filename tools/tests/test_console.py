"""The TP1 console: board side as pure logic on CPython, then over real serial
paths (pty and TCP) against the firmware on the unix port."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from terrapin.firmware import console as fwconsole
from terrapin.firmware import cose, keystore, secp256k1
from terrapin.gateway.rewards import binding as rewards_binding
from terrapin.tools.board.serialconsole import BoardError
from terrapin.tools.micropython import ESP32_HEAP


class Host:
    def __init__(self, root, **kw):
        self.out = bytearray()
        self.con = fwconsole.Console(str(root), self.out.extend, **kw)

    def ask(self, line: str):
        self.out.clear()
        self.con.feed(line.encode() + b"\r\n")
        text = bytes(self.out).decode()
        assert text.startswith("TP1 "), text
        kind, _, rest = text[4:].strip().partition(" ")
        if kind == "OK":
            return json.loads(rest)
        return ("ERR", *rest.split(" ", 1))


def test_keygen_never_overwrites_and_answers_public_parts_only(tmp_path):
    h = Host(tmp_path)
    first = h.ask("TP1 keygen")
    assert first["created"] is True
    again = h.ask("TP1 keygen")
    assert again == {**first, "created": False}
    priv = keystore.load_key(str(tmp_path))
    assert bytes.fromhex(first["pub"]) == secp256k1.public_key(priv)
    assert priv.hex() not in json.dumps(first)
    forced = h.ask("TP1 keygen force")
    assert forced["created"] is True and forced["addr"] != first["addr"]


def test_config_values_never_echoed_and_chunked_checksum_checked(tmp_path):
    h = Host(tmp_path)
    secret = "hunter2-wifi-secret"
    raw = json.dumps({"wifi": {"ssid": "home", "password": secret}}).encode()
    answer = h.ask("TP1 config-set " + base64.b64encode(raw).decode())
    assert answer["keys"] == ["wifi"]
    assert secret not in json.dumps(answer)
    # A second write merges one level deep: the password stays.
    raw2 = json.dumps({"wifi": {"ssid": "other"}, "broker": {"host": "gw.local"}}).encode()
    h.ask("TP1 config-begin")
    h.ask("TP1 config-chunk " + base64.b64encode(raw2[:10]).decode())
    h.ask("TP1 config-chunk " + base64.b64encode(raw2[10:]).decode())
    assert h.ask("TP1 config-end " + "00" * 32)[:2] == ("ERR", "BAD_CHECKSUM")
    h.ask("TP1 config-begin")
    h.ask("TP1 config-chunk " + base64.b64encode(raw2).decode())
    done = h.ask("TP1 config-end " + hashlib.sha256(raw2).hexdigest())
    assert done["keys"] == ["broker", "wifi"]
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["wifi"] == {"ssid": "other", "password": secret}
    assert secret not in bytes(h.out).decode()
    # The firmware's config checks come back as messages naming keys.
    bad = json.dumps({"broker": {"port": 99999}}).encode()
    problems = h.ask("TP1 config-set " + base64.b64encode(bad).decode())["problems"]
    assert any(p.startswith("broker.port") for p in problems), problems
    assert all(secret not in p for p in problems)


OWNER = "ab" * 20
OWNER2 = "ef" * 20
REGISTRY = "cd" * 20


def b64json(obj) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_sign_bind_builds_the_eip712_digest_and_only_in_provisioning_mode(tmp_path):
    h = Host(tmp_path)
    bind = f"TP1 sign-bind {OWNER} 3 31337 0x{REGISTRY}"
    assert h.ask(bind)[:2] == ("ERR", "NO_KEY")
    made = h.ask("TP1 keygen")
    answer = h.ask(bind)
    sig = bytes.fromhex(answer["sig"])
    assert len(sig) == 65 and sig[64] in (27, 28)
    # The board's own digest is the host's EIP-712 BindBoard digest, and the
    # signature is the board's binding there (gateway/rewards/binding.py).
    digest = rewards_binding.check_binding(made["addr"], OWNER, 3, 31337, REGISTRY, sig)
    assert answer["digest"] == digest.hex() and answer["addr"] == made["addr"]
    # Every field is in the digest: a signature for other fields does not check.
    for other in (
        (OWNER2, 3, 31337, REGISTRY),
        (OWNER, 4, 31337, REGISTRY),
        (OWNER, 3, 1, REGISTRY),
    ):
        with pytest.raises(rewards_binding.BindingError):
            rewards_binding.check_binding(made["addr"], *other, sig)
    for bad in ("ab 3 31337 " + REGISTRY, f"{OWNER} -1 1 {REGISTRY}", f"{OWNER} 1 x {REGISTRY}"):
        assert h.ask("TP1 sign-bind " + bad)[:2] == ("ERR", "BAD_ARGS"), bad
    big = str(2**256)  # 78 digits: not a uint256
    assert h.ask(f"TP1 sign-bind {OWNER} {big} 1 {REGISTRY}")[:2] == ("ERR", "BAD_ARGS")
    assert h.ask("TP1 done") == {"provisioning": False}
    assert h.ask(bind)[:2] == ("ERR", "DENIED")
    assert h.ask("TP1 keygen force")[:2] == ("ERR", "DENIED")


def test_board_never_signs_a_reading_digest_for_a_host(tmp_path):
    """The attack: a host with the serial console asks the board to sign the digest
    of a reading it never took. The old `sign-digest <hex32> bind` signed any 32
    bytes; now no command takes a digest, and what `sign-bind` signs is
    Keccak-256 over 0x1901||..., whatever fields the host chooses."""
    h = Host(tmp_path)
    made = h.ask("TP1 keygen")
    pub = bytes.fromhex(made["pub"])
    forged = cose.encode_payload(7, 1_700_000_000, [("temp", "Cel", 99.5)])
    reading = cose.digest(forged)
    assert h.ask("TP1 sign-digest " + reading.hex() + " bind")[:2] == ("ERR", "BAD_COMMAND")
    # Fields cut from the reading digest: the board signs its own EIP-712 digest.
    tries = (
        (reading[:20].hex(), 0, 1, reading[12:].hex()),
        (reading[12:].hex(), int.from_bytes(reading, "big"), 0, reading[:20].hex()),
    )
    for owner, nonce, chain, contract in tries:
        answer = h.ask(f"TP1 sign-bind {owner} {nonce} {chain} {contract}")
        sig = bytes.fromhex(answer["sig"])
        assert answer["digest"] != reading.hex()
        assert answer["digest"] == rewards_binding.bind_digest(owner, nonce, chain, contract).hex()
        assert not secp256k1.verify_digest(pub, reading, sig[:64])
    assert b"sign-digest" not in bytes(h.out)


def test_config_locked_after_done(tmp_path):
    """The attack: after provisioning is closed, someone at the serial console sets
    ota_pubkey (or the broker) to their own. Old code wrote it; now LOCKED."""
    h = Host(tmp_path)
    trusted, attacker = "02" + "11" * 32, "02" + "66" * 32
    broker = {"host": "gw.local", "port": 8883, "tls": True, "user": "u", "password": "p" * 8}
    assert h.ask("TP1 config-set " + b64json({"ota_pubkey": trusted, "broker": broker}))["keys"]
    h.ask("TP1 done")
    before = (tmp_path / "config.json").read_bytes()
    attacks = (
        {"ota_pubkey": attacker},
        {"ota_pubkey": None},  # deleting counts as changing
        {"broker": {"host": "evil.example"}},
        {"broker": {"password": "x" * 8}},
        {"broker": {"tls": False}},
        {"broker": {"ca_file": "evil.pem"}},
        {"serial_uplink": {"baud": 115200}},
        {"ntp_host": "evil.example"},
        {"sample_period_s": 5, "ota_pubkey": attacker},  # one locked key refuses all
        {"new\nkey": 1},
    )
    for attack in attacks:
        err = h.ask("TP1 config-set " + b64json(attack))
        assert err[:2] == ("ERR", "LOCKED"), (attack, err)
        assert "signed OTA" in err[2] and "new key" in err[2]
        assert (tmp_path / "config.json").read_bytes() == before, attack
    raw = json.dumps({"ota_pubkey": attacker}).encode()  # the chunked path too
    h.ask("TP1 config-begin")
    h.ask("TP1 config-chunk " + base64.b64encode(raw).decode())
    assert h.ask("TP1 config-end " + hashlib.sha256(raw).hexdigest())[:2] == ("ERR", "LOCKED")
    assert (tmp_path / "config.json").read_bytes() == before
    # Sampling, sensors, labels and the WiFi still change.
    tuning = {"sample_period_s": 30, "sensors": [{"driver": "simulated"}], "name": "shed"}
    tuning["wifi"] = {"ssid": "new-router"}
    assert h.ask("TP1 config-set " + b64json(tuning))["keys"]
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["ota_pubkey"] == trusted and stored["broker"] == broker
    assert stored["sample_period_s"] == 30 and stored["wifi"] == {"ssid": "new-router"}


def test_wipe_is_a_full_reprovision_with_a_new_key(tmp_path):
    """The way back to provisioning: key, config and marker go together, so whoever
    re-provisions a finished board gets a new identity, never the old one's."""
    reboots = []
    h = Host(tmp_path, reboot=lambda: reboots.append(1))
    old = h.ask("TP1 keygen")
    h.ask("TP1 config-set " + b64json({"ota_pubkey": "02" + "11" * 32, "wifi": {"ssid": "x"}}))
    h.ask("TP1 done")
    assert h.ask("TP1 wipe")[:2] == ("ERR", "BAD_ARGS")  # names the board it wipes
    assert h.ask("TP1 wipe " + "00" * 20)[:2] == ("ERR", "BAD_ARGS")
    assert keystore.load_key(str(tmp_path)) is not None and not reboots
    assert h.ask("TP1 wipe " + old["addr"]) == {"wiped": old["addr"], "provisioning": True}
    assert reboots == [1]  # the running app must drop the old key from RAM
    assert keystore.load_key(str(tmp_path)) is None
    info = h.ask("TP1 info")
    assert info["provisioning"] is True and info["addr"] is None and info["config"] is None
    new = h.ask("TP1 keygen")
    assert new["created"] and new["addr"] != old["addr"]
    assert h.ask("TP1 config-set " + b64json({"ota_pubkey": "02" + "66" * 32}))["keys"]


def test_bad_lines(tmp_path):
    h = Host(tmp_path)
    assert h.ask("TP1 frobnicate")[:2] == ("ERR", "BAD_COMMAND")
    assert h.ask("TP1 config-set !!!notbase64")[:2] in (("ERR", "BAD_ARGS"), ("ERR", "BAD_CONFIG"))
    assert h.ask("TP1 config-set " + base64.b64encode(b"[1]").decode())[:2] == (
        "ERR",
        "BAD_CONFIG",
    )
    assert h.ask("TP1 " + "x" * 5000)[:2] == ("ERR", "TOO_LONG")
    assert h.ask("TP1 info")["proto"] == 1  # still answering after the long line
    h.out.clear()
    h.con.feed(b"some app log line\n")
    assert bytes(h.out) == b""


def test_console_over_serial(board):
    con = board.console()
    try:
        info = con.wait_ready()
        assert info["proto"] == 1 and info["addr"] is None, board.context()
        made = con.request("keygen")
        assert con.request("info")["addr"] == made["addr"]
        with pytest.raises(BoardError) as err:
            con.request("sign-digest", "00" * 32, "bind")
        assert err.value.code == "BAD_COMMAND"  # no command signs a host's digest
        answer = con.request("sign-bind", OWNER, "0", "31337", REGISTRY, timeout=60)
        rewards_binding.check_binding(
            made["addr"], OWNER, 0, 31337, REGISTRY, bytes.fromhex(answer["sig"])
        )
        priv = keystore.load_key(str(board.flash))
        assert secp256k1.public_key(priv).hex() == made["pub"]
        con.request("config-set", b64json({"ota_pubkey": "02" + "11" * 32}))
        con.request("done")
        with pytest.raises(BoardError) as err:
            con.request("config-set", b64json({"ota_pubkey": "02" + "66" * 32}))
        assert err.value.code == "LOCKED", board.context()
        assert con.request("config-set", b64json({"sample_period_s": 30}))["keys"]
        cfg = json.loads((board.flash / "config.json").read_text())
        assert cfg["ota_pubkey"] == "02" + "11" * 32 and cfg["sample_period_s"] == 30
        boots = board.vb.boots
        assert con.request("wipe", made["addr"])["provisioning"] is True
        info = con.wait_ready(30)  # the board resets, then answers again
        assert board.vb.boots == boots + 1, board.context()
        assert info["addr"] is None and info["provisioning"] is True, info
        assert con.request("keygen", timeout=30)["addr"] != made["addr"]
    finally:
        con.link.close()


PORT_SCRIPT = (
    "import sys; sys.path.insert(0, 'lib')\n"
    "from terrapin.firmware.consoleport import ConsolePort\n"
    "def reset():\n"
    "    raise SystemExit(3)  # as board/unix.py: the board resets\n"
    "port = ConsolePort(lambda: {'proto': 1, 'mode': 'app'}, reset, '.')\n"
    'port.event(b\'{"state": "online"}\')\n'
    "while not port.closed:\n"
    "    port.poll()\n"
    "print(sorted(k for k in sys.modules if k.startswith('terrapin')))\n"
)


def run_port(tmp_path, micropython_exe, lines: bytes):
    """The running app's console port (firmware/consoleport.py) on MicroPython,
    fed `lines` on stdin: (exit code, output lines)."""
    import subprocess

    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    proc = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", "-c", PORT_SCRIPT],
        input=lines,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout.decode().splitlines()


def test_the_running_app_answers_info_and_leaves_the_rest_to_console_mode(
    tmp_path, micropython_exe
):
    """The hook the firmware app calls each loop turn, on MicroPython itself:
    `info` from the app, CONSOLE_MODE (with the request's id, even from a line
    longer than what the port keeps) for the rest, and never the console module."""
    long_line = b"TP1 #c3 config-set " + b"A" * 1500 + b"\n"
    code, lines = run_port(
        tmp_path,
        micropython_exe,
        b"app log TP1 line\nTP2 not ours\nTP1x\nTP1 #a1 keygen\r\nTP1 info\n"
        + long_line
        + b"TP1 #bad! info\nTP1 #d4\n",
    )
    assert code == 0, lines
    assert lines[0] == 'TP1 EV {"state": "online"}'
    assert lines[1].startswith("TP1 ERR #a1 CONSOLE_MODE keygen is answered in console mode")
    assert json.loads(lines[2].removeprefix("TP1 OK ")) == {"proto": 1, "mode": "app"}
    assert lines[3].startswith("TP1 ERR #c3 CONSOLE_MODE config-set")
    assert lines[4] == "TP1 ERR BAD_COMMAND request id must be 1-16 letters or digits"
    assert lines[5] == "TP1 ERR #d4 BAD_COMMAND empty command"
    modules = lines[6]
    assert "console'" not in modules and "keystore" not in modules, modules
    assert not (tmp_path / "console_mode").exists()


def test_console_asks_the_board_to_reset_into_console_mode_once(tmp_path, micropython_exe):
    code, lines = run_port(tmp_path, micropython_exe, b"TP1 #e5 console\nTP1 info\n")
    assert code == 3, lines  # reset right after the answer; `info` is never read
    assert lines[1] == 'TP1 OK #e5 {"rebooting": true, "mode": "console"}'
    assert (tmp_path / "console_mode").exists()
    code, lines = run_port(tmp_path, micropython_exe, b"TP1 reboot\n")
    assert code == 3 and lines[1] == 'TP1 OK {"rebooting": true, "mode": "app"}'
