import socket

import pytest


@pytest.fixture
def no_dialing(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fails any name resolution or outbound connection; the database connection is already open."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError(f"the test dialed or resolved something: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
