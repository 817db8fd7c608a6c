# The TLS side of the broker's link: an SSL context that checks the broker's
# certificate against the configured CA file (PEM or DER), or checks nothing
# without one. Shared by both board layers (tcpopen.py, board/esp32.py's
# serial uplink); imported only by a board whose config asks for TLS.

from ..compat import IS_MICROPYTHON


def tls_client(stream, host, ca_file=None, handshake=True):
    # `stream` wrapped in TLS: the broker's certificate checked against
    # ca_file (PEM or DER), or not checked without one. handshake=False
    # leaves the handshake to the first reads and writes (MicroPython).
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        # verify_mode exists on MicroPython's SSLContext; the stubs lack it.
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
        ctx.load_verify_locations(cadata=ca_der(ca_file))
    else:
        if not IS_MICROPYTHON:
            ctx.check_hostname = False  # type: ignore[attr-defined]  # CPython branch
        ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]
    return ctx.wrap_socket(stream, server_hostname=host, do_handshake_on_connect=handshake)


def ca_der(path):
    # The CA certificate as DER (MicroPython's mbedtls binding takes DER;
    # a PEM file is decoded here).
    import binascii

    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip().startswith(b"-----BEGIN"):
        body = [ln for ln in data.split(b"\n") if ln.strip() and not ln.startswith(b"-----")]
        data = binascii.a2b_base64(b"".join(body))
    return data
