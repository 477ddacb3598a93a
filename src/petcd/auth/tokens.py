"""Auth tokens: etcd's ``simple`` tokens and signed JWTs (``--auth-token``).

Theory of operation
-------------------
A client authenticates once (``Auth.Authenticate``) and sends the token it got as the
``token`` metadata of every later call; the token provider turns it back into a user name.

- **simple** (the default): ``<16 random letters>.<raft index>``. The letters are drawn by the
  member that serves the Authenticate call; the token is assigned to the user when the
  Authenticate entry is applied, so every member knows it (the index is the entry's). A member
  that has not applied that index yet waits for it before answering "invalid auth token"
  (``SimpleTokens.index``). A token unused for ``--auth-token-ttl`` seconds expires (each use
  restarts its clock). Disabling auth forgets every token; deleting a user or changing its
  password forgets the user's tokens.
- **jwt** (``jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m``): a JWT signed with the
  private key (RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA) whose claims are
  ``username``, ``revision`` (the auth revision it was issued at) and ``exp``. Any member with
  the public key verifies it without shared state. ``pub-key`` may be a PEM public key or a
  certificate. Without ``priv-key`` the member only verifies (Authenticate then fails).

Nothing here is replicated or persisted: tokens are volatile member state, as in etcd.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from petcd.auth.errors import AuthOptionsError

_LETTERS = string.ascii_letters
_PREFIX_LENGTH = 16
DEFAULT_JWT_TTL_S = 300.0


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who a request comes from, and the auth revision that identity was looked up at."""

    username: str
    revision: int


class SimpleTokens:
    """etcd's simple tokens: random prefix + raft index, kept in memory with a TTL."""

    needs_raft = True

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s if ttl_s > 0 else 300.0
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (user, expiry)
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False
        self._tokens.clear()

    @staticmethod
    def gen_prefix() -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(_PREFIX_LENGTH))

    @staticmethod
    def index(token: str) -> int | None:
        """The raft index a well-formed simple token was issued at; None if malformed."""
        _prefix, dot, index = token.partition(".")
        if not dot or not index.isdigit() or "." in index:
            return None
        return int(index)

    def assign(self, username: str, prefix: str, index: int) -> str:
        token = f"{prefix}.{index}"
        self._tokens[token] = (username, self._clock() + self.ttl_s)
        return token

    def info(self, token: str, revision: int) -> AuthInfo | None:
        found = self._tokens.get(token)
        if found is None:
            return None
        now = self._clock()
        if found[1] <= now:
            del self._tokens[token]
            return None
        self._tokens[token] = (found[0], now + self.ttl_s)
        return AuthInfo(found[0], revision)

    def invalidate_user(self, username: str) -> None:
        for token in [t for t, (u, _) in self._tokens.items() if u == username]:
            del self._tokens[token]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
SIGN_METHODS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


class JWTTokens:
    """Signed, self-contained tokens: nothing shared between members but the keys."""

    needs_raft = False

    def __init__(
        self,
        sign_method: str,
        public_key: Any,
        private_key: Any | None,
        ttl_s: float = DEFAULT_JWT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sign_method = sign_method
        self._public = public_key
        self._private = private_key
        self.ttl_s = ttl_s
        self._clock = clock
        self._header = _b64(json.dumps({"alg": sign_method, "typ": "JWT"}).encode())

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass  # a JWT is valid until it expires or the auth revision moves on

    @property
    def can_sign(self) -> bool:
        return self._private is not None

    def assign(self, username: str, revision: int) -> str:
        if self._private is None:
            raise AuthOptionsError("auth: token signing attempted with verify-only key")
        claims = {"exp": int(self._clock() + self.ttl_s), "revision": revision}
        claims["username"] = username  # type: ignore[assignment]
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signed = f"{self._header}.{body}"
        return f"{signed}.{_b64(self._sign(signed.encode()))}"

    def info(self, token: str, revision: int) -> AuthInfo | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except ValueError:
            return None
        if not isinstance(header, dict) or header.get("alg") != self.sign_method:
            return None
        if not self._verify(f"{parts[0]}.{parts[1]}".encode(), signature):
            return None
        if not isinstance(claims, dict):
            return None
        username, rev, exp = claims.get("username"), claims.get("revision"), claims.get("exp")
        if not isinstance(username, str) or not isinstance(rev, int | float):
            return None
        if isinstance(exp, int | float) and exp <= self._clock():
            return None
        return AuthInfo(username, int(rev))

    def _sign(self, data: bytes) -> bytes:
        method, key = self.sign_method, self._private
        assert key is not None
        if method == "EdDSA":
            return bytes(key.sign(data))
        algorithm = _HASHES[method[2:]]()
        if method.startswith("RS"):
            return bytes(key.sign(data, padding.PKCS1v15(), algorithm))
        if method.startswith("PS"):
            pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.DIGEST_LENGTH)
            return bytes(key.sign(data, pss, algorithm))
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algorithm)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def _verify(self, data: bytes, signature: bytes) -> bool:
        method, key = self.sign_method, self._public
        try:
            if method == "EdDSA":
                key.verify(signature, data)
                return True
            algorithm = _HASHES[method[2:]]()
            if method.startswith("RS"):
                key.verify(signature, data, padding.PKCS1v15(), algorithm)
            elif method.startswith("PS"):
                pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
                key.verify(signature, data, pss, algorithm)
            else:
                size = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(algorithm))
        except InvalidSignature:
            return False
        return True


