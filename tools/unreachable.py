"""Why a node or service did not answer, in words a person can act on.

requests and urllib3 say "HTTPConnectionPool(host=..., port=...): Max retries
exceeded with url: / (Caused by NewConnectionError(...))"; the commands say
"connection refused".
"""

from __future__ import annotations


def reason(exc: BaseException) -> str:
    """ "connection refused", "no answer in time", "unknown host name", else the type."""
    text = str(exc).lower()
    if "timed out" in text or "timeout" in type(exc).__name__.lower():
        return "no answer in time"
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "failed to resolve" in text:
        return "unknown host name"
    return type(exc).__name__
