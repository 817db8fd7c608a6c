"""Pure logic: ACK decoding, the schedule, backoff, keystore files."""

from __future__ import annotations

import cbor2
import pytest

from terrapin.firmware import ack, keystore, schedule, uplink


def test_ack_decode_ranges_and_rejections() -> None:
    payload = cbor2.dumps({1: [[1, 5], [9, 9]], 2: [[7, 12]]}, canonical=True)
    ranges, rejections = ack.decode(payload)
    assert ranges == [(1, 5), (9, 9)] and rejections == [(7, 12)]
    assert ack.covers(ranges, rejections, 3) == 0
    assert ack.covers(ranges, rejections, 7) == 12
    assert ack.covers(ranges, rejections, 6) is None
    assert ack.reason_name(12) == "EQUIVOCATION" and ack.reason_name(14) == "RATE_LIMITED"
    assert ack.reason_name(99) == "REASON_99"
    assert ack.decode(cbor2.dumps({}, canonical=True)) == ([], [])


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({3: []}),
        cbor2.dumps({1: [[5, 1]]}),
        cbor2.dumps({1: [[1]]}),
        cbor2.dumps({1: [[-1, 2]]}),
        cbor2.dumps({2: [["x", 1]]}),
        cbor2.dumps({1: "nope"}),
        cbor2.dumps({1: [[1, 2]]}) + b"\x00",
    ],
)
def test_ack_decode_rejects_bad_payloads(payload: bytes) -> None:
    with pytest.raises(ack.AckError):
        ack.decode(payload)


def test_reason_names_match_the_gateway() -> None:
    from terrapin.gateway.protocol import reasons
    for reason in reasons.Reason:
        assert ack.reason_name(int(reason)) == reason.name


def test_schedule_no_drift_and_skips_missed_slots() -> None:
    s = schedule.Schedule(1000, 0)
    assert s.ready(0) and not s.ready(999) and s.ready(1000)
    assert s.wait_ms(1500) == 500
    assert s.ready(2300)  # late: the next one is still on the grid
    assert s.wait_ms(2300) == 700
    assert s.ready(9100) and s.skipped == 6 and s.wait_ms(9100) == 900


def test_backoff_is_capped_and_jittered() -> None:
    assert uplink.backoff_delay(1000, 0.0) == 500
    assert uplink.backoff_delay(1000, 0.999) == 999
    current, delays = 1000, []
    for _ in range(10):
        delays.append(uplink.backoff_delay(current, 1.0))
        current = min(current * 2, 8000)
    assert delays[:4] == [1000, 2000, 4000, 8000] and max(delays) == 8000


def test_keystore_makes_key_once_and_refuses_damage(tmp_path) -> None:
    root = str(tmp_path)
    priv, pub, addr, created = keystore.identity(root)
    assert created and len(priv) == 32 and len(pub) == 65 and len(addr) == 20
    again = keystore.identity(root)
    assert again[:3] == (priv, pub, addr) and again[3] is False
    raw = (tmp_path / "key.bin").read_bytes()
    assert len(raw) == 40 and raw[:4] == b"TPK1"
    (tmp_path / "key.bin").write_bytes(raw[:20] + bytes([raw[20] ^ 1]) + raw[21:])
    with pytest.raises(keystore.KeyStoreError, match="damaged; not replacing it"):
        keystore.identity(root)
    # a plain 32-byte key (older tools) is accepted
    (tmp_path / "key.bin").write_bytes(priv)
    assert keystore.identity(root)[2] == addr


def test_compat_ticks_add_wraps_like_ticks_diff(micropython_exe) -> None:
    import subprocess

    from terrapin.firmware import compat

    assert compat.ticks_add(1000, 250) == 1250 and compat.ticks_diff(1250, 1000) == 250
    # On MicroPython ticks wrap around; ticks_add must wrap with them.
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from firmware.compat import ticks_add, ticks_diff\n"
        "t = ticks_add(0, -1)\n"
        "print(ticks_diff(ticks_add(t, 100), t), ticks_add(t, 100) < t)\n"
    ) % str(schedule.__file__.rsplit("/", 2)[0])
    out = subprocess.run(
        [micropython_exe, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.split() == ["100", "True"], out.stdout + out.stderr


class _FakeClient:
    """Stands in for MQTTClient: records the envelopes published on the reading topic."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.pid = 0

    def publish(self, topic, msg, qos=0, retain=False, pid=0):  # type: ignore[no-untyped-def]
        if bytes(topic).endswith(b"/reading"):
            self.sent.append(bytes(msg))
        self.pid += 1
        return pid or self.pid


class _FakeApp:
    confirmed = True

    def log(self, level, msg):  # type: ignore[no-untyped-def]
        pass

    error = log


def test_uplink_probes_with_the_oldest_then_resends_the_window_in_order(tmp_path) -> None:
    import time

    from terrapin.firmware.compat import ticks_ms
    from terrapin.firmware.outbox import Outbox

    box = Outbox(str(tmp_path / "outbox"), 65536, 4096)
    for seq in range(1, 21):
        box.append(seq, b"env%d" % seq)
    cfg = {
        "broker": {"keepalive_s": 60, "user": None, "password": None},
        "window": 4,
        "ack_timeout_s": 0.2,
        "status_period_s": 300,
        "backoff_max_s": 1,
    }
    up = uplink.Uplink(None, cfg, "ab" * 20, box, _FakeApp())
    up.client = fake = _FakeClient()
    up.state = uplink._UP  # as once the session is open
    up.status_due, up.status_at = False, ticks_ms()

    def ack(*seqs: int) -> None:
        up._on_message(up.t_ack, cbor2.dumps({1: [[s, s] for s in seqs]}, canonical=True))

    def sent() -> list[int]:
        out = [int(e[3:]) for e in fake.sent]
        fake.sent.clear()
        return out

    up.step()
    up.step()
    assert sent() == [1], "after connecting only the oldest entry is in flight"
    ack(1)
    up.step()
    assert sent() == [2, 3, 4, 5], "the probe is stored: the window opens"
    ack(3)  # 2 was lost on the way
    up.step()
    assert sent() == [6]
    time.sleep(0.25)
    up.step()
    up.step()
    assert sent() == [2], "a timeout goes back to probing with the oldest"
    assert up.wait_ms() > 0, "nothing else is due while probing"
    ack(2)
    up.step()
    assert sent() == [4, 5, 6, 7], "then the rest of the window in order, then newer ones"
    assert up.republished == 4 and box.pending == 20 - 3
