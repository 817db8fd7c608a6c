# A TCP connection to the broker (TLS on top if configured), opened in steps
# so that the board's main loop never waits for it: both board layers'
# open_socket() return one, and the uplink asks opened() once per pass.
#
#   TcpOpen(host, port)   address lookup, then a non-blocking connect()
#                         (EINPROGRESS: the SYN is on its way)
#   opened()              connect() again: EINPROGRESS / EALREADY = not yet,
#                         EISCONN = connected, anything else = failed (the
#                         platform's numbers, sockerr.py); then TLS, if any
#   stream                the socket the MQTT client uses, once opened
#
# The uplink bounds the whole opening with its own deadline (uplink.py).
# Two steps cannot be made non-blocking on MicroPython and are bounded
# instead: the address lookup (getaddrinfo; a numeric address costs nothing,
# a name is answered from lwIP's DNS cache after the first lookup, and a
# first lookup waits at most lwIP's DNS timeout), and, on CPython only, the
# TLS handshake (5 s socket timeout). On MicroPython the TLS socket is
# wrapped with do_handshake_on_connect=False, as its asyncio does: the
# handshake then runs inside the MQTT client's non-blocking writes of
# CONNECT (mqtt.py connack()), each write a step.

import socket

from ..compat import IS_MICROPYTHON
from ..sockerr import EISCONN, value

# connect() on a connect under way: this platform's numbers (an ETIMEDOUT is
# a failure here, not a "not yet").
_NOT_YET = (value("EINPROGRESS"), value("EALREADY"), value("EAGAIN"))


class TcpOpen:
    def __init__(self, host, port, tls=False, ca_file=None):
        self.host = host
        self.tls = tls
        self.ca_file = ca_file
        self.stream = None
        self.addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
        self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            try:
                sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: no Nagle delay
            except (AttributeError, OSError):
                pass
            sock.setblocking(False)
            self._connect()
        except Exception:
            sock.close()
            raise

    def _connect(self):
        # True once connected; False while the connect is under way.
        try:
            self.sock.connect(self.addr)
        except OSError as exc:
            code = exc.args[0] if exc.args else None
            if code == EISCONN:
                return True
            if code in _NOT_YET:
                return False
            raise
        return True  # some stacks say nothing once connected

    def opened(self):
        # One non-blocking look: True once `stream` can carry MQTT, False
        # while the connect is still under way; OSError if it failed.
        if self.stream is not None:
            return True
        if not self._connect():
            return False
        self.stream = self._tls() if self.tls else self.sock
        return True

    def _tls(self):
        from .tlsclient import tls_client  # only a board configured for TLS loads it

        if IS_MICROPYTHON:
            return tls_client(self.sock, self.host, self.ca_file, False)
        self.sock.settimeout(5)  # CPython: a bounded blocking handshake
        tls = tls_client(self.sock, self.host, self.ca_file)
        tls.setblocking(False)
        return tls

    def close(self):
        try:
            (self.stream or self.sock).close()
        except OSError:
            pass
