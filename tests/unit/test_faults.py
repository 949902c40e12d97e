"""Which failures are outages and which are a full disk (``jobs.faults``), and how the
library pipeline records a full disk."""

from __future__ import annotations

import errno

import pytest
import redis.exceptions
import sqlalchemy.exc

from jobs.faults import STORAGE_FULL, is_disk_full, is_unavailable


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "database"),
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("gone")), "database"),
        (sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("closed")), "database"),
        (_wrapped(ConnectionResetError(), RuntimeError("while claiming")), "database"),
        (redis.exceptions.ConnectionError("no redis"), "broker"),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate")), None),
        (ValueError("a bug"), None),
        (OSError(errno.ENOSPC, "full"), None),
    ],
)
def test_outages_are_told_apart_from_bugs(exc: BaseException, expected: str | None) -> None:
    assert is_unavailable(exc) == expected


def test_a_full_disk_is_recognised_however_wrapped() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(_wrapped(OSError(errno.ENOSPC, "full"), RuntimeError("encoder")))
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert not is_disk_full(ValueError("x"))


def test_library_jobs_record_a_full_disk_as_storage_full() -> None:
    from jobs.library.actors import _failure_from

    failure = _failure_from(OSError(errno.ENOSPC, "No space left"), "extracting the ZIP")
    assert failure.code == STORAGE_FULL and "disk space" in failure.reason
