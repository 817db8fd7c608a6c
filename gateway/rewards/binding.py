"""Host side of binding a board to an owner (EIP-712, see BoardBinding.sol).

The tools compute the 32-byte digest here, send it to the board, and the
board signs it with `secp256k1.sign_recoverable` (its key never leaves it).
The 64-byte r||s plus v (0 or 1) it returns become the 65-byte r||s||v+27
signature `bindBoard(board, owner, signature)` takes.

Why EIP-712 and not EIP-191 `personal_sign`: the EIP-712 domain carries the
chain id and the verifying contract, so a binding signed for one chain and one
contract fails on every other chain and contract (no cross-chain or
cross-deployment replay); the typed struct names what is being signed, so the
signature cannot double as some other message; wallets can display it.
"""

from __future__ import annotations

from coincurve import PublicKey
from eth_utils import keccak

from terrapin.gateway.errors import TerrapinError

DOMAIN_NAME = "Terrapin"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
BIND_TYPE = "BindBoard(address owner,uint256 nonce)"
DOMAIN_TYPEHASH = keccak(DOMAIN_TYPE.encode())
BIND_TYPEHASH = keccak(BIND_TYPE.encode())
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


class BindingError(TerrapinError, ValueError):
    """A binding signature that is malformed or not made by the board."""


def _address(value: str | bytes) -> bytes:
    raw = (
        bytes(value)
        if isinstance(value, bytes | bytearray)
        else bytes.fromhex(value.removeprefix("0x"))
    )
    if len(raw) != 20:
        raise BindingError(f"an address is 20 bytes, got {len(raw)}")
    return raw


def _word(value: int | bytes) -> bytes:
    if isinstance(value, int):
        return value.to_bytes(32, "big")
    return bytes(value).rjust(32, b"\0")


def domain_separator(chain_id: int, contract: str | bytes) -> bytes:
    return keccak(
        DOMAIN_TYPEHASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + _word(chain_id)
        + _word(_address(contract))
    )


def bind_digest(owner: str | bytes, nonce: int, chain_id: int, contract: str | bytes) -> bytes:
    """The EIP-712 digest the board signs to bind itself to `owner`."""
    struct_hash = keccak(BIND_TYPEHASH + _word(_address(owner)) + _word(nonce))
    return keccak(b"\x19\x01" + domain_separator(chain_id, contract) + struct_hash)


def typed_data(owner: str, nonce: int, chain_id: int, contract: str) -> dict:
    """The same message as an EIP-712 JSON object (for wallets and eth-account)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "BindBoard": [
                {"name": "owner", "type": "address"},
                {"name": "nonce", "type": "uint256"},
            ],
        },
        "primaryType": "BindBoard",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": contract,
        },
        "message": {"owner": owner, "nonce": nonce},
    }


def pack_signature(sig64: bytes, v: int) -> bytes:
    """r||s (64 bytes) and v in {0, 1} from the board -> r||s||(v + 27), 65 bytes."""
    if len(sig64) != 64 or v not in (0, 1):
        raise BindingError("the board must return 64 signature bytes and v in {0, 1}")
    if int.from_bytes(sig64[32:], "big") > _SECP256K1_HALF_N:
        raise BindingError("high-s signature (the contract rejects it)")
    return bytes(sig64) + bytes([v + 27])


def recover_signer(digest: bytes, signature: bytes) -> str:
    """The address (0x, lowercase) whose key made the 65-byte r||s||v signature."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise BindingError("a binding signature is 65 bytes r||s||v with v 27 or 28")
    try:
        pub = PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception on bad points
        raise BindingError(f"signature does not recover: {exc}") from exc
    return "0x" + keccak(pub.format(compressed=False)[1:])[-20:].hex()


def check_binding(
    board: str | bytes,
    owner: str | bytes,
    nonce: int,
    chain_id: int,
    contract: str | bytes,
    signature: bytes,
) -> bytes:
    """Raise BindingError unless `signature` is `board`'s binding to `owner`; return the digest.

    The tools run this before sending the transaction so a wrong key or a wrong
    nonce is reported with a message instead of a revert.
    """
    digest = bind_digest(owner, nonce, chain_id, contract)
    signer = recover_signer(digest, signature)
    if signer != "0x" + _address(board).hex():
        raise BindingError(f"signed by {signer}, not by board 0x{_address(board).hex()}")
    return digest
