"""A click group whose subcommands are imported only when used.

Keeps `terrapin --help` fast (web3 and py-evm take seconds to import) and lets
each part of the project add its command in its own module.
"""

from __future__ import annotations

import importlib
import importlib.util

import click


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # name -> ("module:attribute", one-line help)
        self.lazy = lazy or {}

    def _available(self, name: str) -> bool:
        module = self.lazy[name][0].split(":")[0]
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(n for n in self.lazy if self._available(n))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and self._available(cmd_name):
            target = self.lazy[cmd_name][0]
            module_name, attr = target.split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{target} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, without importing every module.
        rows = [(n, self.lazy[n][1]) for n in self.list_commands(ctx) if n in self.lazy]
        rows += [
            (n, (self.commands[n].get_short_help_str(60)))
            for n in super().list_commands(ctx)
            if n not in self.lazy
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))
