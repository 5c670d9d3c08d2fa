class ServiceError(Exception):
    """A refused request that is the caller's to fix; REST answers it as `status`, WebSockets as an error frame."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class Conflict(ServiceError):
    status = 409
    code = "conflict"
