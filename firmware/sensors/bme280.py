# Bosch BME280 over I2C: temperature (Cel), relative humidity (%RH), pressure (Pa).
#
# Forced mode, oversampling x1 for all three: each read() starts one
# conversion, waits for it (about 10 ms) and applies the integer compensation
# formulas of the datasheet (BST-BME280-DS002, section 4.2.3; 64-bit pressure).
# `bus`: anything with machine.I2C's readfrom_mem / writeto_mem.

import struct

from . import SensorError, sleep_ms

_CHIP_ID = 0x60
_REG_ID = 0xD0
_REG_CALIB0 = 0x88
_REG_CALIB1 = 0xE1
_REG_CTRL_HUM = 0xF2
_REG_STATUS = 0xF3
_REG_CTRL_MEAS = 0xF4
_REG_DATA = 0xF7


def _div(a, b):
    # C integer division (truncates toward zero).
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class Calibration:
    def __init__(self, c0, c1):
        # c0: 26 bytes from 0x88, c1: 7 bytes from 0xE1
        (
            self.T1,
            self.T2,
            self.T3,
            self.P1,
            self.P2,
            self.P3,
            self.P4,
            self.P5,
            self.P6,
            self.P7,
            self.P8,
            self.P9,
        ) = struct.unpack("<HhhHhhhhhhhh", c0[:24])
        self.H1 = c0[25]
        self.H2 = struct.unpack("<h", c1[0:2])[0]
        self.H3 = c1[2]
        h4 = (c1[3] << 4) | (c1[4] & 0x0F)
        h5 = (c1[5] << 4) | (c1[4] >> 4)
        self.H4 = h4 - 4096 if h4 & 0x800 else h4
        self.H5 = h5 - 4096 if h5 & 0x800 else h5
        self.H6 = c1[6] - 256 if c1[6] & 0x80 else c1[6]


def compensate(cal, adc_t, adc_p, adc_h):
    # (t_fine, temperature Cel, pressure Pa, humidity %RH) from raw ADC values.
    var1 = (((adc_t >> 3) - (cal.T1 << 1)) * cal.T2) >> 11
    d = (adc_t >> 4) - cal.T1
    var2 = (((d * d) >> 12) * cal.T3) >> 14
    t_fine = var1 + var2
    temp = ((t_fine * 5 + 128) >> 8) / 100

    var1 = t_fine - 128000
    var2 = var1 * var1 * cal.P6
    var2 = var2 + ((var1 * cal.P5) << 17)
    var2 = var2 + (cal.P4 << 35)
    var1 = ((var1 * var1 * cal.P3) >> 8) + ((var1 * cal.P2) << 12)
    var1 = (((1 << 47) + var1) * cal.P1) >> 33
    if var1 == 0:
        raise SensorError("bme280: bad pressure calibration")
    p = 1048576 - adc_p
    p = _div(((p << 31) - var2) * 3125, var1)
    var1 = (cal.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal.P8 * p) >> 19
    p = ((p + var1 + var2) >> 8) + (cal.P7 << 4)
    pressure = p / 256

    v = t_fine - 76800
    a = (((adc_h << 14) - (cal.H4 << 20) - (cal.H5 * v)) + 16384) >> 15
    b = (((v * cal.H6) >> 10) * (((v * cal.H3) >> 11) + 32768)) >> 10
    v = a * (((b + 2097152) * cal.H2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal.H1) >> 4)
    v = 0 if v < 0 else v
    v = 419430400 if v > 419430400 else v
    humidity = (v >> 12) / 1024
    return t_fine, temp, pressure, humidity


class BME280:
    QUANTITIES = (("temperature", "Cel"), ("humidity", "%RH"), ("pressure", "Pa"))

    def __init__(self, bus, addr=0x76):
        self.bus = bus
        self.addr = addr
        self.cal = None

    def _setup(self):
        try:
            chip = self.bus.readfrom_mem(self.addr, _REG_ID, 1)[0]
        except OSError:
            raise SensorError("bme280: no answer at I2C address 0x%02x (check wiring)" % self.addr)
        if chip != _CHIP_ID:
            raise SensorError(
                "bme280: chip id 0x%02x at 0x%02x is not a BME280" % (chip, self.addr)
            )
        self.cal = Calibration(
            self.bus.readfrom_mem(self.addr, _REG_CALIB0, 26),
            self.bus.readfrom_mem(self.addr, _REG_CALIB1, 7),
        )

    def read(self):
        try:
            if self.cal is None:
                self._setup()
            self.bus.writeto_mem(self.addr, _REG_CTRL_HUM, b"\x01")
            self.bus.writeto_mem(self.addr, _REG_CTRL_MEAS, b"\x25")  # x1, x1, forced
            for _ in range(20):
                sleep_ms(2)
                if not self.bus.readfrom_mem(self.addr, _REG_STATUS, 1)[0] & 0x08:
                    break
            else:
                raise SensorError("bme280: conversion did not finish")
            d = self.bus.readfrom_mem(self.addr, _REG_DATA, 8)
        except OSError as exc:
            self.cal = None
            raise SensorError("bme280: I2C error %r" % (exc,))
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == 0x80000:
            raise SensorError("bme280: temperature not measured (skipped)")
        _, t, p, h = compensate(self.cal, adc_t, adc_p, adc_h)
        return [("temperature", "Cel", t), ("humidity", "%RH", h), ("pressure", "Pa", p)]
