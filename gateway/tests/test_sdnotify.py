"""sd_notify without systemd: a datagram socket stands in for $NOTIFY_SOCKET."""

from __future__ import annotations

import socket
from pathlib import Path

from terrapin.gateway.sdnotify import notify, watchdog_interval


def test_notify_sends_a_datagram(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1")
        assert s.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")


def test_watchdog_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert watchdog_interval() == 30.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_unit_file_is_type_notify():
    unit = (
        Path(__file__).resolve().parents[1] / "systemd" / "terrapin-gateway.service"
    ).read_text()
    assert (
        "Type=notify" in unit and "terrapin gateway run --config /etc/terrapin/gateway.toml" in unit
    )
