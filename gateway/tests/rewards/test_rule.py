"""The reward rule (gateway/rewards/rule.py) against hand-computed amounts and its invariants."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terrapin.gateway.rewards.rule import (
    ZERO_ADDRESS,
    RewardsError,
    cumulative_rewards,
    epoch_of,
    epoch_rewards,
    owners_at,
)

A, B, C = ("0x" + c * 40 for c in "abc")
ALICE, BOB = "0x" + "11" * 20, "0x" + "22" * 20


def readings(board, n, epoch=5, flags=0, start=0):
    return [(board, start + i, flags, epoch) for i in range(n)]


def test_proportional_with_floor_rounding():
    data = readings(A, 1) + readings(B, 2)
    r = epoch_rewards(data, {A: ALICE, B: BOB}, epoch=5, budget=100, cap=10)
    # 100 * 1 // 3 = 33 and 100 * 2 // 3 = 66; one base unit stays unpaid.
    assert r.boards == {A: 33, B: 66}
    assert r.owners == {ALICE: 33, BOB: 66}
    assert r.remainder == 1


def test_cap_limits_weight_per_board():
    data = readings(A, 50) + readings(B, 5)
    r = epoch_rewards(data, {A: ALICE, B: BOB}, epoch=5, budget=1000, cap=5)
    assert r.readings == {A: 50, B: 5}
    assert r.weights == {A: 5, B: 5}
    assert r.owners == {ALICE: 500, BOB: 500}


def test_flagged_readings_earn_nothing():
    data = readings(A, 3) + readings(B, 3, flags=1) + readings(B, 1, start=10)
    r = epoch_rewards(data, {A: ALICE, B: BOB}, epoch=5, budget=400, cap=100)
    assert r.flagged == {B: 3}
    assert r.owners == {ALICE: 300, BOB: 100}


def test_unowned_share_is_not_redistributed():
    data = readings(A, 1) + readings(B, 1)
    owned = epoch_rewards(data, {A: ALICE, B: BOB}, epoch=5, budget=100, cap=10)
    half = epoch_rewards(data, {A: ALICE}, epoch=5, budget=100, cap=10)
    zero = epoch_rewards(data, {A: ALICE, B: ZERO_ADDRESS}, epoch=5, budget=100, cap=10)
    assert owned.owners[ALICE] == half.owners[ALICE] == zero.owners[ALICE] == 50
    assert half.unowned == zero.unowned == 50
    assert BOB not in half.owners


def test_owner_of_several_boards_gets_the_sum():
    data = readings(A, 1) + readings(B, 1) + readings(C, 1)
    r = epoch_rewards(data, {A: ALICE, B: ALICE, C: BOB}, epoch=5, budget=10, cap=10)
    assert r.owners == {ALICE: 6, BOB: 3}  # 3 + 3 for Alice; 1 unit of rounding unpaid


def test_only_the_epoch_asked_for_counts_and_duplicates_count_once():
    data = readings(A, 2, epoch=4) + readings(A, 2, epoch=5, start=2) + readings(B, 1, epoch=5)
    data += [(A, 0, 0, 5)]  # seq 0 re-anchored in epoch 5: it already counted in 4
    r = epoch_rewards(data, {A: ALICE, B: BOB}, epoch=5, budget=30, cap=10)
    assert r.readings == {A: 2, B: 1}
    assert r.owners == {ALICE: 20, BOB: 10}


def test_no_readings_pays_nothing():
    r = epoch_rewards([], {A: ALICE}, epoch=5, budget=100, cap=10)
    assert r.owners == {} and r.remainder == 100


def test_addresses_are_normalised():
    r = epoch_rewards([(A.upper().replace("0X", "0x"), 1, 0, 5)], {A: ALICE.upper()[2:]}, 5, 7, 1)
    assert r.owners == {ALICE: 7}


@pytest.mark.parametrize(
    "kwargs",
    [{"epoch": -1}, {"budget": -1}, {"cap": 0}],
)
def test_bad_parameters_are_typed_errors(kwargs):
    args = {"epoch": 5, "budget": 10, "cap": 1} | kwargs
    with pytest.raises(RewardsError):
        epoch_rewards([], {}, **args)


def test_bad_address_is_a_typed_error():
    with pytest.raises(RewardsError):
        epoch_rewards([("0x1234", 1, 0, 5)], {}, 5, 10, 1)


def test_epoch_of_is_the_utc_day():
    assert epoch_of(0) == 0
    assert epoch_of(86_399) == 0
    assert epoch_of(86_400) == 1
    assert epoch_of(1_764_460_800) == 20_422  # 2025-11-30T00:00:00Z
    assert epoch_of(3_600 * 5, epoch_seconds=3_600) == 5


def test_cumulative_sums_epochs_with_owner_changes():
    data = readings(A, 2, epoch=1) + readings(B, 2, epoch=1) + readings(A, 1, epoch=2, start=9)
    owners = {1: {A: ALICE, B: BOB}, 2: {A: BOB}}  # A sold to Bob before epoch 2 ended
    totals, epochs = cumulative_rewards(data, owners.__getitem__, through_epoch=2, budget=100)
    assert [e.epoch for e in epochs] == [1, 2]
    assert totals == {ALICE: 50, BOB: 150}
    totals1, _ = cumulative_rewards(data, owners.__getitem__, through_epoch=1, budget=100)
    assert totals1 == {ALICE: 50, BOB: 50}


boards = st.sampled_from(["0x" + f"{i:040x}" for i in range(1, 9)])
reading = st.tuples(boards, st.integers(0, 30), st.sampled_from([0, 0, 0, 1, 4]), st.integers(0, 3))


@given(
    st.lists(reading, max_size=80),
    st.integers(0, 10**24),
    st.integers(1, 12),
    st.dictionaries(boards, st.sampled_from([ALICE, BOB, ZERO_ADDRESS])),
)
def test_invariants(data, budget, cap, owners):
    totals, epochs = cumulative_rewards(data, owners, through_epoch=3, budget=budget, cap=cap)
    shuffled = list(data)
    random.Random(1).shuffle(shuffled)
    again, _ = cumulative_rewards(shuffled, owners, through_epoch=3, budget=budget, cap=cap)
    assert again == totals  # order of input never matters
    for e in epochs:
        paid = sum(e.boards.values())
        assert paid <= e.budget
        if e.boards:
            assert e.remainder < len(e.boards)  # floor loses < 1 unit per board
        else:
            assert e.remainder == e.budget  # only flagged readings: nobody earns
        assert e.paid + e.unowned == paid
        assert all(w <= cap for w in e.weights.values())
    assert sum(totals.values()) == sum(e.paid for e in epochs)


def test_owner_is_the_last_binding_before_the_epoch_ends():
    day = 86_400
    bindings = [
        (A, ALICE, 1 * day + 5),
        (B, BOB, 1 * day + 9),
        (A, BOB, 2 * day),
        (B, ZERO_ADDRESS, 3 * day),
    ]
    assert owners_at(bindings, 0) == {}
    assert owners_at(bindings, 1) == {A: ALICE, B: BOB}
    assert owners_at(bindings, 2) == {A: BOB, B: BOB}
    assert owners_at(bindings, 3) == {A: BOB}  # B unbound
