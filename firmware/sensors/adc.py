# Battery (or any) voltage through an ADC pin and a resistor divider: V.
#
# `adc`: an object with machine.ADC's read_uv() (calibrated microvolts on
# the ESP32). `divider`: (R1 + R2) / R2 of the divider, e.g. 2.0 for two equal
# resistors, which most boards use to bring a LiPo (4.2 V) under 3.3 V.

from . import SensorError


class ADCVoltage:
    QUANTITIES = (("voltage", "V"),)

    def __init__(self, adc, divider=2.0):
        self.adc = adc
        self.divider = divider

    def read(self):
        try:
            uv = self.adc.read_uv()
        except OSError as exc:
            raise SensorError("adc: read failed %r" % (exc,))
        return [("voltage", "V", uv * self.divider / 1000000)]
