"""Key helpers shared by the provider tests."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization


def pem(key: Any) -> str:
    """A private key as unencrypted PKCS#8 PEM text, as a provider's options would hold it."""
    return str(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode())
