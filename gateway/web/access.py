"""Who may read the dashboard and the JSON API, and the chain facts they show.

Loopback by default. Bound to any other address the listener needs [api] token:
`Authorization: Bearer TOKEN`, or HTTP basic auth with any user name and TOKEN as the
password (so a browser asks for it), compared in constant time; without a token the
gateway refuses to start.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import ConfigError

log = logging.getLogger("terrapin.gateway.api")
LOOPBACK_NAMES = ("localhost",)
CHAIN_HEAD_TTL = 2.0  # s: the chain head for confirmations is read at most this often


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_token(api_cfg: Any) -> str:
    """The dashboard/API token from [api] token or token_file ("" when none is set)."""
    token = getattr(api_cfg, "token", "") or ""
    path = getattr(api_cfg, "token_file", "") or ""
    if path:
        try:
            token = Path(path).read_text().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"cannot read api.token_file {path}: {exc}") from None
    return token


def check_access(host: str, token: str) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"api.host = {host!r} is not a loopback address and no api.token is set: refusing"
            " to serve the dashboard and API to the network without one",
            hint='set [api] token (or token_file) in gateway.toml, or host = "127.0.0.1"',
        )


def authorised(header: str, token: str) -> bool:
    """`Authorization: Bearer TOKEN`, or basic auth with any user and TOKEN as password."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def chain_head(owner: Any) -> Callable[[], int | None]:
    """The current block of the chain a chain stage of `owner` holds (cached for
    CHAIN_HEAD_TTL), or None without one. The stages are looked up on each refresh:
    the demo adds its stages after the API started."""
    cache: list[float | int | None] = [0.0, None]

    def head() -> int | None:
        now = time.monotonic()
        if now - float(cache[0] or 0.0) > CHAIN_HEAD_TTL:
            stages = list(getattr(owner, "stages", []))
            chain = next((s.chain for s in stages if hasattr(s, "chain")), None)
            try:
                cache[1] = None if chain is None else int(chain.w3.eth.block_number)
            except Exception as exc:  # the node is down: confirmations unknown, not fatal
                log.debug("api: chain head: %s", exc)
                cache[1] = None
            cache[0] = now
        return cache[1]  # type: ignore[return-value]

    return head
