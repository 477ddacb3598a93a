"""petcd.auth.tokens: --auth-token parsing, simple tokens and JWTs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from petcd.auth.errors import AuthOptionsError
from petcd.auth.tokens import JWTTokens, SimpleTokens, token_provider
from petcd.server.config import parse_duration_seconds
from tests.tlsfiles import _cert


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _pub_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _cert_pem(key: Any) -> bytes:
    return _cert("jwt", key, None).public_bytes(serialization.Encoding.PEM)


def provider(tmp_path: Path, option: str, **files: bytes) -> Any:
    """The provider of ``option``, whose ``{d}`` is ``tmp_path``, where ``files`` are written."""
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return token_provider(option.format(d=tmp_path), 300, parse_duration_seconds)


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC256 = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ("RS256", RSA),
        ("RS512", RSA),
        ("PS256", RSA),
        ("ES256", EC256),
        ("EdDSA", ED),
    ],
)
def test_jwt_round_trip_and_tampering(tmp_path: Path, method: str, key: Any) -> None:
    tokens = provider(
        tmp_path,
        f"jwt,pub-key={{d}}/pub.pem,priv-key={{d}}/priv.pem,sign-method={method},ttl=10m",
        **{"pub.pem": _pub_pem(key), "priv.pem": _pem(key)},
    )
    assert isinstance(tokens, JWTTokens) and tokens.ttl_s == 600
    token = tokens.assign("alice", 7)
    header, claims, _sig = token.split(".")
    padded = claims + "=" * (-len(claims) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded))["username"] == "alice"
    info = tokens.info(token, 99)
    assert info is not None and (info.username, info.revision) == ("alice", 7)
    forged = dict(json.loads(base64.urlsafe_b64decode(padded)), username="root")
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    assert tokens.info(f"{header}.{body}.{_sig}", 99) is None
    assert tokens.info("a.b", 1) is None
    assert tokens.info("not.a.token", 1) is None


def test_jwt_expires(tmp_path: Path) -> None:
    now = [1000.0]
    tokens = JWTTokens("ES256", EC256.public_key(), EC256, ttl_s=5, clock=lambda: now[0])
    token = tokens.assign("u", 1)
    assert tokens.info(token, 1) is not None
    now[0] += 6
    assert tokens.info(token, 1) is None


def test_jwt_verify_only_with_a_certificate(tmp_path: Path) -> None:
    signer = provider(
        tmp_path,
        "jwt,priv-key={d}/priv.pem,sign-method=RS256",
        **{"priv.pem": _pem(RSA)},
    )
    verifier = provider(
        tmp_path,
        "jwt,pub-key={d}/cert.pem,sign-method=RS256",
        **{"cert.pem": _cert_pem(RSA)},
    )
    assert not verifier.can_sign
    info = verifier.info(signer.assign("bob", 3), 3)
    assert info is not None and info.username == "bob"
    with pytest.raises(AuthOptionsError, match="verify-only"):
        verifier.assign("bob", 3)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("opaque", "unknown token type"),
        ("jwt", "invalid auth signature method"),
        ("jwt,sign-method=HS256", "invalid auth signature method"),
        ("jwt,sign-method=RS256", "missing key data"),
        ("jwt,sign-method=RS256,pub-key", "expected name=value"),
        ("jwt,sign-method=RS256,colour=blue", "unknown jwt option"),
        ("jwt,sign-method=RS256,pub-key={d}/none.pem", "cannot read key file"),
        ("jwt,sign-method=ES256,priv-key={d}/rsa.pem", "does not fit sign-method ES256"),
        ("jwt,sign-method=RS256,priv-key={d}/junk.pem", "not an unencrypted PEM private key"),
        ("jwt,sign-method=RS256,pub-key={d}/junk.pem", "neither a PEM public key"),
        (
            "jwt,sign-method=RS256,priv-key={d}/rsa.pem,pub-key={d}/other.pem",
            "public and private keys don't match",
        ),
        ("jwt,sign-method=RS256,priv-key={d}/rsa.pem,ttl=soon", "invalid jwt ttl"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, option: str, message: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {"rsa.pem": _pem(RSA), "other.pem": _pub_pem(other), "junk.pem": b"junk"}
    with pytest.raises(AuthOptionsError, match=message):
        provider(tmp_path, option, **files)


def test_simple_is_the_default_and_tokens_carry_their_index() -> None:
    tokens = token_provider("simple", 42, parse_duration_seconds)
    assert isinstance(tokens, SimpleTokens) and tokens.ttl_s == 42
    prefix = SimpleTokens.gen_prefix()
    assert len(prefix) == 16 and prefix.isalpha()
    assert SimpleTokens.index(f"{prefix}.17") == 17
    for bad in ("nodot", "a.b", "a.1.2", "a.", "a.-1"):
        assert SimpleTokens.index(bad) is None
