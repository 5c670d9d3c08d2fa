"""`python -m config.serve …`: Daphne, exactly as `daphne …`, except that its access log never shows a
stream token (`?token=` authenticates SSE for clients that cannot send headers)."""

import re

from daphne import cli
from daphne.access import AccessLogGenerator

SECRET_QUERY = re.compile(r"([?&]token=)[^&\s]*")


def redact(request: str) -> str:
    return SECRET_QUERY.sub(r"\1[redacted]", request)


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host: str, date: object, request: str, *args: object, **kwargs: object) -> None:
        super().write_entry(host, date, redact(request), *args, **kwargs)


def main() -> None:
    # Daphne's command line builds its access log from this name; it takes every other option as usual.
    cli.AccessLogGenerator = RedactingAccessLog
    cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
