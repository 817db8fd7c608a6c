"""Password file in mosquitto_passwd's format, cross-checked with the real tool."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from terrapin.gateway import mosquitto_conf as mc


def test_hash_format_matches_mosquitto_2():
    h = mc.hash_password("secret", salt=bytes(range(12)))
    kind, iterations, salt, digest = h.split("$")[1:]
    assert (kind, iterations) == ("7", "101") and len(salt) == 16 and len(digest) == 88
    assert mc.check_password("secret", h) and not mc.check_password("Secret", h)


def test_we_read_what_mosquitto_passwd_writes(tmp_path):
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "passwd"
    path.write_text("")
    subprocess.run([tool, "-b", str(path), "alice", "s3cret"], check=True)
    assert mc.check_password("s3cret", mc.read_passwd(path)["alice"])
    # And our own users sit beside theirs.
    mc.set_user(path, "bob", "pw")
    users = mc.read_passwd(path)
    assert set(users) == {"alice", "bob"} and mc.check_password("pw", users["bob"])
    assert mc.remove_user(path, "bob") and not mc.remove_user(path, "bob")
    with pytest.raises(ValueError):
        mc.set_user(path, "a:b", "x")


def test_acl_and_conf_text():
    acl = mc.render_acl()
    assert "pattern write terrapin/v1/%u/reading" in acl
    assert "topic write terrapin/v1/+/ack" in acl
    conf = mc.render_conf(password_file="/p", acl_file="/a", persistence_dir=None)
    assert "allow_anonymous false" in conf and "persistence" not in conf
