"""The TP1 console: board side as pure logic on CPython, then over real serial
paths (pty and TCP) against the firmware on the unix port."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from terrapin.firmware import console as fwconsole
from terrapin.firmware import keystore, secp256k1
from terrapin.tools.board.serialconsole import BoardError


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


def test_sign_digest_only_for_bind_and_only_in_provisioning_mode(tmp_path):
    h = Host(tmp_path)
    digest = bytes(range(32))
    assert h.ask("TP1 sign-digest " + digest.hex() + " bind")[:2] == ("ERR", "NO_KEY")
    made = h.ask("TP1 keygen")
    assert h.ask("TP1 sign-digest " + digest.hex() + " reading")[:2] == ("ERR", "DENIED")
    assert h.ask("TP1 sign-digest abcd bind")[:2] == ("ERR", "BAD_ARGS")
    sig = bytes.fromhex(h.ask("TP1 sign-digest " + digest.hex() + " bind")["sig"])
    assert len(sig) == 65 and sig[64] in (27, 28)
    pub = secp256k1.recover_public_key(digest, sig[:64], sig[64] - 27)
    assert pub.hex() == made["pub"]
    assert h.ask("TP1 done") == {"provisioning": False}
    assert h.ask("TP1 sign-digest " + digest.hex() + " bind")[:2] == ("ERR", "DENIED")
    assert h.ask("TP1 keygen force")[:2] == ("ERR", "DENIED")


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
            con.request("sign-digest", "00" * 32, "reading")
        assert err.value.code == "DENIED"
        priv = keystore.load_key(str(board.flash))
        assert secp256k1.public_key(priv).hex() == made["pub"]
    finally:
        con.link.close()


def test_console_port_feeds_the_console_on_the_unix_port(tmp_path, micropython_exe):
    """The hook the firmware app calls each loop turn, on MicroPython itself: the
    console module is imported only when the first TP1 line arrives."""
    import subprocess

    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    code = (
        "import sys, time; sys.path.insert(0, 'lib')\n"
        "from terrapin.firmware.consoleport import ConsolePort\n"
        "def make(write):\n"
        "    from terrapin.firmware.console import Console\n"
        "    return Console('.', write)\n"
        "port = ConsolePort(make)\n"
        'port.event(b\'{"state": "online"}\')\n'
        "loaded = []\n"
        "for _ in range(200):\n"
        "    port.poll()\n"
        "    loaded.append('terrapin.firmware.console' in sys.modules)\n"
        "    if port.closed: break\n"
        "    time.sleep_ms(5)\n"
    )
    proc = subprocess.run(
        [micropython_exe, "-X", "heapsize=100k", "-c", code],
        input=b"app log TP1 line\nTP1 keygen\r\nTP1 info\n",
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 0, proc.stderr.decode()
    assert lines[0] == 'TP1 EV {"state": "online"}'
    made = json.loads(lines[1].removeprefix("TP1 OK "))
    info = json.loads(lines[2].removeprefix("TP1 OK "))
    assert made["created"] and info["addr"] == made["addr"]
    assert len(lines) == 3


def test_console_port_costs_nothing_until_a_host_speaks(tmp_path, micropython_exe):
    import subprocess

    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    code = (
        "import sys; sys.path.insert(0, 'lib')\n"
        "from terrapin.firmware.consoleport import ConsolePort\n"
        "port = ConsolePort(None)\n"
        "while not port.closed: port.poll()\n"
        "print(sorted(k for k in sys.modules if k.startswith('terrapin')))\n"
    )
    proc = subprocess.run(
        [micropython_exe, "-X", "heapsize=100k", "-c", code],
        input=b"log line\nTP2 not ours\nTP1x\n",
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "console'" not in proc.stdout.decode() and "keystore" not in proc.stdout.decode()


def test_console_port_unloads_a_quiet_console(tmp_path, micropython_exe):
    """A console the host stopped talking to gives its RAM back (with the key store
    it pulled in), comes back on the next TP1 line, and a transfer the host left
    half done is abandoned after 6 x quiet_ms."""
    import subprocess
    import time

    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    code = (
        "import sys, time; sys.path.insert(0, 'lib')\n"
        "from terrapin.firmware.consoleport import ConsolePort\n"
        "def make(write):\n"
        "    from terrapin.firmware.console import Console\n"
        "    return Console('.', write)\n"
        "port = ConsolePort(make, quiet_ms=300)\n"
        "def state():\n"
        "    m = sys.modules\n"
        "    return ('console' if 'terrapin.firmware.console' in m else '-') + ' ' + (\n"
        "        'keys' if 'terrapin.firmware.keystore' in m else '-')\n"
        "was = state(); t0 = time.ticks_ms()\n"
        "while not port.closed:\n"
        "    port.poll()\n"
        "    now = state()\n"
        "    if now != was:\n"
        "        print('%d %s' % (time.ticks_diff(time.ticks_ms(), t0), now)); was = now\n"
        "    time.sleep_ms(5)\n"
    )
    proc = subprocess.Popen(
        [micropython_exe, "-X", "heapsize=100k", "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    for line, pause in ((b"TP1 keygen\n", 1.2), (b"TP1 info\n", 1.2), (b"TP1 config-begin\n", 2.6)):
        proc.stdin.write(line)
        proc.stdin.flush()
        time.sleep(pause)  # well past quiet_ms (and 6 x quiet_ms for the last)
    out, err = proc.communicate(timeout=30)  # closes stdin: the port sees its end
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    answers = [ln.split()[1] for ln in lines if ln.startswith("TP1 ")]
    assert answers == ["OK", "OK", "OK"], lines
    states = [ln.split(" ", 1)[1] for ln in lines if not ln.startswith("TP1 ")]
    # info without the app's identity reads the key store too
    assert states == ["console keys", "- -", "console keys", "- -", "console -", "- -"], lines
    released = [int(ln.split()[0]) for ln in lines if ln.endswith("- -")]
    assert released[2] - released[1] > 1800  # the open config transfer held it for 6 x 300 ms
