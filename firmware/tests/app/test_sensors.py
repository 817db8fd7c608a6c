"""Sensor drivers against fake buses replaying datasheet values and register dumps."""

from __future__ import annotations

import struct

import pytest

from terrapin.firmware.sensors import SensorError, bme280, dht22, ds18b20, sht3x
from terrapin.firmware.sensors.adc import ADCVoltage
from terrapin.firmware.sensors.simulated import Simulated

# BMP280/BME280 datasheet compensation example (same T/P formulas in both):
# dig_T1..T3, dig_P1..P9, adc_T = 519888 -> 25.08 C, adc_P = 415148 -> 100653.27 Pa.
T = (27504, 26435, -1000)
P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
# Humidity trimming values from a real BME280 register dump.
H = {"H1": 75, "H2": 362, "H3": 0, "H4": 313, "H5": 50, "H6": 30}


def bme_registers(adc_t: int, adc_p: int, adc_h: int) -> dict[int, int]:
    regs: dict[int, int] = {}
    c0 = struct.pack("<HhhHhhhhhhhh", *T, *P) + b"\x00" + bytes([H["H1"]])
    for i, b in enumerate(c0):
        regs[0x88 + i] = b
    h4, h5 = H["H4"], H["H5"]
    c1 = struct.pack("<h", H["H2"]) + bytes(
        [H["H3"], (h4 >> 4) & 0xFF, (h4 & 0x0F) | ((h5 & 0x0F) << 4), (h5 >> 4) & 0xFF, H["H6"]]
    )
    for i, b in enumerate(c1):
        regs[0xE1 + i] = b
    regs[0xD0] = 0x60
    regs[0xF3] = 0
    data = [
        adc_p >> 12,
        (adc_p >> 4) & 0xFF,
        (adc_p & 0xF) << 4,
        adc_t >> 12,
        (adc_t >> 4) & 0xFF,
        (adc_t & 0xF) << 4,
        adc_h >> 8,
        adc_h & 0xFF,
    ]
    for i, b in enumerate(data):
        regs[0xF7 + i] = b
    return regs


class FakeI2C:
    """Replays a register map like machine.I2C; logs writes."""

    def __init__(self, addr: int, regs: dict[int, int] | None = None, reply: bytes = b""):
        self.addr = addr
        self.regs = regs or {}
        self.reply = reply
        self.writes: list[tuple[int | None, bytes]] = []

    def _check(self, addr: int) -> None:
        if addr != self.addr:
            raise OSError(19)  # ENODEV: nobody acks

    def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
        self._check(addr)
        return bytes(self.regs.get(reg + i, 0) for i in range(n))

    def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
        self._check(addr)
        self.writes.append((reg, bytes(buf)))

    def writeto(self, addr: int, buf: bytes) -> None:
        self._check(addr)
        self.writes.append((None, bytes(buf)))

    def readfrom(self, addr: int, n: int) -> bytes:
        self._check(addr)
        return self.reply[:n]


def humidity_double(adc_h: int, t_fine: int) -> float:
    """BME280 datasheet section 8.1 floating-point humidity formula (independent)."""
    var_h = t_fine - 76800.0
    var_h = (adc_h - (H["H4"] * 64.0 + H["H5"] / 16384.0 * var_h)) * (
        H["H2"]
        / 65536.0
        * (1.0 + H["H6"] / 67108864.0 * var_h * (1.0 + H["H3"] / 67108864.0 * var_h))
    )
    var_h = var_h * (1.0 - H["H1"] * var_h / 524288.0)
    return min(100.0, max(0.0, var_h))


def test_bme280_datasheet_example() -> None:
    bus = FakeI2C(0x76, bme_registers(519888, 415148, 30000))
    sensor = bme280.BME280(bus, 0x76)
    values = {q: v for q, _u, v in sensor.read()}
    assert values["temperature"] == pytest.approx(25.08, abs=0.005)
    # datasheet: 100653.27 Pa (double formula); the 64-bit integer one is within 1/32 Pa
    assert values["pressure"] == pytest.approx(100653.27, abs=0.03)
    t_fine, *_ = bme280.compensate(sensor.cal, 519888, 415148, 30000)
    assert t_fine == 128422
    assert values["humidity"] == pytest.approx(humidity_double(30000, t_fine), abs=0.05)
    assert (0xF4, b"\x25") in bus.writes, "forced mode, oversampling x1"


def test_bme280_missing_and_wrong_chip() -> None:
    with pytest.raises(SensorError, match="no answer at I2C address 0x77"):
        bme280.BME280(FakeI2C(0x76, bme_registers(1, 1, 1)), 0x77).read()
    regs = bme_registers(519888, 415148, 30000)
    regs[0xD0] = 0x58  # a BMP280
    with pytest.raises(SensorError, match="not a BME280"):
        bme280.BME280(FakeI2C(0x76, regs), 0x76).read()


