# A CA certificate file as DER, for TLS to the broker on either board.
#
# MicroPython's mbedtls binding takes DER; a PEM file is decoded here. The
# boards import this only while they open a TLS socket with a CA file and
# unload it after, so it costs no resident heap.


def ca_der(path):
    import binascii

    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip().startswith(b"-----BEGIN"):
        body = [ln for ln in data.split(b"\n") if ln.strip() and not ln.startswith(b"-----")]
        data = binascii.a2b_base64(b"".join(body))
    return data
