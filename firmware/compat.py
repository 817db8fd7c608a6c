"""Small shims so firmware modules run unchanged on MicroPython and CPython.

- `const(x)`: MicroPython folds `_NAME = const(...)` at compile time; on
  CPython it is the identity.
- `micropython`: the real module on MicroPython; on CPython a stand-in whose
  `native` / `viper` are no-op decorators. Write `@micropython.native` in a
  module that did `from .compat import micropython`: the MicroPython compiler
  recognises that spelling and emits machine code (the decorator is never
  looked up at run time), while CPython just calls the no-op.
- `native(func)`: a run-time no-op decorator on both interpreters, for code
  that wants to mark a function without native emission.
- `ticks_ms()` / `ticks_diff(a, b)` / `ticks_add(t, delta)`: a millisecond
  counter, the wrap-safe difference and the wrap-safe sum, from `time` on
  MicroPython and a monotonic clock (which never wraps) on CPython.
- `IS_MICROPYTHON`: True on any MicroPython port.
"""

import sys
import time as _time

IS_MICROPYTHON = sys.implementation.name == "micropython"


def native(func):
    return func



if IS_MICROPYTHON:
    import micropython

    const = micropython.const
    ticks_ms = _time.ticks_ms
    ticks_diff = _time.ticks_diff
    ticks_add = _time.ticks_add
else:

    def const(value):
        return value

    class micropython:  # noqa: N801 - stands in for the MicroPython module
        native = staticmethod(native)
        viper = staticmethod(native)
        const = staticmethod(const)

    def ticks_ms():
        return int(_time.monotonic() * 1000)  # type: ignore[attr-defined]  # CPython branch

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b