TokenProvider = SimpleTokens | JWTTokens


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AuthOptionsError(f"auth: cannot read key file {path!r}: {e.strerror}") from None


def _public_key(pem: bytes) -> Any:
    try:
        return serialization.load_pem_public_key(pem)
    except ValueError:
        pass
    try:
        return x509.load_pem_x509_certificate(pem).public_key()
    except ValueError:
        raise AuthOptionsError(
            "auth: pub-key is neither a PEM public key nor a certificate"
        ) from None


def _check_key(method: str, key: Any, what: str) -> None:
    if method.startswith(("RS", "PS")):
        ok = isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey)
    elif method == "EdDSA":
        ok = isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey)
    else:
        ok = isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
            key.curve, _EC_CURVES[method]
        )
    if not ok:
        raise AuthOptionsError(f"auth: {what} does not fit sign-method {method}")


def token_provider(
    option: str, ttl_s: float, parse_duration: Callable[[str], float]
) -> TokenProvider:
    """The provider for ``--auth-token`` (``ttl_s``: ``--auth-token-ttl``, simple tokens)."""
    kind, *rest = option.split(",")
    if kind == "simple":
        return SimpleTokens(ttl_s)
    if kind != "jwt":
        raise AuthOptionsError(f"auth: unknown token type {kind!r} (valid: simple, jwt)")
    opts: dict[str, str] = {}
    for item in rest:
        name, eq, value = item.partition("=")
        if not eq:
            raise AuthOptionsError(f"auth: invalid jwt option {item!r} (expected name=value)")
        opts[name] = value
    unknown = set(opts) - {"pub-key", "priv-key", "sign-method", "ttl"}
    if unknown:
        raise AuthOptionsError(f"auth: unknown jwt option {sorted(unknown)[0]!r}")
    method = opts.get("sign-method", "")
    if method not in SIGN_METHODS:
        raise AuthOptionsError(
            f"auth: invalid auth signature method {method!r} (valid: {', '.join(SIGN_METHODS)})"
        )
    private = None
    if opts.get("priv-key"):
        try:
            private = serialization.load_pem_private_key(_read(opts["priv-key"]), password=None)
        except (ValueError, TypeError):
            raise AuthOptionsError("auth: priv-key is not an unencrypted PEM private key") from None
        _check_key(method, private, "priv-key")
    if opts.get("pub-key"):
        public = _public_key(_read(opts["pub-key"]))
        _check_key(method, public, "pub-key")
    elif private is not None:
        public = private.public_key()
    else:
        raise AuthOptionsError("auth: missing key data (jwt needs pub-key or priv-key)")
    if private is not None:
        probe = JWTTokens(method, public, private)
        if probe.info(probe.assign("probe", 1), 1) is None:
            raise AuthOptionsError("auth: public and private keys don't match")
    try:
        ttl = parse_duration(opts["ttl"]) if opts.get("ttl") else DEFAULT_JWT_TTL_S
    except ValueError:
        raise AuthOptionsError(f"auth: invalid jwt ttl {opts['ttl']!r}") from None
    return JWTTokens(method, public, private, ttl)
