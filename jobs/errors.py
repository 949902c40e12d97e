"""The store's refusals: one exception family for every request the service will not carry
out, mapped to a status code and ``code`` once, by the API's error handler.

Store functions raise a ``Refused`` (or a subclass naming the case, for callers that handle
one case themselves, as the CLI does for ``UserExists``); route bodies let it through.
"""

from __future__ import annotations

from typing import Literal

Refusal = Literal["bad_request", "not_found", "payment_required", "too_many", "conflict"]


class Refused(Exception):
    """A request the service will not carry out; the API maps ``kind`` to a status code."""

    def __init__(self, kind: Refusal, detail: str, code: str) -> None:
        super().__init__(detail)
        self.kind: Refusal = kind
        self.detail = detail
        self.code = code


def bad_request(detail: str, code: str = "invalid_request") -> Refused:
    """The refusal for a request that cannot be carried out as sent (400, ``code``)."""
    return Refused("bad_request", detail, code)


def not_found(detail: str) -> Refused:
    """The refusal for an id that is unknown or another account's (404 ``not_found``)."""
    return Refused("not_found", detail, "not_found")
