"""petcd.auth: users, roles, key-range permissions and tokens (etcd's auth store)."""

from petcd.auth.store import AuthOp, AuthRequest, AuthStore
from petcd.auth.tokens import AuthInfo, JWTTokens, SimpleTokens, token_provider

__all__ = [
    "AuthInfo",
    "AuthOp",
    "AuthRequest",
    "AuthStore",
    "JWTTokens",
    "SimpleTokens",
    "token_provider",
]
