"""The failure a job records: a machine ``code`` and a reason a person can act on.

Raised by the library jobs (an upload that cannot be used) and by render attempts (a stored
request that can no longer be rendered); the job ends as failed with exactly these two
values. Render work may raise it in a child process, so it survives pickling.
"""

from __future__ import annotations


class JobFailure(Exception):
    """A job's failure: ``code`` (machine-readable) and ``reason`` (for a person)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickles its args only (the reason): rebuild from both fields.
        return (type(self), (self.code, self.reason))


__all__ = ["JobFailure"]
