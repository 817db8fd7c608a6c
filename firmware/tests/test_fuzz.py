"""Hostile input: the decoder and the envelope checks raise only their typed
errors (CBORError / COSEError), never anything else, on random and on
mutated valid bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from terrapin.firmware import cbor, cose, cose_check
from terrapin.tools.cli.vectors import load

ENVELOPES = [bytes.fromhex(v["envelope"]) for v in load("valid")]
PUB = {bytes.fromhex(v["envelope"]): bytes.fromhex(v["public_key"]) for v in load("valid")}


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_cbor_errors(data):
    try:
        cbor.loads(data)
    except cbor.CBORError:
        pass


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(ENVELOPES),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4),
    st.booleans(),
)
def test_mutated_envelopes_raise_only_cose_errors(env, edits, with_key):
    data = bytearray(env)
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        kid, seq, _time, records = cose_check.check_envelope(
            bytes(data), None, PUB[env] if with_key else None
        )
    except cose.COSEError as exc:
        assert 1 <= exc.reason <= 10
    else:
        # Only edits that leave a valid reading by the same board can pass.
        assert 1 <= len(records) <= 16 and seq >= 0 and len(kid) == 20
