"""One gateway per broker client id: a retained presence message with a Last Will.

Two gateways with their own databases but the same broker user share one client
id (Mosquitto's `use_username_as_clientid`), so each CONNECT takes the other's
session and they knock each other off the broker forever. The instance lock
(instancelock.py) cannot see that: it guards one database on one machine.

The holder: its MQTT session publishes, on every connect, a retained message on
`terrapin/gateway/<id>/presence` naming itself (host, pid, boot id, start time),
with a Last Will that clears it. A crash or a lost network makes the broker
publish the will, so a dead holder never blocks a restart.

A newcomer, before its session starts (`check`): a short probe connection with
the same id and session settings (so the session, its subscription and its queued
readings are kept) reads the retained message. Mosquitto 2.0 does not publish a
taken-over client's will, so the probe still sees the holder's message. Then:
- empty, or a holder on this machine whose process is gone (same boot id, pid
  not running; or another boot): free;
- anything else: the probe stays connected for up to HOLDER_GRACE seconds. A live
  holder reconnects within about a second (its reconnect delay) and takes the
  session back, which disconnects the probe: the newcomer exits at once with
  `ClientIdInUse` (exit code 3) naming the holder. A holder that does not come
  back is gone (its machine lost power before the broker noticed): free.
The probe never PUBACKs, so whatever the broker gave it comes again to the holder.

    presence.check(cfg.mqtt, password)          # ClientIdInUse if taken
    presence.attach(ingest.client, cfg.mqtt)    # before ingest.start()
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.instancelock import EXIT_LOCKED

log = logging.getLogger("terrapin.gateway.presence")

HOLDER_GRACE = 5.0  # s: a live holder takes its session back within ~1 s (reconnect delay)
PROBE_TIMEOUT = 10.0  # s: connect + subscribe; a broker that does not answer skips the check
# What the broker's ACL needs (mosquitto_conf.render_acl writes it). Mosquitto 2.0 grants
# a subscription the ACL denies and drops a denied publish in silence, so the check
# reads the ACL file itself when the gateway knows it ([broker] acl_file).
ACL_LINE = "pattern readwrite terrapin/gateway/%u/presence"
RETAINED_WAIT = 0.2  # s after the SUBACK: Mosquitto sends the retained message right behind it


class ClientIdInUse(TerrapinError):
    """A live gateway elsewhere holds this broker client id."""

    exit_code = EXIT_LOCKED


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    boot: str
    since: float
    token: str
    at: float = 0.0  # when this message was published (each connect): a stale one is exact

    @classmethod
    def parse(cls, payload: bytes) -> Holder | None:
        try:
            d = json.loads(payload)
            return cls(
                str(d["host"]),
                int(d["pid"]),
                str(d["boot"]),
                float(d["since"]),
                str(d["token"]),
                float(d.get("at", 0.0)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def payload(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"host {self.host} (pid {self.pid}), since {since}"


def client_key(mqtt_cfg) -> str:
    """The id the broker binds the session to: the user name under
    `use_username_as_clientid` (every broker `gateway init` configures), else the client id."""
    return mqtt_cfg.username or mqtt_cfg.client_id


def topic(mqtt_cfg) -> str:
    return f"terrapin/gateway/{client_key(mqtt_cfg)}/presence"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def me() -> Holder:
    return Holder(socket.gethostname(), os.getpid(), _boot_id(), time.time(), uuid.uuid4().hex)


def _gone_here(h: Holder, here: Holder) -> bool:
    """A holder on this machine whose process no longer runs (or ran before a reboot)."""
    if h.host != here.host or not h.boot:
        return False
    if h.boot != here.boot:
        return True
    try:
        os.kill(h.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _client(mqtt_cfg, password: str) -> mqtt.Client:
    """A paho client with the gateway session's id, version and session settings."""
    v5 = mqtt_cfg.protocol == "5"
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=mqtt_cfg.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,  # never end the gateway's session
        manual_ack=True,  # nothing the probe receives is PUBACKed
    )
    if mqtt_cfg.username:
        c.username_pw_set(mqtt_cfg.username, password or None)
    if mqtt_cfg.tls_ca:
        c.tls_set(ca_certs=mqtt_cfg.tls_ca)
    return c


