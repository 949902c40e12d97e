"""Signed webhook delivery for renders that reach a terminal state.

The body is canonical JSON (sorted keys, no spaces) so a receiver can verify the signature over
the exact bytes it got: ``X-Velocity-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.
Delivery happens in its own actor so a slow or failing receiver never delays a render; the
actor raises on failure and dramatiq retries it with exponential back-off.

Webhooks must not be aimed inward (SSRF): the target's host is resolved and every address
it resolves to must be public (not loopback, private, link-local, multicast, reserved,
unspecified, nor a private IPv4 address embedded in IPv6: mapped, 6to4, Teredo, NAT64), and
names such as ``localhost`` or ``metadata.google.internal`` are refused outright. The check
runs at submission and again at every delivery, and the delivery connects to the very
address it checked (Host header and TLS SNI keep the name), so DNS rebinding cannot swap
it. No redirect is followed, no proxy from the environment is used, every network step has
a short timeout and the response body is never read.
``allow_private`` (``VELOCITY_WEBHOOK_ALLOW_PRIVATE``) skips the address checks for
deployments whose receivers live on a private network.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx

SIGNATURE_HEADER = "X-Velocity-Signature"
EVENT_HEADER = "X-Velocity-Event"


class WebhookDeliveryError(RuntimeError):
    """The receiver did not answer 2xx (or could not be reached); the delivery is retried."""


class UnsafeWebhookTarget(WebhookDeliveryError, ValueError):
    """The URL is not an http(s) URL of a public host; ``reason`` says why. At delivery
    this is final (not retried)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"webhook URL {url!r} is refused: {reason}")
        self.url, self.reason = url, reason


# (host, port) -> the IP addresses it resolves to. Tests may pass their own.
Resolver = Callable[[str, int], Sequence[str]]

# Names that always mean "this machine" or a cloud metadata service, whatever DNS says.
_BLOCKED_NAMES = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data"}
)
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".home.arpa")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# Hosts made of digits, dots and hex only: IPv4 in one of the forms inet_aton and
# getaddrinfo accept (127.1, 2130706433, 0x7f000001, 0177.0.0.1).
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
# Addresses of one name tried in turn when a connection is refused.
_MAX_ADDRESSES = 4


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, as the connection would)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a connection to ``ip`` could reach inward, or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = None
        if ip.ipv4_mapped is not None:
            embedded = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip.teredo is not None:
            embedded = ip.teredo[1]
        elif any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            problem = _address_problem(embedded)
            return f"it embeds {embedded}, which is {problem}" if problem else None
    for flag, word in (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
    ):
        if flag:
            return f"{'an' if word[0] in 'aeiou' else 'a'} {word} address"
    if not ip.is_global:
        return "not a public address"
    return None


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address when it is one, in any form the resolver would accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host.rstrip(".")):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            return None
    return None


def _parse(url: str) -> tuple[httpx.URL, str, int]:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise UnsafeWebhookTarget(url, "it is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeWebhookTarget(url, "only http:// and https:// URLs are accepted")
    host = parsed.raw_host.decode("ascii", "replace").lower()
    if not host:
        raise UnsafeWebhookTarget(url, "it has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed, host, port


def check_target(
    url: str, *, allow_private: bool = False, resolver: Resolver = resolve_host
) -> list[str]:
    """Check that ``url`` may receive webhooks and return the addresses to connect to
    (every one of them checked).

    Raises:
        UnsafeWebhookTarget: not http(s), no host, a blocked name, a host that does not
            resolve, or any address that is not public (unless ``allow_private``).
    """
    _, host, port = _parse(url)
    name = host.rstrip(".")
    if not allow_private and (name in _BLOCKED_NAMES or name.endswith(_BLOCKED_SUFFIXES)):
        raise UnsafeWebhookTarget(url, f"the host {name!r} is internal")
    literal = _literal_ip(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = [
                str(ipaddress.ip_address(a.split("%", 1)[0])) for a in resolver(host, port)
            ]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise UnsafeWebhookTarget(url, f"the host {name!r} does not resolve")
    if not allow_private:
        for address in addresses:
            problem = _address_problem(ipaddress.ip_address(address))
            if problem:
                verb = "is" if literal is not None else "resolves to"
                raise UnsafeWebhookTarget(url, f"{name} {verb} {address}, {problem}")
    return addresses


def sign(secret: str, body: bytes) -> str:
    """The ``X-Velocity-Signature`` value for ``body`` under ``secret``: ``sha256=<hex>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is the valid ``X-Velocity-Signature`` of ``body``."""
    return hmac.compare_digest(sign(secret, body), signature)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def render_event_body(
    *,
    render_id: str,
    name: str,
    status: str,
    template_id: str | None,
    reason: str | None,
    failure_code: str | None,
    size_bytes: int | None,
    render_time_ms: int,
    completed_at: datetime | None,
) -> bytes:
    """The canonical JSON body sent for a render in a terminal ``status``."""
    payload: dict[str, Any] = {
        "event": f"render.{status}",
        "renderId": render_id,
        "name": name,
        "templateId": template_id,
        "status": status,
        "reason": reason,
        "failureCode": failure_code,
        "sizeBytes": size_bytes,
        "renderTimeMilliseconds": render_time_ms,
        "completedAt": _iso(completed_at),
        "videoDownloadUrl": f"/render/{render_id}/download" if status == "completed" else None,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def post_signed(
    url: str,
    body: bytes,
    secret: str,
    *,
    event: str,
    timeout_s: float,
    allow_private: bool = False,
    resolver: Resolver = resolve_host,
) -> int:
    """POST ``body`` to ``url`` signed with ``secret``; returns the HTTP status.

    The host is resolved and checked now (``check_target``) and the request goes to the
    first checked address, with the URL's host in the Host header and as the TLS server
    name (certificates are verified against it). Redirects are not followed (a signed body
    must not be replayed to another host), proxies from the environment are not used, and
    the response body is never read.

    Raises:
        UnsafeWebhookTarget: the host resolves to an address that is not public (now).
        WebhookDeliveryError: the receiver was unreachable, timed out or answered non-2xx.
    """
    parsed, host, _port = _parse(url)
    addresses = check_target(url, allow_private=allow_private, resolver=resolver)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event,
        "User-Agent": "velocity-webhook/1",
        "Host": parsed.netloc.decode("ascii").rsplit("@", 1)[-1],
    }
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = host.rstrip(".")
    status = 0
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        # Each checked address in turn (a name may resolve to IPv6 and IPv4), until one
        # accepts the connection.
        for index, address in enumerate(addresses[:_MAX_ADDRESSES]):
            pinned = parsed.copy_with(host=address)
            try:
                with client.stream(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                ) as response:
                    status = response.status_code
                break
            except httpx.ConnectError as exc:
                if index + 1 < min(len(addresses), _MAX_ADDRESSES):
                    continue
                raise WebhookDeliveryError(
                    f"webhook {url} unreachable: {type(exc).__name__}"
                ) from exc
            except httpx.HTTPError as exc:
                raise WebhookDeliveryError(
                    f"webhook {url} unreachable: {type(exc).__name__}"
                ) from exc
    if not 200 <= status < 300:
        raise WebhookDeliveryError(f"webhook {url} answered {status}")
    return status
