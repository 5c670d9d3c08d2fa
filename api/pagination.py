"""Pages of a list: `limit` and `offset` that are not whole numbers in range answer 400, not a silent default."""

from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

from api.serializers import MAX_BIGINT


class Pages(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_limit(self, request: Request) -> int:
        return _whole_number(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _whole_number(request, self.offset_query_param, 0, 0, MAX_BIGINT)


def _whole_number(request: Request, name: str, default: int, least: int, most: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not least <= int(raw) <= most:
        raise exceptions.ValidationError({name: [f"Must be a whole number from {least} to {most}."]})
    return int(raw)
