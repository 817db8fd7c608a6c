"""Several gateway instances on one PostgreSQL store (tests, HIL, bench).

`ClusterHome` is a GatewayHome (the code of `gateway init`) switched to a
PostgreSQL store and an MQTT share group, plus `instances - 1` more instances
made by the code of `terrapin gateway instance add` (each its own broker user,
secret, status port and config file). `Cluster` runs one real `terrapin gateway
run` process per instance and, to the HIL bench, looks like one GatewayProcess
(start, starts, status, proc, log_tail).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from terrapin.gateway.instances import add_instance
from terrapin.gateway.storebase import open_store
from terrapin.tools.devkit.broker import free_port
from terrapin.tools.devkit.gatewayhome import GatewayHome
from terrapin.tools.devkit.gatewayproc import GatewayProcess, GatewayProcessError

SHARE_GROUP = "terrapin"


def _set(text: str, section: str, key: str, value: str) -> str:
    """Set `key` (present with its default) in `[section]` of a rendered gateway.toml."""
    head = text.index(f"[{section}]\n")
    pattern = re.compile(rf"^{key} = .*$", re.M)
    m = pattern.search(text, head)
    if m is None:
        raise ValueError(f"gateway.toml has no {section}.{key}")
    return text[: m.start()] + f'{key} = "{value}"' + text[m.end() :]


class ClusterHome(GatewayHome):
    def __init__(
        self,
        root: Path,
        store_url: str,
        chain: dict[str, object] | None,
        *,
        instances: int = 3,
    ):
        super().__init__(root, chain)
        text = self.config_path.read_text()
        text = _set(text, "store", "url", store_url)
        text = _set(text, "mqtt", "share_group", SHARE_GROUP)
        self.config_path.write_text(text)
        open_store(store_url).close()
        self.db_path = store_url  # type: ignore[assignment]  # what endstate reads
        self.store_url = store_url
        self.instance_configs = [self.config_path]
        for n in range(1, instances):
            path, _ = add_instance(self.config_path, f"i{n}", api_port=free_port())
            self.instance_configs.append(path)


class Cluster:
    """One `terrapin gateway run` per instance config."""

    def __init__(self, home: ClusterHome, env: Mapping[str, str] | None = None):
        self.home = home
        self.procs = [
            GatewayProcess(path, env=env, log=path.with_suffix(".log"))
            for path in home.instance_configs
        ]
        self.kills = 0

    # -- what the HIL bench uses of one GatewayProcess -------------------------------
    @property
    def starts(self) -> int:
        return sum(p.starts for p in self.procs)

    @property
    def proc(self) -> Any:
        """A process when every instance runs, else None (the bench then start()s)."""
        return self.procs[0].proc if all(p.running() for p in self.procs) else None

    @property
    def log_path(self) -> Path:
        return self.procs[0].log_path

    def start(self, wait: bool = True) -> Cluster:
        for p in self.procs:
            if not p.running():
                p.start(wait=False)
        if wait:
            for p in self.procs:
                p.wait_ready()
        return self

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def status(self) -> dict[str, Any]:
        """Counts summed over the instances that answer."""
        counts: dict[str, Any] = {"duplicate": 0, "stored": 0, "rejected": {}}
        answered = 0
        for p in self.procs:
            with contextlib.suppress(OSError, ValueError):
                c = p.status()["counts"]
                answered += 1
                counts["duplicate"] += c.get("duplicate", 0)
                counts["stored"] += c.get("stored", 0)
                for reason, n in c.get("rejected", {}).items():
                    counts["rejected"][reason] = counts["rejected"].get(reason, 0) + n
        if not answered:
            raise OSError("no gateway instance answers")
        return {"counts": counts}

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_tail(lines)}" for p in self.procs)

    # -- the failover parts ------------------------------------------------------------
    def leader(self, timeout: float = 30.0) -> int:
        """Index of the instance that runs the chain stages (waits for an election)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    if p.running() and p.status()["stages"]["LeaderStages"]["leader"]:
                        return i
            time.sleep(0.1)
        raise GatewayProcessError(f"no instance became the anchorer in {timeout:.0f} s")

    def leaders(self) -> list[int]:
        """Every instance that says it leads now (never more than one)."""
        out = []
        for i, p in enumerate(self.procs):
            with contextlib.suppress(OSError, ValueError, KeyError):
                if p.running() and p.status()["stages"]["LeaderStages"]["leader"]:
                    out.append(i)
        return out

    def kill(self, index: int) -> None:
        self.procs[index].kill()
        self.kills += 1