class _Probe:
    def __init__(self, mqtt_cfg, password: str):
        self.cfg = mqtt_cfg
        self.client = _client(mqtt_cfg, password)
        self.connected = self.dropped = self.denied = False
        self.refused = ""
        self.unreachable = ""  # why open() failed
        self.subacked_at: float | None = None
        self.retained: bytes | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.message_callback_add(topic(mqtt_cfg), self._on_presence)
        self.client.on_message = lambda *a: None  # queued readings: left for the holder

    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:  # ingest reports it (and retries); nothing to check here
            self.refused = str(rc)
            return
        self.connected = True
        client.subscribe(topic(self.cfg), qos=0)  # QoS 0: not held behind in-flight readings

    def _on_disconnect(self, client, userdata, flags, rc, props):
        self.dropped = True

    def _on_subscribe(self, client, userdata, mid, codes, props):
        self.denied = any(c.is_failure for c in codes)
        self.subacked_at = time.monotonic()

    def _on_presence(self, client, userdata, msg):
        if msg.retain:
            self.retained = msg.payload

    def run_until(self, done, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done() and not self.dropped and time.monotonic() < end:
            self.client.loop(timeout=0.05)  # no loop_start: a dropped probe never reconnects
        return done()

    def open(self) -> bool:
        kw: dict = {"keepalive": self.cfg.keepalive}
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry
            kw.update(clean_start=False, properties=props)
        try:
            self.client.connect(self.cfg.host, self.cfg.port, **kw)
        except OSError as exc:
            self.unreachable = exc.strerror or type(exc).__name__
            return False
        self.unreachable = f"no answer within {PROBE_TIMEOUT:.0f} s"
        return self.run_until(
            lambda: (
                bool(self.refused)
                or self.retained is not None
                or (
                    self.subacked_at is not None
                    and time.monotonic() - self.subacked_at >= RETAINED_WAIT
                )
            ),
            PROBE_TIMEOUT,
        )

    def close(self) -> None:
        if self.dropped:
            return  # paho closed the socket
        if self.connected:
            self.client.unsubscribe(topic(self.cfg))  # leave the session as it was
            self.run_until(lambda: False, 0.1)
        self.client.disconnect()  # a clean DISCONNECT: no will
        self.run_until(lambda: False, 0.1)


def acl_lacks_presence(acl_file: str | Path | None) -> bool:
    """True when the broker's ACL file is known and has no presence line."""
    if not acl_file:
        return False
    try:
        lines = Path(acl_file).read_text().splitlines()
    except OSError:
        return False  # not on this machine: nothing to tell
    return not any(line.split() == ACL_LINE.split() for line in lines)


def check(
    mqtt_cfg, password: str, *, grace: float = HOLDER_GRACE, acl_file: str | Path | None = None
) -> Holder | None:
    """Raise ClientIdInUse when a live gateway holds this client id (module docstring);
    returns the holder found gone, whose message `attach` then ignores."""
    if acl_lacks_presence(acl_file):
        log.warning(
            "client id %r not checked for another gateway: the broker's ACL %s has no line "
            "`%s` (`terrapin gateway init --force` writes it; then reload Mosquitto)",
            client_key(mqtt_cfg),
            acl_file,
            ACL_LINE,
        )
        return None
    probe = _Probe(mqtt_cfg, password)
    try:
        opened = probe.open()
        if probe.dropped and not probe.refused:
            # Taken back before the check finished: a live client holds this id.
            raise _in_use(mqtt_cfg, Holder.parse(probe.retained) if probe.retained else None)
        if not opened:
            log.warning(
                "client id %r not checked for another gateway: the broker at %s:%s does not "
                "answer (%s)",
                client_key(mqtt_cfg),
                mqtt_cfg.host,
                mqtt_cfg.port,
                probe.unreachable,
            )
            return None
        if probe.refused:
            log.warning(
                "client id %r not checked for another gateway: the broker refused the "
                "connection (%s)",
                client_key(mqtt_cfg),
                probe.refused,
            )
            return None
        if probe.denied:
            log.warning(
                "client id %r not checked for another gateway: the broker's ACL denies %s "
                "(`terrapin gateway init --force` writes the ACL line)",
                client_key(mqtt_cfg),
                topic(mqtt_cfg),
            )
            return None
        holder = Holder.parse(probe.retained) if probe.retained else None
        if holder is None or _gone_here(holder, me()):
            return holder
        probe.run_until(lambda: False, grace)  # a live holder takes the session back
        if probe.dropped:
            raise _in_use(mqtt_cfg, holder)
        log.warning(
            "client id %r was held by the gateway on %s, which did not come back within "
            "%.0f s: taking it over",
            client_key(mqtt_cfg),
            holder.describe(),
            grace,
        )
        return holder
    finally:
        probe.close()


def _in_use(mqtt_cfg, holder: Holder | None) -> ClientIdInUse:
    who = f"the gateway on {holder.describe()}" if holder else "another client"
    return ClientIdInUse(
        f"gateway cannot start: broker client id {client_key(mqtt_cfg)!r} is in use by {who}",
        hint="one gateway per broker user: stop that one, or give this one its own "
        "[mqtt] username (and broker user)",
    )


def attach(client: mqtt.Client, mqtt_cfg, *, ignore: Holder | None = None, on_taken=None) -> Holder:
    """Make `client` (the gateway's session, before it connects) the holder: a will that
    clears the presence message, and the message published again on every connect.

    Two gateways that both started while the broker was down skipped `check`; the
    first connects of each take the session from the other. So on every connect the
    session also reads the retained message (subscribe, then publish: the broker sends
    the old message before it stores ours) and, when it names a gateway that started
    earlier (not `ignore`, the holder `check` found gone), calls `on_taken` with the
    ClientIdInUse to stop on. The earlier one republishes and keeps the id."""
    mine = me()
    t = topic(mqtt_cfg)
    client.will_set(t, b"", qos=1, retain=True)
    inner = client.on_connect

    def on_connect(c, userdata, flags, rc, props):
        if inner is not None:
            inner(c, userdata, flags, rc, props)
        if not rc.is_failure:
            if on_taken is not None:
                c.subscribe(t, qos=0)  # the retained message comes before our publish
            now = replace(mine, at=time.time())
            c.publish(t, now.payload(), qos=1, retain=True)

    def on_presence(c, userdata, msg):
        other = Holder.parse(msg.payload) if msg.retain and msg.payload else None
        # `ignore` is the exact message check() found stale; the same holder back (a new
        # `at`) is alive after all and counts.
        if other is None or other.token == mine.token or other == ignore:
            return
        if (other.since, other.token) < (mine.since, mine.token) and on_taken is not None:
            log.error("the gateway on %s holds this client id too; stopping", other.describe())
            on_taken(_in_use(mqtt_cfg, other))

    client.message_callback_add(t, on_presence)
    client.on_connect = on_connect
    return mine


def release(client: mqtt.Client, mqtt_cfg) -> None:
    """Clear the presence message before a clean stop (a clean DISCONNECT sends no will)."""
    client.publish(topic(mqtt_cfg), b"", qos=1, retain=True)
