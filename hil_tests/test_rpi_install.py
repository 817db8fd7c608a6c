"""The gateway's Raspberry Pi install path (docs/GATEWAY.md) on Debian 12 arm64 in
qemu-system-aarch64: pip install into /opt/terrapin/venv, `terrapin gateway init`,
Mosquitto with the generated passwords and ACL, the shipped systemd unit, and a
reading from a board on the host stored and acknowledged by the gateway in the VM.

Slow (tens of minutes under emulation): marked `slow`, out of the default run.
The image comes from hil_tests/rpi/build-image.sh (debootstrap, cached).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from terrapin.tools.devkit.broker import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
IMAGE = Path(os.environ.get("TERRAPIN_RPI_IMAGE", REPO / ".cache" / "rpi-arm64"))
VENV = "/opt/terrapin/venv"


class Shell:
    """A root shell on the VM's serial console, through pyserial like a board's console."""

    def __init__(self, url: str, log: Path):
        import serial

        self.ser = serial.serial_for_url(url, timeout=0.5)
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.buf = b""

    def read_until(self, pattern: bytes, timeout: float) -> tuple[re.Match, str]:
        """(the match, everything the VM printed before it)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                before = self.buf[: m.start()].decode(errors="replace")
                self.buf = self.buf[m.end() :]
                return m, before
            if time.monotonic() > deadline:
                tail = self.buf[-2000:].decode(errors="replace")
                raise AssertionError(
                    f"no {pattern!r} on the VM console in {timeout:.0f} s:\n{tail}"
                )
            data = self.ser.read(4096)
            if data:
                self.log.write(data)
                self.log.flush()
                self.buf = (self.buf + data)[-200_000:]

    def run(self, command: str, timeout: float = 300, ok: bool = True) -> tuple[int, str]:
        marker = f"__TP{time.monotonic_ns()}__"
        self.buf = b""
        self.ser.write(f"{command}; echo {marker}=$?\n".encode())
        m, out = self.read_until(rf"{marker}=(\d+)".encode(), timeout)
        code = int(m.group(1))
        if ok and code != 0:
            raise AssertionError(f"`{command}` exited {code} in the VM (log: {self.log.name})")
        return code, out

    def close(self) -> None:
        self.ser.close()
        self.log.close()


