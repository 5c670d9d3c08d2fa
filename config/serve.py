"""`python -m config.serve …`: Daphne, exactly as `daphne …`, except that

- its access log never shows a stream token (`?token=` authenticates SSE for clients that cannot send headers);
- it says where it listens, once it does (`make run` prints the address to open);
- a request head that Twisted will not read (a 100 KB `X-API-Key`, too many headers, a malformed line)
  is answered in the API's one error shape, not with a bare `400` or a dropped connection."""

import json
import re
from typing import Any

from daphne import cli
from daphne import server as daphne_server
from daphne.access import AccessLogGenerator
from daphne.http_protocol import HTTPFactory
from twisted.web import http

SECRET_QUERY = re.compile(r"([?&]token=)[^&\s]*")
REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large"}  # Twisted's RESPONSES lacks 431
# How long a refused connection keeps reading (and dropping) what its client still sends before closing.
LINGER_SECONDS = 2


def redact(request: str) -> str:
    return SECRET_QUERY.sub(r"\1[redacted]", request)


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host: str, date: object, request: str, *args: object, **kwargs: object) -> None:
        super().write_entry(host, date, redact(request), *args, **kwargs)


class AnnouncingServer(daphne_server.Server):
    """Daphne that prints the address it listens on (Daphne's own line is an INFO log that Django's
    logging configuration hides)."""

    def listen_success(self, port: Any) -> None:
        super().listen_success(port)
        address = port.getHost()
        if hasattr(address, "port"):
            host = f"[{address.host}]" if ":" in address.host else address.host
            print(f"Listening on http://{host}:{address.port}/ (Ctrl-C to stop)", flush=True)


class JsonRefusalsChannel(http.HTTPChannel):
    """Twisted refuses a request head it will not read itself: a line over MAX_LENGTH (16 KB) by dropping
    the connection unanswered, too many or too large headers or a malformed line with a bare `400`. The
    client gets the API's error shape instead, saying what to fix."""

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(431, "headers_too_large", f"A header is over {self.MAX_LENGTH:,} bytes; send shorter headers.")

    def _respondToBadRequestAndDisconnect(self) -> None:
        if self._receivedHeaderSize > self.totalHeadersSize:
            message = f"The headers are over {self.totalHeadersSize:,} bytes in all; send shorter headers."
            self._refuse(431, "headers_too_large", message)
        else:
            # Twisted also parses a multipart/form-data body itself and lands here when its parts are broken.
            message = "The request is malformed: check its request line, its headers and, for a multipart body, its parts and boundary."
            self._refuse(400, "bad_request", message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        transport: Any = self.transport  # a TCP or Unix connection (Twisted types it as an interface)
        transport.write(head.encode() + body)
        # Closing a socket with unread bytes makes the kernel reset the connection, and a client still
        # sending its headers would lose this answer to the reset: read and drop the rest, send our end's
        # close after the answer, and close for good when the client does or the linger time is up.
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda *_: None  # type: ignore[method-assign]
        transport.loseWriteConnection()
        self.setTimeout(LINGER_SECONDS)


def json_refusals_protocol(factory: http.HTTPFactory) -> Any:
    # As Twisted's own HTTPFactory.protocol, with this channel (the wrapper negotiates HTTP/2 when it can).
    return http._GenericHTTPChannelProtocol(JsonRefusalsChannel())


class JsonRefusalsHTTPFactory(HTTPFactory):
    protocol = json_refusals_protocol


def main() -> None:
    # Daphne's command line and server build these from module names; everything else is as usual.
    cli.AccessLogGenerator = RedactingAccessLog
    cli.CommandLineInterface.server_class = AnnouncingServer
    daphne_server.HTTPFactory = JsonRefusalsHTTPFactory
    cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
