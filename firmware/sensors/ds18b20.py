# Maxim DS18B20 on 1-Wire: temperature (Cel).
#
# `ow`: an object with onewire.OneWire's reset(), writebyte(), readinto(),
# select_rom() and scan(). One sensor per pin (the first found). The
# scratchpad's CRC-8 (Dallas/Maxim, x^8+x^5+x^4+1, reflected) is checked; the
# power-on value 85.0 C before any conversion is reported as an error.

from . import SensorError, crc8, sleep_ms

_CONVERT = 0x44
_READ = 0xBE


def crc(data):
    return crc8(data, 0x31, 0, reflected=True)


def convert(scratch):
    # Temperature in Cel from the 9-byte scratchpad.
    if len(scratch) != 9 or crc(scratch[:8]) != scratch[8]:
        raise SensorError("ds18b20: scratchpad CRC mismatch (check the pull-up)")
    raw = scratch[0] | (scratch[1] << 8)
    if raw & 0x8000:
        raw -= 0x10000
    if raw == 0x0550 and scratch[4] != 0 and scratch[6] == 0x0C:
        raise SensorError("ds18b20: power-on value (no conversion done)")
    return raw / 16


class DS18B20:
    QUANTITIES = (("temperature", "Cel"),)

    def __init__(self, ow, conversion_ms=750):
        self.ow = ow
        self.rom = None
        self.conversion_ms = conversion_ms
        self.buf = bytearray(9)

    def read(self):
        try:
            if self.rom is None:
                roms = [r for r in self.ow.scan() if r[0] == 0x28]
                if not roms:
                    raise SensorError("ds18b20: none found on the 1-Wire pin (check wiring)")
                self.rom = roms[0]
            if not self.ow.reset():
                raise SensorError("ds18b20: no presence pulse")
            self.ow.select_rom(self.rom)
            self.ow.writebyte(_CONVERT)
            sleep_ms(self.conversion_ms)
            self.ow.reset()
            self.ow.select_rom(self.rom)
            self.ow.writebyte(_READ)
            self.ow.readinto(self.buf)
        except OSError as exc:
            self.rom = None
            raise SensorError("ds18b20: 1-Wire error %r" % (exc,))
        return [("temperature", "Cel", convert(self.buf))]