def test_sht3x_crc_example_and_conversion() -> None:
    assert sht3x.crc(b"\xbe\xef") == 0x92  # datasheet section 4.12
    raw = bytes([0x66, 0x66, sht3x.crc(b"\x66\x66"), 0x80, 0x00, sht3x.crc(b"\x80\x00")])
    bus = FakeI2C(0x44, reply=raw)
    (tq, tu, tv), (hq, hu, hv) = sht3x.SHT3x(bus).read()
    assert (tq, tu, hq, hu) == ("temperature", "Cel", "humidity", "%RH")
    assert tv == pytest.approx(-45 + 175 * 0x6666 / 65535)
    assert hv == pytest.approx(100 * 0x8000 / 65535)
    assert bus.writes == [(None, b"\x24\x00")]
    with pytest.raises(SensorError, match="CRC"):
        sht3x.SHT3x(FakeI2C(0x44, reply=raw[:5] + b"\x00")).read()
    with pytest.raises(SensorError, match="no answer"):
        sht3x.SHT3x(FakeI2C(0x45, reply=raw)).read()


class FakeOneWire:
    def __init__(self, scratch: bytes, rom: bytes = bytes.fromhex("28ff641e0f0000b4")):
        self.scratch = scratch
        self.rom = rom
        self.log: list[object] = []

    def scan(self) -> list[bytes]:
        return [self.rom] if self.rom else []

    def reset(self) -> bool:
        return bool(self.rom)

    def select_rom(self, rom: bytes) -> None:
        self.log.append(("select", bytes(rom)))

    def writebyte(self, b: int) -> None:
        self.log.append(b)

    def readinto(self, buf: bytearray) -> None:
        buf[:] = self.scratch


def scratchpad(raw: int) -> bytes:
    body = struct.pack("<h", raw) + bytes([0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    return body + bytes([ds18b20.crc(body)])


def test_ds18b20_crc_and_datasheet_values() -> None:
    # Maxim AN27 worked example: ROM 02 1C B8 01 00 00 00 has CRC A2.
    assert ds18b20.crc(bytes.fromhex("021cb801000000")) == 0xA2
    # Datasheet table 1: 0x0191 -> +25.0625 C, 0xFF5E -> -10.125 C.
    assert ds18b20.DS18B20(FakeOneWire(scratchpad(0x0191)), 0).read() == [
        ("temperature", "Cel", 25.0625)
    ]
    ow = FakeOneWire(scratchpad(-0xA2))
    assert ds18b20.DS18B20(ow, 0).read()[0][2] == -10.125
    assert 0x44 in ow.log and 0xBE in ow.log
    bad = bytearray(scratchpad(0x0191))
    bad[0] ^= 1
    with pytest.raises(SensorError, match="CRC"):
        ds18b20.DS18B20(FakeOneWire(bytes(bad)), 0).read()
    with pytest.raises(SensorError, match="none found"):
        ds18b20.DS18B20(FakeOneWire(b"", rom=b""), 0).read()


def test_dht22_datasheet_example() -> None:
    assert dht22.convert(bytes([0x02, 0x8C, 0x01, 0x5F, 0xEE])) == pytest.approx((35.1, 65.2))
    assert dht22.convert(bytes([0x02, 0x8C, 0x80, 0x65, 0x73]))[0] == pytest.approx(-10.1)
    with pytest.raises(SensorError, match="checksum"):
        dht22.convert(bytes([0x02, 0x8C, 0x01, 0x5F, 0xEF]))

    def broken() -> bytes:
        raise OSError(110)

    with pytest.raises(SensorError, match="no answer"):
        dht22.DHT22(broken).read()


def test_adc_divider() -> None:
    class FakeADC:
        def read_uv(self) -> int:
            return 1_950_000

    assert ADCVoltage(FakeADC(), 2.0).read() == [("voltage", "V", pytest.approx(3.9))]


def test_simulated_is_seeded_realistic_and_can_fail() -> None:
    a = Simulated(seed=7, clock=lambda: 1_700_000_000)
    b = Simulated(seed=7, clock=lambda: 1_700_000_000)
    c = Simulated(seed=8, clock=lambda: 1_700_000_000)
    ra = [a.read() for _ in range(200)]
    assert ra == [b.read() for _ in range(200)]
    assert ra != [c.read() for _ in range(200)]
    temps = [r[0][2] for r in ra]
    assert all(-10 < t < 40 for t in temps)
    assert len(set(temps)) > 150, "noisy, not constant"
    assert all(980_00 < r[2][2] < 1040_00 for r in ra)
    failing = Simulated(seed=1, fail_every=3)
    failing.read()
    failing.read()
    with pytest.raises(SensorError, match="injected"):
        failing.read()
    assert [q for q, _u, _v in Simulated(quantities=["pressure"]).read()] == ["pressure"]
