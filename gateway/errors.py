"""The project's error type: every command raises it, `main()` prints it."""


class TerrapinError(Exception):
    """A failure the user can act on: printed as one line, never as a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(TerrapinError):
    """A configuration file or option is missing or invalid."""

    exit_code = 2
