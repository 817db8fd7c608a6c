# JSON from outside the firmware (a config, an OTA manifest, a console line),
# parsed so that bad input is a clear error and never a crash.
#
# MicroPython's json.loads recurses per nesting level: `{"a":` repeated a
# thousand times exhausts a 100 KB heap (MemoryError) or the C stack
# (RuntimeError) before it reports anything, and a board that lets either
# escape reboots. Nothing the board reads nests deeper than a few levels, so
# the depth is checked on the raw text first (outside strings), and what the
# parser may still raise becomes JSONError, a ValueError, so callers that
# already refuse bad JSON keep doing so.
#
# Pure logic: imports only json.

import json

from .compat import const

MAX_DEPTH = const(8)  # the config nests 3 levels (sensors[i].pins)
_OPEN = b"[{"
_CLOSE = b"]}"


class JSONError(ValueError):
    # The text is not JSON the board accepts: args[0] says why.
    pass


def depth(data):
    # The deepest [ / { nesting in `data` (bytes or str), not counting strings.
    if isinstance(data, str):
        data = data.encode()
    level = top = 0
    in_str = escaped = False
    for b in data:
        if in_str:
            if escaped:
                escaped = False
            elif b == 92:  # backslash
                escaped = True
            elif b == 34:  # closing quote
                in_str = False
        elif b == 34:
            in_str = True
        elif b in _OPEN:
            level += 1
            if level > top:
                top = level
        elif b in _CLOSE:
            level -= 1
    return top


def loads(data, max_depth=MAX_DEPTH):
    # json.loads with a depth cap; JSONError (a ValueError) for anything bad.
    if depth(data) > max_depth:
        raise JSONError("nested deeper than %d levels" % max_depth)
    try:
        return json.loads(data)
    except MemoryError:
        raise JSONError("too large to parse in the free memory")
    except RuntimeError:
        raise JSONError("nested too deep")
    except (ValueError, TypeError) as exc:
        raise JSONError("not valid JSON: %s" % exc)
