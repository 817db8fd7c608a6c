"""The allow-list and broker users (gateway/allowlist.py), on a gateway home made by
`terrapin gateway init`: what `gateway device add/remove` and provisioning share."""

from __future__ import annotations

import pytest

from terrapin.gateway import allowlist, mosquitto_conf
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.store import Store
from terrapin.tools.devkit.simboard import board_address, new_key


def test_parse_address_and_pubkey():
    key = new_key()
    addr = board_address(key)
    assert allowlist.parse_address("0x" + addr.hex().upper()) == addr
    for bad in ("xyz", "0x" + "ab" * 19, ""):
        with pytest.raises(TerrapinError, match="is not a board address"):
            allowlist.parse_address(bad)
    with pytest.raises(TerrapinError, match="does not belong to ADDRESS"):
        allowlist.parse_pubkey("04" + "11" * 64, addr)
    with pytest.raises(TerrapinError, match="does not belong to ADDRESS"):
        allowlist.parse_pubkey("not hex", addr)


def test_add_then_remove_a_board(gw_home):
    addr = board_address(new_key())
    passwd = gw_home.dir / "mosquitto" / "passwd"
    added = allowlist.add_board(gw_home.config_path, addr, None, "kitchen")
    assert added.new and added.broker_user and len(added.password) >= 16
    assert mosquitto_conf.check_password(
        added.password, mosquitto_conf.read_passwd(passwd)[addr.hex()]
    )
    # Adding it again never replaces a live board's password by surprise.
    with pytest.raises(TerrapinError, match="already allowed; its broker password is unchanged"):
        allowlist.add_board(gw_home.config_path, addr, None, password="given-password")
    assert mosquitto_conf.check_password(
        added.password, mosquitto_conf.read_passwd(passwd)[addr.hex()]
    )
    again = allowlist.add_board(
        gw_home.config_path, addr, None, password="given-password", rotate=True
    )
    assert not again.new and again.password == "given-password"
    store = Store(gw_home.config.store.path)
    try:
        assert [d.label for d in store.devices()] == ["kitchen"]
    finally:
        store.close()
    assert "systemctl reload mosquitto" in allowlist.reload_hint(added.cfg)
    allowlist.remove_board(gw_home.config_path, addr)
    assert addr.hex() not in mosquitto_conf.read_passwd(passwd)
    with pytest.raises(TerrapinError, match="is not on the allow-list"):
        allowlist.remove_board(gw_home.config_path, addr)
