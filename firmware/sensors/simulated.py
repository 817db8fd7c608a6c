# A simulated weather sensor for virtual boards: temperature, humidity, pressure.
#
# Deterministic for a given seed on CPython and MicroPython alike (its own
# xorshift32 generator, not `random`): a daily cycle plus a slow random walk
# plus measurement noise, in the ranges a real BME280 reports outdoors.
# `fail_every`: every Nth read raises SensorError (to test error handling).

import math

from . import SensorError

_QUANTITIES = (
    ("temperature", "Cel", 15.0, 6.0, 0.05, 0.02),  # name, unit, mean, daily, walk, noise
    ("humidity", "%RH", 60.0, -15.0, 0.2, 0.3),
    ("pressure", "Pa", 101325.0, 0.0, 8.0, 3.0),
)


class Simulated:
    QUANTITIES = tuple((q[0], q[1]) for q in _QUANTITIES)

    def __init__(self, seed=1, clock=None, fail_every=0, quantities=None):
        self.state = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1
        self.clock = clock
        self.fail_every = fail_every
        self.reads = 0
        self.walk = [0.0, 0.0, 0.0]
        self.enabled = [quantities is None or q[0] in quantities for q in _QUANTITIES]
        if not any(self.enabled):
            raise SensorError("simulated: no known quantity in %r" % (quantities,))

    def _rand(self):
        # Uniform in [-1, 1).
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x / 2147483648.0 - 1.0

    def read(self):
        self.reads += 1
        if self.fail_every and self.reads % self.fail_every == 0:
            raise SensorError("simulated: injected read error (fail_every=%d)" % self.fail_every)
        t = self.clock() if self.clock else 0
        day = math.sin(2 * math.pi * ((t % 86400) / 86400 - 0.375))
        out = []
        for i, (name, unit, mean, daily, walk, noise) in enumerate(_QUANTITIES):
            self.walk[i] = self.walk[i] * 0.999 + walk * self._rand()
            value = mean + daily * day + self.walk[i] + noise * self._rand()
            if self.enabled[i]:
                if unit == "%RH":
                    value = min(100.0, max(0.0, value))
                out.append((name, unit, value))
        return out
