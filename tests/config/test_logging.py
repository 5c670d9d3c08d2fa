"""The log says each thing once: with DEBUG on (`make run`), Django's records reach one handler, not two."""

import logging

from pytest_django.fixtures import Settings


def handlers_reached(logger_name: str, record: logging.LogRecord) -> list[logging.Handler]:
    """The project's handlers that would print `record` (pytest's own capturing handlers left out)."""
    reached = []
    logger: logging.Logger | None = logging.getLogger(logger_name)
    while logger is not None:
        reached += [
            handler
            for handler in logger.handlers
            if not type(handler).__module__.startswith("_pytest")
            and record.levelno >= handler.level
            and handler.filter(record)
        ]
        logger = logger.parent if logger.propagate else None
    return reached


def test_a_request_warning_is_printed_once_with_debug_on(settings: Settings) -> None:
    settings.DEBUG = True
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Unauthorized: /api", None, None)

    reached = handlers_reached("django.request", record)

    assert len(reached) == 1, reached
    assert reached[0].formatter is not None and "%(asctime)s" in (reached[0].formatter._fmt or "")
