"""A chain node that does not answer, said in one sentence.

requests/urllib3 report a refused connection as three nested exceptions and a
paragraph ("HTTPConnectionPool(host=..., port=...): Max retries exceeded with url:
/ (Caused by NewConnectionError(...))"). Commands that talk to a node wrap their
work in `node_errors` (or decorate with `with_node_errors`), so that a person sees

    error: the chain node at http://127.0.0.1:8545 does not answer (connection refused)
    hint: is the node running, and is the URL right? ...
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from terrapin.gateway.errors import TerrapinError


@functools.cache
def node_down() -> tuple[type[BaseException], ...]:
    """What a node that is down, unreachable or too slow raises through web3's HTTP
    provider (imported when first needed: web3 takes a second to import)."""
    import requests
    from web3.exceptions import ProviderConnectionError

    return (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        ProviderConnectionError,
        ConnectionError,
        TimeoutError,
        socket.gaierror,
    )


F = TypeVar("F", bound=Callable[..., Any])


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__, *[a for a in e.args if isinstance(a, BaseException)]]
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError keeps the cause here
        if isinstance(reason, BaseException):
            stack.append(reason)


def reason(exc: BaseException) -> str:
    """A few words for why the node did not answer."""
    text = " ".join(str(e) for e in _causes(exc)).lower()
    for needle, words in (
        ("refused", "connection refused"),
        ("name or service not known", "unknown host name"),
        ("nodename nor servname", "unknown host name"),
        ("temporary failure in name resolution", "host name not resolvable"),
        ("timed out", "timed out"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
        ("reset by peer", "connection reset"),
    ):
        if needle in text:
            return words
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:120]


def url_of(exc: BaseException) -> str | None:
    """The URL a requests exception was about, if it says."""
    for e in _causes(exc):
        request = getattr(e, "request", None)
        url = getattr(request, "url", None)
        if url:
            return str(url).rstrip("/")
    return None


def unreachable(url: str | None, exc: BaseException) -> TerrapinError:
    """A ChainError (chain.node) that says, in one sentence, that the node is down."""
    from terrapin.gateway.chain.node import ChainError

    where = f"at {url} " if url else ""
    return ChainError(
        f"the chain node {where}does not answer ({reason(exc)})",
        hint="is the node running, and is the URL right? "
        "(--rpc, or [chain] network in gateway.toml)",
    )


@contextlib.contextmanager
def node_errors(url: str | None = None) -> Iterator[None]:
    """Inside: a node that does not answer becomes one ChainError sentence."""
    try:
        yield
    except Exception as exc:
        # Also a wrapper whose cause is the dead node: "publishing epoch 1 would revert:
        # HTTPConnectionPool(...)" is not a revert (onchain.py wraps any call failure).
        down = next((e for e in _causes(exc) if isinstance(e, node_down())), None)
        if down is not None:
            raise unreachable(url or url_of(exc), exc) from None
        raise


def with_node_errors(fn: F) -> F:
    """A command whose node may be down: one sentence instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with node_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
