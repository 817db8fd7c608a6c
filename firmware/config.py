# The board's JSON configuration, validated at boot.
#
# The schema (defaults, drivers, checks, "did you mean") is configschema.py, the
# one the host also uses before it writes a config to a board. Errors are fatal
# (the board cannot run: no broker, no period) or sensor errors (that sensor is
# left out, the others run). `load()` returns plain values, (data, errors,
# sensor_errors, warnings); `errors` empty means the board can run. Secrets
# are never echoed.
#
# Pure logic apart from reading the file: no machine, network or sockets.

from . import configschema as _schema

DEFAULTS = _schema.DEFAULTS
DRIVERS = _schema.DRIVERS
LOG_LEVELS = _schema.LOG_LEVELS


def parse(text, board="unix"):
    # Validate config JSON text: (data, errors, sensor_errors, warnings).
    return _schema.parse(text, board)


def validate(given, board="unix"):
    return _schema.validate(given, board)


def load(path, board="unix"):
    # Read and validate the config file at `path`.
    try:
        f = open(path)
    except OSError:
        return (
            {},
            [
                "config file %s not found; copy config.example.json there and "
                "fill in wifi and broker" % path
            ],
            [],
            [],
        )
    try:
        text = f.read()
    finally:
        f.close()
    return parse(text, board)
