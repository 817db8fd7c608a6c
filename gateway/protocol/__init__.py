"""The host-side protocol core (wire protocol v1, docs/PROTOCOL.md), used by the
gateway, the bundle verifier and the tools: envelope and payload decode, digest,
board address, signatures, topics, the ACK codec, reason codes and their errors.
It imports nothing from the rest of the project but terrapin.gateway.errors."""