@pytest.fixture
def vm(tmp_path: Path):
    qemu = shutil.which("qemu-system-aarch64")
    if qemu is None:
        pytest.skip("qemu-system-aarch64 is missing (apt-get install qemu-system-arm)")
    if not (IMAGE / "rootfs.img").exists():
        pytest.skip(f"no arm64 image in {IMAGE}: run `sudo hil_tests/rpi/build-image.sh` first")
    overlay = tmp_path / "disk.qcow2"
    base = str(IMAGE / "rootfs.img")
    qemu_img = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, str(overlay)]
    subprocess.run(qemu_img, check=True)
    console, api, mqtt = free_port(), free_port(), free_port()
    net = f"user,id=n0,hostfwd=tcp:127.0.0.1:{api}-:8377,hostfwd=tcp:127.0.0.1:{mqtt}-:1883"
    cmd = [
        qemu, "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048", "-nographic",
        "-kernel", str(IMAGE / "vmlinuz"), "-initrd", str(IMAGE / "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyAMA0",
        "-drive", f"if=virtio,file={overlay},format=qcow2",
        "-netdev", net, "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"tcp:127.0.0.1:{console},server=on,wait=on",
        "-monitor", "none",
    ]  # fmt: skip
    with open(tmp_path / "qemu.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1)
        shell = Shell(f"socket://127.0.0.1:{console}", tmp_path / "console.log")
        shell.read_until(rb"root@terrapin-rpi:~# ", 600)
        shell.run("stty -echo cols 200")
        yield shell, api, mqtt
        shell.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def wheel_server(tmp_path: Path):
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
    subprocess.run([*pip, "-w", str(dist), str(REPO)], check=True)
    (whl,) = dist.glob("terrapin_sensor_network-*.whl")
    # The host's CA bundle goes along: where HTTPS is inspected by a proxy with its
    # own CA, pip in the VM needs it as much as pip here does.
    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copy(cafile, dist / "host-ca.pem")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(dist))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://10.0.2.2:{server.server_address[1]}", whl.name  # the host, seen from slirp
    server.shutdown()


def test_gateway_installs_and_runs_on_debian_arm64(vm, wheel_server):
    from terrapin.tools.devkit.simboard import SimBoard, board_address, new_key

    shell, _api_port, mqtt_port = vm
    t0 = time.monotonic()
    shell.run("uname -m | grep -qx aarch64 && python3 --version")
    shell.run("echo nameserver 10.0.2.3 > /etc/resolv.conf")  # QEMU's user-network DNS
    # Raspberry Pi OS has procps (/bin/kill, used by the ExecReload= of Mosquitto and of
    # our unit); images built before build-image.sh included it lack it.
    procps = "(apt-get update -q && apt-get install -y -q procps) >/dev/null"
    shell.run(f"test -x /bin/kill || {procps}", timeout=900)
    shell.run(f"python3 -m venv {VENV}")
    url, wheel = wheel_server
    shell.run(f"curl -sSf -o /root/host-ca.pem {url}/host-ca.pem")
    shell.run(f"{VENV}/bin/pip install -q --cert /root/host-ca.pem '{url}/{wheel}'", timeout=3600)
    installed = time.monotonic() - t0
    steps = [
        "useradd --system --home /var/lib/terrapin --shell /usr/sbin/nologin terrapin",
        f"{VENV}/bin/terrapin gateway init",
        "install -d -o terrapin /var/lib/terrapin",
        "cp /etc/terrapin/mosquitto/passwd /etc/terrapin/mosquitto/acl /etc/mosquitto/",
        "chown root:mosquitto /etc/mosquitto/passwd /etc/mosquitto/acl",
        "chmod 640 /etc/mosquitto/passwd /etc/mosquitto/acl",
        "printf 'per_listener_settings false\\nlistener 1883 0.0.0.0\\nallow_anonymous false\\n"
        "password_file /etc/mosquitto/passwd\\nacl_file /etc/mosquitto/acl\\n' "
        "> /etc/mosquitto/conf.d/terrapin.conf",
        'sed -i \'s#^password_file = "mosquitto/passwd"#password_file = "/etc/mosquitto/passwd"#\''
        " /etc/terrapin/gateway.toml",
        "chown -R terrapin: /etc/terrapin && chmod 600 /etc/terrapin/gateway.secret",
        "systemctl restart mosquitto",
        f"cp {VENV}/lib/python3*/site-packages/terrapin/gateway/systemd/terrapin-gateway.service"
        " /etc/systemd/system/",
        "systemctl daemon-reload && systemctl enable --now terrapin-gateway",
    ]
    for step in steps:
        shell.run(step, timeout=600)
    deadline = time.monotonic() + 600
    while True:
        code, out = shell.run("curl -s 127.0.0.1:8377/api/status", ok=False)
        if code == 0 and '"connected": true' in out:
            break
        assert time.monotonic() < deadline, f"gateway API never said connected:\n{out}"
        time.sleep(5)
    shell.run("systemctl is-active terrapin-gateway")
    # A board on the host, allow-listed in the VM, publishes through the forwarded port.
    key = new_key()
    addr = board_address(key).hex()
    from coincurve import PrivateKey

    pub = PrivateKey(key).public_key.format(compressed=False).hex()
    shell.run(
        f"TERRAPIN_BOARD_PASSWORD=hilpass {VENV}/bin/terrapin gateway device add {addr}"
        f" --pubkey {pub}"
        " --config /etc/terrapin/gateway.toml >/dev/null",
        timeout=600,
    )
    shell.run("chown root:mosquitto /etc/mosquitto/passwd && chmod 640 /etc/mosquitto/passwd")
    shell.run("systemctl reload mosquitto && sleep 2")
    board = SimBoard("127.0.0.1", mqtt_port, key, password="hilpass").start(60)
    try:
        for seq in (1, 2, 3):
            board.publish(board.envelope(seq), seq)
        assert board.wait_settled([1, 2, 3], timeout=300), (board.acked, board.rejected)
        assert board.acked == {1, 2, 3}
    finally:
        board.stop()
    shell.run("systemctl is-active terrapin-gateway")
    print(f"\narm64 VM: pip install {installed:.0f} s, whole test {time.monotonic() - t0:.0f} s")
