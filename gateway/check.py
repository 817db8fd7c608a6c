"""The check stage: one received envelope -> a Pending reading or a Rejected one.

decode (protocol/envelope.py) -> topic/kid match -> allow-list (policy) -> signature
(protocol/signature.py) -> payload (envelope.py) -> rate limit and flags (policy). Pure
CPU work, no I/O except asking `on_new_key` to remember a recovered key.
"""

from __future__ import annotations

from collections.abc import Callable

from terrapin.gateway.policy import Policy
from terrapin.gateway.protocol.envelope import (
    EnvelopeError,
    decode_envelope,
    decode_payload,
    peek_seq,
)
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.protocol.signature import Verifier
from terrapin.gateway.store import Pending, Rejected


class Checker:
    def __init__(
        self,
        policy: Policy,
        verifier: Verifier,
        on_new_key: Callable[[bytes, bytes], None] | None = None,
    ):
        self.policy = policy
        self.verifier = verifier
        self.on_new_key = on_new_key

    def check(
        self, topic: str, address: bytes | None, payload: bytes, now: float
    ) -> Pending | Rejected:
        env = None
        try:
            env = decode_envelope(payload)
            if address is None or env.kid != address:
                raise EnvelopeError(Reason.TOPIC_MISMATCH, "kid is not the topic's board address")
            if not self.policy.known(env.kid):
                raise EnvelopeError(Reason.UNKNOWN_BOARD, "not on the allow-list")
            learned = self.verifier.public_key(env.kid) is None
            digest = self.verifier.verify(env)
            if learned and self.on_new_key is not None:
                self.on_new_key(env.kid, self.verifier.public_key(env.kid))
            reading = decode_payload(env.payload)
            if self.policy.rate_limited(env.kid, now):
                raise EnvelopeError(Reason.RATE_LIMITED, "board over its rate")
            flags = self.policy.flags(reading, now)
            return Pending(env.kid, reading.seq, digest, env.raw, reading.time, now, flags)
        except EnvelopeError as exc:
            return Rejected(
                topic=topic,
                reason=exc.reason,
                envelope=bytes(payload),
                received_at=now,
                device=address,
                seq=peek_seq(env.payload) if env is not None else None,
                detail=exc.detail,
            )
