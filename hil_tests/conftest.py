"""Fixtures of the HIL bench: chain, gateway home, broker, network, gateway, boards.

Each test gets its own gateway folder (from `terrapin gateway init`), its own
Mosquitto with the generated passwords and ACL, the real gateway process with
the chain stages inside it, a TCP proxy between the boards and the broker
(the `network` the test hurts), and boards of the selected --terrapin-target.
`hil.finish(...)` drains the boards, waits for the anchors, checks the end
state exactly and adds a row to the summary table.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from terrapin.hil.boards import BoardBase, SocketBoard, UnixBoard
from terrapin.hil.endstate import Result, check, wait_anchored
from terrapin.hil.netproxy import NetProxy
from terrapin.hil.plugin import record_hil_result
from terrapin.hil.qemuboard import QemuBoard
from terrapin.hil.serialboard import SerialBoard
from terrapin.tools.bench.board_qemu import split_args
from terrapin.tools.devkit.gatewayhome import (
    GatewayHome,
    GatewayProcess,
    chain_section,
    start_broker,
)

QEMU_IMAGE = Path(__file__).resolve().parent.parent / ".cache" / "qemu" / "esp32-flash.bin"


def qemu_image(given: str | None) -> Path:
    """The flash image for target qemu: --terrapin-qemu-image, else what `make qemu-image` built."""
    path = Path(given) if given else QEMU_IMAGE
    if not path.is_file():
        pytest.skip(
            f"target qemu: no flash image at {path} (`make qemu-image MICROPYTHON_BIN=...` "
            "builds it from MicroPython's ESP32 .bin: docs/HIL.md, 'QEMU')"
        )
    return path


@pytest.fixture(autouse=True)
def _target_available(request) -> None:
    """Skip a test of a bench-only target before any part is started for it."""
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    if target == "serial" and not request.config.getoption("--terrapin-port"):
        pytest.skip("target serial: no real board given (--terrapin-port /dev/ttyUSB0)")
    if target == "qemu":
        qemu = request.config.getoption("--terrapin-qemu-bin")
        if shutil.which(qemu) is None:
            pytest.skip(
                f"target qemu: {qemu} is not on PATH (Espressif's fork, not in Debian or "
                "PyPI: docs/HIL.md says how to get it)"
            )
        qemu_image(request.config.getoption("--terrapin-qemu-image"))


@pytest.fixture
def scale(request) -> float:
    """Multiplier for durations and counts (--terrapin-hil-scale, or TERRAPIN_HIL_SCALE)."""
    given = request.config.getoption("--terrapin-hil-scale") or os.environ.get("TERRAPIN_HIL_SCALE")
    return float(given) if given else 1.0


@dataclass
class ChainSpec:
    kind: str
    section: dict
    env: dict = field(default_factory=dict)
    proxy: NetProxy | None = None
    rpc_url: str | None = None  # the node itself, not through the proxy


@pytest.fixture(scope="module")
def chain(request, tmp_path_factory) -> Iterator[ChainSpec]:
    """The embedded chain inside the gateway process; anvil behind a proxy for modules
    marked `anvil` (the proxy is how a test takes the RPC down)."""
    if request.node.get_closest_marker("anvil") is None:
        yield ChainSpec("embedded", chain_section())
        return
    from terrapin.tools.devkit.chainkit import ANVIL_KEY, Anvil, deploy_on_rpc

    anvil = Anvil(request.getfixturevalue("anvil_exe"), tmp_path_factory.mktemp("anvil")).start()
    proxy = NetProxy(("127.0.0.1", anvil.port)).start()
    try:
        deployed = deploy_on_rpc(anvil.url)
        section = chain_section(
            f"http://127.0.0.1:{proxy.port}",
            registry=deployed.registry,
            anchor=deployed.anchor,
            key_env="TERRAPIN_CHAIN_KEY",
            rpc_timeout=2,
        )
        yield ChainSpec("anvil", section, {"TERRAPIN_CHAIN_KEY": ANVIL_KEY}, proxy, anvil.url)
    finally:
        proxy.stop()
        anvil.stop()


# The gateway side is shared by the tests of a module (each test has its own boards
# and checks only their readings); `bench_ready` repairs what a test broke.


@pytest.fixture(scope="module")
def gateway_home(tmp_path_factory, chain: ChainSpec) -> GatewayHome:
    return GatewayHome(tmp_path_factory.mktemp("gateway"), chain.section)


@pytest.fixture(scope="module")
def broker(mosquitto_exe: str, gateway_home: GatewayHome):
    """Mosquitto on a free port with the gateway's passwords and ACL, persistence on."""
    b = start_broker(gateway_home)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def network(gateway_home: GatewayHome, broker) -> Iterator[NetProxy]:
    """The link between the boards and the broker: delay, loss, partition."""
    proxy = NetProxy(("127.0.0.1", gateway_home.mqtt_port)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def gateway(gateway_home: GatewayHome, broker, chain: ChainSpec) -> Iterator[GatewayProcess]:
    """The real `terrapin gateway run` process (its own DB; chain stages inside)."""
    gw = GatewayProcess(gateway_home, env=chain.env).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def bench_ready(chain, broker, network, gateway) -> None:
    """Before each test: links healed, broker and gateway running (a failed test may
    have left them broken)."""
    for proxy in (network, chain.proxy):
        if proxy is not None:
            proxy.clear()
            if proxy.partitioned:
                proxy.heal()
    if broker.process is None or broker.process.poll() is not None:
        broker.start()
    if gateway.proc is None or gateway.proc.poll() is not None:
        gateway.start()


@pytest.fixture
def boards(
    request, target: str, tmp_path: Path, gateway_home, broker, network, bench_ready,
    micropython_exe,
):  # fmt: skip
    """Factory: `boards(name, **config)` -> a provisioned board of the --terrapin-target."""
    made: list[BoardBase] = []
    opts = request.config

    def make(name: str = "b0", **config: object) -> BoardBase:
        where = (network.host, network.port)
        if target == "unix":
            b: BoardBase = UnixBoard(name, tmp_path / "boards", where, **config)
        elif target == "socket":
            b = SocketBoard(name, tmp_path / "boards", where, **config)
        elif target == "serial":
            b = SerialBoard(
                name,
                tmp_path / "boards",
                where,
                port=opts.getoption("--terrapin-port"),
                relay_cmd=opts.getoption("--terrapin-relay-cmd"),
                **config,
            )
        else:
            b = QemuBoard(
                name,
                tmp_path / "boards",
                where,
                qemu_bin=opts.getoption("--terrapin-qemu-bin"),
                image=qemu_image(opts.getoption("--terrapin-qemu-image")),
                machine=opts.getoption("--terrapin-qemu-machine"),
                extra_args=split_args(opts.getoption("--terrapin-qemu-args")),
                boot_timeout_s=opts.getoption("--terrapin-qemu-boot-timeout"),
                uplink_uart=opts.getoption("--terrapin-qemu-uplink-uart"),
                **config,
            )
        made.append(b)
        b.provision(gateway_home, broker)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def board(boards) -> BoardBase:
    """One provisioned board of the selected target."""
    return boards("b0")


class Hil:
    """What a scenario needs besides its parts: timing, the end-state check, the table."""

    def __init__(self, request, target: str, home: GatewayHome, gateway: GatewayProcess, scale):
        self.request = request
        self.target = target
        self.home = home
        self.gateway = gateway
        self.scale = scale
        self.t0 = time.monotonic()
        self.recorded = False
        self.base = (gateway.starts, self._counts())

    def _counts(self) -> dict:
        try:
            counts = self.gateway.status()["counts"]
        except OSError:
            return {}
        return {"duplicate": counts["duplicate"], **counts["rejected"]}

    def gateway_counts(self) -> dict:
        """This test's share of the gateway's counters (since its last start if it
        was restarted during the test)."""
        now = self._counts()
        starts, base = self.base
        if starts != self.gateway.starts:
            return now
        return {k: v - base.get(k, 0) for k, v in now.items()}

    @property
    def scenario(self) -> str:
        name = self.request.node.originalname
        return name.removeprefix("test_")

    def n(self, count: int) -> int:
        """A count scaled by --terrapin-hil-scale."""
        return max(1, int(count * self.scale))

    def seconds(self, s: float) -> float:
        return s * self.scale

    def wait_signed(self, board: BoardBase, count: int, timeout: float = 60.0) -> None:
        """Until the board has signed `count` readings (all boots)."""
        timeout *= board.wait_scale
        deadline = time.monotonic() + timeout
        while len(set(board.signed())) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{board.name} signed {len(set(board.signed()))} of {count} readings in "
                    f"{timeout:.0f} s:\n{board.console_tail()}"
                )
            time.sleep(0.05)

    def finish(
        self, boards: list[BoardBase], drain_timeout: float = 90.0, anchor_timeout: float = 60.0
    ) -> Result:
        """Let the boards drain and exit, wait for the anchors, check and record."""
        for b in boards:
            if not b.running():
                b.start("--max-readings", "0", "--exit-when-drained", "--stats")
        for b in boards:
            b.wait_exit(drain_timeout * b.wait_scale)
        wait_anchored(self.home.db_path, boards, anchor_timeout)
        counts = self.gateway_counts()
        status = {
            "counts": {
                "duplicate": counts.pop("duplicate", 0),
                "rejected": counts,
            }
        }
        result = Result(self.scenario, self.target, seconds=time.monotonic() - self.t0)
        check(result, boards, self.home.db_path, status)
        self.record(result)
        if not result.ok:
            context = "\n".join(f"--- {b.name} console\n{b.console_tail(25)}" for b in boards)
            raise AssertionError(
                "\n".join(result.problems)
                + f"\n{context}\n--- gateway log: {self.gateway.log_path}\n"
                + self.gateway.log_tail(15)
            )
        return result

    def record_failure(self) -> None:
        """A test that failed before finish() still gets its row, naming what it knew."""
        rep = getattr(self.request.node, "rep_call", None)
        if self.recorded or rep is None or not rep.failed:
            return
        result = Result(self.scenario, self.target, seconds=time.monotonic() - self.t0)
        message = str(rep.longrepr.reprcrash.message if hasattr(rep.longrepr, "reprcrash") else "")
        result.problems.append(f"{self.scenario}/{self.target}: {message.splitlines()[0][:300]}")
        self.record(result)

    def record(self, result: Result) -> None:
        self.recorded = True
        row = result.row()
        for key, value in row.items():
            if key != "problems":
                self.request.node.user_properties.append((key, value))
        record_hil_result(self.request.config, row)


@pytest.fixture
def hil(request, target: str, gateway_home, gateway, bench_ready, scale) -> Iterator[Hil]:
    h = Hil(request, target, gateway_home, gateway, scale)
    yield h
    h.record_failure()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
