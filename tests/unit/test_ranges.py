"""RFC 9110 range handling of ``api.downloads.file_response`` (see its module docstring:
several disjoint ranges are answered with the whole file, 200; overlapping or adjacent ones
are merged into one 206)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from api.downloads import coalesce, file_response, parse_range

pytestmark = pytest.mark.anyio
BODY = bytes(range(100))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "blob.bin"
    path.write_bytes(BODY)
    app = FastAPI()

    @app.api_route("/f", methods=["GET", "HEAD"])
    async def serve(request: Request) -> Response:
        return file_response(
            request, path, filename="blob ü.bin", media_type="application/zip", etag_seed="id1"
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def test_parse_range_forms() -> None:
    assert parse_range("bytes=0-9", 100) == [(0, 9)]
    assert parse_range("bytes=-5", 100) == [(95, 99)]
    assert parse_range("bytes=90-", 100) == [(90, 99)]
    assert parse_range("bytes=95-500", 100) == [(95, 99)]
    assert parse_range("bytes=-500", 100) == [(0, 99)]
    assert parse_range("bytes=100-", 100) == []
    assert parse_range("bytes=-0", 100) == []
    assert parse_range("bytes=5-1", 100) is None
    assert parse_range("items=0-1", 100) is None
    assert parse_range("bytes=a-b", 100) is None
    assert parse_range("bytes=0-1,200-300", 100) == [(0, 1)]
    assert coalesce([(5, 9), (0, 4), (20, 30), (25, 40)]) == [(0, 9), (20, 40)]


async def test_full_download_has_validators(client: httpx.AsyncClient) -> None:
    r = await client.get("/f")
    assert r.status_code == 200 and r.content == BODY
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"') and r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-length"] == "100"
    assert "filename*=UTF-8''blob%20%C3%BC.bin" in r.headers["content-disposition"]


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=-5", 95, 99), ("bytes=90-", 90, 99), ("bytes=95-1000", 95, 99)],
)
async def test_single_ranges_are_206(
    client: httpx.AsyncClient, header: str, start: int, end: int
) -> None:
    r = await client.get("/f", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/100"
    assert r.content == BODY[start : end + 1]
    assert r.headers["content-length"] == str(end - start + 1)


async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient) -> None:
    r = await client.get("/f", headers={"Range": "bytes=100-200"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */100"


@pytest.mark.parametrize("header", ["bytes=9-2", "lines=0-3", "bytes=x-"])
async def test_invalid_range_header_is_ignored(client: httpx.AsyncClient, header: str) -> None:
    r = await client.get("/f", headers={"Range": header})
    assert r.status_code == 200 and r.content == BODY


async def test_multiple_ranges(client: httpx.AsyncClient) -> None:
    disjoint = await client.get("/f", headers={"Range": "bytes=0-1,50-51"})
    assert disjoint.status_code == 200 and disjoint.content == BODY
    merged = await client.get("/f", headers={"Range": "bytes=0-9,5-19"})
    assert merged.status_code == 206 and merged.content == BODY[:20]


async def test_if_range(client: httpx.AsyncClient) -> None:
    first = await client.get("/f")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = await client.get("/f", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert r.status_code == 206 and r.content == BODY[:4]
    r = await client.get("/f", headers={"Range": "bytes=0-3", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == BODY
    r = await client.get("/f", headers={"Range": "bytes=0-3", "If-Range": "W/" + etag})
    assert r.status_code == 200
    r = await client.get("/f", headers={"Range": "bytes=0-3", "If-Range": modified})
    assert r.status_code == 206
    r = await client.get(
        "/f", headers={"Range": "bytes=0-3", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert r.status_code == 200


async def test_conditional_get_and_head(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/f")).headers["etag"]
    assert (await client.get("/f", headers={"If-None-Match": etag})).status_code == 304
    head = await client.head("/f", headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-length"] == "10"
