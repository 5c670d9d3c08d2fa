"""What the real Daphne answers at the edges of HTTP and WebSocket: a header past its limits, UTF-8 in a
header, paths no route matches (with DEBUG on, as `make run`), a socket refused for a bad `after`; and
that it says where it listens."""

import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.harness import Client, Platform


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-API-Key": "k" * 100_000}, "A header is over 16,384 bytes; send shorter headers."),
        (
            {f"X-Padding-{n}": "x" * 200 for n in range(100)},
            "The headers are over 16,384 bytes in all; send shorter headers.",
        ),
    ],
    ids=["one 100 KB header", "100 headers of 200 bytes"],
)
def test_headers_past_the_servers_limits_are_answered_431_in_the_error_shape(
    platform: Platform, headers: dict[str, str], message: str
) -> None:
    response = httpx.get(f"{platform.base_url}/api/tenants", headers=headers, timeout=10)

    assert response.status_code == 431, response.text
    assert response.json() == {"error": {"status": 431, "code": "headers_too_large", "message": message}}
    assert httpx.get(f"{platform.base_url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("body", [b"garbage", b"--zzz\r\nContent-Disposition: form-data\r\n\r\nno end"])
def test_a_broken_multipart_body_is_answered_400_in_the_error_shape(acme: Client, body: bytes) -> None:
    conversation = acme.create_conversation()

    response = acme.http.post(
        acme.path(conversation, "/files"),
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=zzz"},
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"bad_request", "parse_error", "invalid"}
    assert "multipart" in response.json()["error"]["message"] or "file" in response.json()["error"]["message"]


def test_a_utf8_user_id_reaches_the_platform_as_sent(acme: Client) -> None:
    zoe = {"X-User-ID": "zoë".encode()}  # httpx sends bytes as they are: UTF-8 on the wire

    created = acme.http.post(acme.path(), json={}, headers=zoe)
    listed = acme.http.get(acme.path(), params={"user_id": "zoë"})

    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "zoë"
    assert [c["id"] for c in listed.json()["results"]] == [created.json()["id"]]


@pytest.mark.parametrize("path", ["/api", "/API/tenants", "/nothing"])
def test_paths_no_route_matches_answer_a_json_404_with_debug_on(platform: Platform, path: str) -> None:
    assert platform.env["DEBUG"] == "1"  # as with `make run`, where Django's own 404 page is HTML

    response = httpx.get(f"{platform.base_url}{path}", timeout=10)

    assert response.status_code == 404
    assert response.json() == {"error": {"status": 404, "code": "not_found", "message": "Not found."}}


def test_a_socket_with_a_bad_after_is_told_why_then_closed_4400(acme: Client) -> None:
    conversation = acme.create_conversation()
    token = acme.stream_token(conversation)
    url = acme.base_url.replace("http", "ws", 1) + acme.path(conversation, f"/?after=abc&token={token}")
    url = url.replace("/api/", "/ws/", 1)

    with connect(url, open_timeout=10) as socket_:
        told = json.loads(socket_.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)

    assert told == {
        "type": "error",
        "error": {"code": "invalid_after", "message": "`after` must be a whole number of 0 or more."},
    }
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


def test_daphne_says_where_it_listens(platform: Platform) -> None:
    log = (platform.work_dir / "daphne.log").read_text(errors="replace")

    assert f"Listening on {platform.base_url}/ (Ctrl-C to stop)" in log
