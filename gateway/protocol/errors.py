"""The protocol core's typed errors: everything refused at the decode boundary.

TerrapinError
  ProtocolError          input that is not wire protocol v1 (also a ValueError)
    EnvelopeError        a rejected reading; carries the wire `Reason`
    AckError             an ACK payload that is not one
    PublicKeyError       not an uncompressed secp256k1 public key
    SignatureError       a signature from which no public key recovers
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from terrapin.gateway.errors import TerrapinError

if TYPE_CHECKING:
    from terrapin.gateway.protocol.reasons import Reason


class ProtocolError(TerrapinError, ValueError):
    """Bytes from a board, the broker or a file that do not follow the protocol.

    Also a ValueError, which is what callers caught before the tree existed.
    """


class EnvelopeError(ProtocolError):
    """A reading that is rejected; `reason` goes into the ACK and the counters."""

    def __init__(self, reason: Reason, detail: str = "", *, kid: bytes | None = None):
        super().__init__(f"{reason.name}: {detail}" if detail else reason.name)
        self.reason = reason
        self.detail = detail
        self.kid = kid
        self.seq: int | None = None


class AckError(ProtocolError):
    """An ACK payload that is not `{1: [[lo, hi], ...], 2: [[seq, reason], ...]}`."""


class PublicKeyError(ProtocolError):
    """A public key that is not 65 bytes 0x04||X||Y."""


class SignatureError(ProtocolError):
    """A signature (r||s, v) from which no public key can be recovered."""
