"""Named errors of petcd.auth, each carrying etcd's gRPC status code and message.

Theory of operation
-------------------
Every expected failure of an auth request or of a permission check is one of these exceptions.
``message`` is etcd's text (``api/v3rpc/rpctypes``: what clients match on) and ``grpc_code``
names the status code etcd sends with it, so that ``petcd.grpc.status`` maps them mechanically,
as it maps ``petcd.mvcc.errors``. Raising one from ``AuthStore.apply`` means nothing changed.
"""

from __future__ import annotations


class AuthError(Exception):
    """Base class: an expected failure of an auth request or check."""

    message = "etcdserver: auth error"
    grpc_code = "UNKNOWN"

    def __init__(self) -> None:
        super().__init__(self.message)


class RootUserNotExistError(AuthError):
    message = "etcdserver: root user does not exist"
    grpc_code = "FAILED_PRECONDITION"


class RootRoleNotExistError(AuthError):
    message = "etcdserver: root user does not have root role"
    grpc_code = "FAILED_PRECONDITION"


class UserAlreadyExistError(AuthError):
    message = "etcdserver: user name already exists"
    grpc_code = "FAILED_PRECONDITION"


class UserEmptyError(AuthError):
    message = "etcdserver: user name is empty"
    grpc_code = "INVALID_ARGUMENT"


class UserNotFoundError(AuthError):
    message = "etcdserver: user name not found"
    grpc_code = "FAILED_PRECONDITION"


class RoleAlreadyExistError(AuthError):
    message = "etcdserver: role name already exists"
    grpc_code = "FAILED_PRECONDITION"


class RoleNotFoundError(AuthError):
    message = "etcdserver: role name not found"
    grpc_code = "FAILED_PRECONDITION"


class RoleEmptyError(AuthError):
    message = "etcdserver: role name is empty"
    grpc_code = "INVALID_ARGUMENT"


class AuthFailedError(AuthError):
    """Unknown user, wrong password, or a password given for a user without one (etcd maps
    its ``ErrNoPasswordUser`` to this same status)."""

    message = "etcdserver: authentication failed, invalid user ID or password"
    grpc_code = "INVALID_ARGUMENT"


class PermissionNotGivenError(AuthError):
    message = "etcdserver: permission not given"
    grpc_code = "INVALID_ARGUMENT"


class PermissionDeniedError(AuthError):
    message = "etcdserver: permission denied"
    grpc_code = "PERMISSION_DENIED"


class RoleNotGrantedError(AuthError):
    message = "etcdserver: role is not granted to the user"
    grpc_code = "FAILED_PRECONDITION"


class PermissionNotGrantedError(AuthError):
    message = "etcdserver: permission is not granted to the role"
    grpc_code = "FAILED_PRECONDITION"


class AuthNotEnabledError(AuthError):
    message = "etcdserver: authentication is not enabled"
    grpc_code = "FAILED_PRECONDITION"


class InvalidAuthTokenError(AuthError):
    message = "etcdserver: invalid auth token"
    grpc_code = "UNAUTHENTICATED"


class InvalidAuthMgmtError(AuthError):
    message = "etcdserver: invalid auth management"
    grpc_code = "INVALID_ARGUMENT"


class AuthOldRevisionError(AuthError):
    message = "etcdserver: revision of auth store is old"
    grpc_code = "INVALID_ARGUMENT"


class AuthOptionsError(ValueError):
    """``--auth-token`` (or its key files) cannot be used; the member does not start."""
