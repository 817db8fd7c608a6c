# The owner binding's EIP-712 digest, built on the board.
#
# The TP1 console's `sign-bind` (console_ops.py) signs only this digest, made
# here from the binding's fields: the board never signs a 32-byte value a host
# hands it, so a host cannot get the board's signature over the digest of a
# reading it never took. The two cannot meet: a reading's digest is SHA-256 of
# a COSE Sig_structure (CBOR, starting 0x84 0x6A "Signature1"); this one is
# Keccak-256 of bytes starting 0x19 0x01 (EIP-712), so a bind digest equal to
# a reading digest would take a collision between the two hash functions.
#
# The same digest as the host's gateway/rewards/binding.py `bind_digest` and
# the contract's BoardBinding.bindDigest (a test ties them together):
#   keccak256(0x1901 || domainSeparator || keccak256(BIND_TYPEHASH || owner || nonce))
#   domainSeparator = keccak256(DOMAIN_TYPEHASH || keccak256("Terrapin")
#                               || keccak256("1") || chainId || verifyingContract)
#
# Pure logic: imports only keccak.

from binascii import unhexlify

from .keccak import keccak256

_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_BIND_TYPE = b"BindBoard(address owner,uint256 nonce)"
_NAME = b"Terrapin"
_VERSION = b"1"


class BindError(ValueError):
    # A binding field that is out of range (the console answers BAD_ARGS).
    pass


def _uint256(n):
    if not isinstance(n, int) or n < 0 or n >= 1 << 256:
        raise BindError("a uint256 is a whole number from 0 to 2**256-1")
    return unhexlify("%064x" % n)  # MicroPython's int.to_bytes is small-int only on some ports


def _address(a):
    if len(a) != 20:
        raise BindError("an address is 20 bytes")
    return bytes(12) + bytes(a)


def digest(owner, nonce, chain_id, contract):
    # The 32-byte EIP-712 BindBoard digest; owner and contract are 20 bytes.
    owner = _address(owner)
    contract = _address(contract)
    domain = keccak256(
        keccak256(_DOMAIN_TYPE)
        + keccak256(_NAME)
        + keccak256(_VERSION)
        + _uint256(chain_id)
        + contract
    )
    struct = keccak256(keccak256(_BIND_TYPE) + owner + _uint256(nonce))
    return keccak256(b"\x19\x01" + domain + struct)
