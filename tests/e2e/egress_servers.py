"""Real servers on loopback for the egress tests: a DNS server whose answers a test sets (and changes, as a
rebinding attacker would), and HTTP servers that say what they were sent."""

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from tests.e2e.harness import free_port


class Answers(BaseResolver):  # type: ignore[misc]
    """Answers A queries from a table the test changes at will; everything else is NXDOMAIN. TTL 0: no cache."""

    def __init__(self) -> None:
        self.table: dict[str, list[str]] = {}
        self.asked: list[str] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.asked.append(name)
        if name not in self.table:
            reply.header.rcode = 3  # NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in self.table[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
        return reply


@contextmanager
def dns_server() -> Iterator[tuple[str, Answers]]:
    """A DNS server on 127.0.0.1 (UDP, a free port); yields its "ip:port" and its answer table."""
    answers = Answers()
    port = free_port()
    server = DNSServer(answers, port=port, address="127.0.0.1", logger=Silent())
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}", answers
    finally:
        server.stop()


class Silent:
    """dnslib's logger, quiet."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Echo(BaseHTTPRequestHandler):
    """Answers every request with what it was: method, path, host and headers, as JSON; an Authorization only as
    "present" (what a tenant's secret header carried must not go back to the agent), its value kept in `seen`."""

    server: "EchoServer"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"path": self.path, **dict(self.headers.items())})
        headers = {
            name: "present" if name.lower() == "authorization" else value for name, value in self.headers.items()
        }
        payload = json.dumps(
            {
                "server": self.server.server_address[1],
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "body_bytes": len(body),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EchoServer(ThreadingHTTPServer):
    seen: list[dict[str, str]]


@contextmanager
def echo_server(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[EchoServer]:
    """An HTTP (or, given an ssl context, HTTPS) echo server on loopback; its port is `server_address[1]`."""
    server = EchoServer((host, 0), Echo)
    server.seen = []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
