"""Webhooks cannot be aimed inward: the URL forms of ``fixtures/hostile_webhooks.py`` are
refused, public ones pass, and delivery checks again and connects to the address it checked.

Names are resolved by a resolver passed in (the one port these tests replace); the
receivers are real HTTP servers on loopback.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from jobs.webhooks import UnsafeWebhookTarget, WebhookDeliveryError, check_target, post_signed


def _table() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "fixtures" / "hostile_webhooks.py"
    spec = importlib.util.spec_from_file_location("hostile_webhooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE = _table()


def no_dns(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} should not need resolving")


def resolves_to(*addresses: str) -> Any:
    def resolver(host: str, port: int) -> Sequence[str]:
        return list(addresses)

    return resolver


@pytest.mark.parametrize(("url", "what"), TABLE.INWARD, ids=[u for u, _ in TABLE.INWARD])
def test_inward_urls_are_refused(url: str, what: str) -> None:
    # Anything that is a name here resolves to a public address: the name itself or the
    # literal must be what is refused.
    with pytest.raises(UnsafeWebhookTarget) as caught:
        check_target(url, resolver=resolves_to("93.184.215.14"))
    assert caught.value.url == url and caught.value.reason, what
    assert url in str(caught.value)


@pytest.mark.parametrize(("url", "what"), TABLE.PUBLIC, ids=[u for u, _ in TABLE.PUBLIC])
def test_public_addresses_are_accepted(url: str, what: str) -> None:
    assert check_target(url, resolver=no_dns), what


@pytest.mark.parametrize(
    "addresses",
    [("127.0.0.1",), ("93.184.215.14", "10.1.2.3"), ("::1",), ("169.254.169.254",)],
)
def test_a_name_resolving_inward_is_refused(addresses: tuple[str, ...]) -> None:
    with pytest.raises(UnsafeWebhookTarget, match="resolves to"):
        check_target("https://hooks.example.com/x", resolver=resolves_to(*addresses))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeWebhookTarget, match="does not resolve"):
        check_target("https://nowhere.example.com/x", resolver=fails)


def test_a_public_name_passes_with_the_addresses_to_pin() -> None:
    resolver = resolves_to("93.184.215.14", "2606:4700:4700::1111")
    assert check_target("https://hooks.example.com/x", resolver=resolver) == [
        "93.184.215.14",
        "2606:4700:4700::1111",
    ]


def test_allow_private_lifts_the_address_checks() -> None:
    assert check_target("http://127.0.0.1:9/x", allow_private=True) == ["127.0.0.1"]
    assert check_target("http://localhost:9/x", allow_private=True, resolver=resolves_to("::1"))
    with pytest.raises(UnsafeWebhookTarget):  # the scheme still matters
        check_target("gopher://127.0.0.1/", allow_private=True)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.status = 200
        self.url = ""


@contextlib.contextmanager
def receiver(status: int = 200) -> Iterator[Receiver]:
    rec = Receiver()
    rec.status = status

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.requests.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(rec.status)
            if rec.status in {301, 302, 307, 308}:
                self.send_header("Location", rec.url)
            # A body far larger than anyone should read: delivery must not wait for it.
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"x" * 65536)

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def _port(rec: Receiver) -> int:
    return int(rec.url.rsplit(":", 1)[1].split("/", 1)[0])


def test_delivery_refuses_a_name_that_now_resolves_inward() -> None:
    """DNS rebinding: public when submitted, loopback when delivered."""
    with receiver() as rec:
        url = f"http://hooks.example.com:{_port(rec)}/hook"
        answers = iter([["93.184.215.14"], ["127.0.0.1"]])

        def rebinding(host: str, port: int) -> Sequence[str]:
            return next(answers)

        assert check_target(url, resolver=rebinding) == ["93.184.215.14"]  # at submission
        with pytest.raises(UnsafeWebhookTarget, match="127.0.0.1"):
            post_signed(url, b"{}", "s", event="render.completed", timeout_s=2, resolver=rebinding)
        assert rec.requests == []


def test_delivery_refuses_inward_literals_without_connecting() -> None:
    with receiver() as rec:
        with pytest.raises(UnsafeWebhookTarget):
            post_signed(rec.url, b"{}", "s", event="render.completed", timeout_s=2)
        assert rec.requests == []


def test_delivery_connects_to_the_checked_address_with_the_name_as_host() -> None:
    with receiver() as rec:
        url = f"http://hooks.example.com:{_port(rec)}/hook"
        status = post_signed(
            url,
            b"{}",
            "s",
            event="render.completed",
            timeout_s=5,
            allow_private=True,  # the receiver is on loopback
            resolver=resolves_to("127.0.0.1"),
        )
        assert status == 200
        (headers,) = rec.requests
        assert headers["host"] == f"hooks.example.com:{_port(rec)}"
        assert headers["x-velocity-signature"].startswith("sha256=")


def test_delivery_does_not_follow_redirects() -> None:
    with receiver(status=302) as rec:
        with pytest.raises(WebhookDeliveryError, match="302"):
            post_signed(
                rec.url, b"{}", "s", event="render.completed", timeout_s=5, allow_private=True
            )
        assert len(rec.requests) == 1


def test_delivery_tries_the_next_checked_address_when_one_refuses() -> None:
    with receiver() as rec:
        # Nothing listens on the receiver's port on ::1 (it binds 127.0.0.1 only).
        url = f"http://hooks.example.com:{_port(rec)}/hook"
        status = post_signed(
            url,
            b"{}",
            "s",
            event="render.completed",
            timeout_s=5,
            allow_private=True,
            resolver=resolves_to("::1", "127.0.0.1"),
        )
        assert status == 200 and len(rec.requests) == 1
