"""Ed25519 signatures of a release manifest: made at release with the user's key, checked by ``release verify``.

The signature covers the exact bytes of ``manifest.json``, and the manifest holds the sha256 of every other file of
the bundle: one signature vouches for the whole bundle. It is written beside the manifest as ``manifest.sig``
(base64 text, one line). Keys are PEM files (``openssl genpkey -algorithm ed25519 -out key.pem`` and
``openssl pkey -in key.pem -pubout -out key.pub.pem``); ``cryptography`` reads them, imported only here.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

SIGNATURE_FILE = "manifest.sig"


class SigningError(ValueError):
    """A key that cannot be used, or a signature that does not verify."""


def _serialization():  # noqa: ANN202 - the module, imported when a key is used
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError as e:  # pragma: no cover - a dependency of factory; absent only in a bare target env
        raise SigningError("checking a signature needs the `cryptography` package (pip install cryptography)") from e
    return serialization


def _read_key(path: str | os.PathLike[str], private: bool):  # noqa: ANN202 - a cryptography key object
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    serialization = _serialization()
    what = "private" if private else "public"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SigningError(f"{path}: cannot read the {what} key ({e.strerror or e})") from None
    try:
        if private:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path}: not an unencrypted PEM {what} key ({e})") from None
    wanted = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, wanted):
        raise SigningError(f"{path}: a {type(key).__name__}, expected an ed25519 {what} key")
    return key


def public_fingerprint(key) -> str:  # noqa: ANN001 - an ed25519 public key
    """sha256 of the raw 32-byte public key, hex: what the manifest records as the key that signed it."""
    serialization = _serialization()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signer_fingerprint(private_key_path: str | os.PathLike[str]) -> str:
    """The fingerprint of the public half of a private key (recorded in the manifest before it is signed)."""
    return public_fingerprint(_read_key(private_key_path, private=True).public_key())


def sign(data: bytes, private_key_path: str | os.PathLike[str]) -> str:
    """The base64 ed25519 signature of ``data``."""
    return base64.b64encode(_read_key(private_key_path, private=True).sign(data)).decode("ascii")


def verify_signature(data: bytes, signature: str, public_key_path: str | os.PathLike[str]) -> str:
    """Check ``signature`` (base64) over ``data`` with the public key; returns the key's fingerprint.

    Raises:
        SigningError: the key is unusable, or the signature is malformed or does not match.
    """
    from cryptography.exceptions import InvalidSignature

    key = _read_key(public_key_path, private=False)
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except ValueError:
        raise SigningError(f"{SIGNATURE_FILE} is not base64 text") from None
    try:
        key.verify(raw, data)
    except InvalidSignature:
        raise SigningError(
            f"the signature does not match manifest.json with the public key {public_key_path} (the manifest was "
            "edited after signing, or another key signed it)"
        ) from None
    return public_fingerprint(key)
