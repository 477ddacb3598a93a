"""v2 auth's passwords (petcd.server.v2auth): bcrypt as Go's, cost 10, ``$2a$``, 72 bytes."""

from __future__ import annotations

import pytest

from petcd.server.v2auth import _checkpw, hash_password


def test_hash_as_go_bcrypt() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$2a$10$")
    assert _checkpw(hashed, "s3cret")
    assert not _checkpw(hashed, "s3cre")
    assert not _checkpw("not a hash", "s3cret")


def test_72_bytes() -> None:
    # Go refuses to hash more (ErrPasswordTooLong: etcd 3.5 answers 500) and compares only
    # the first 72 bytes.
    with pytest.raises(ValueError):
        hash_password("a" * 73)
    hashed = hash_password("a" * 72)
    assert _checkpw(hashed, "a" * 72 + "more")
    assert not _checkpw(hashed, "a" * 71)
