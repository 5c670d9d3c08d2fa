"""List filters that refuse what they do not understand, as every other part of the API does."""

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions
from rest_framework.request import Request


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, in UTC: any offset Python reads is fine, whatever PostgreSQL would accept."""

    def to_python(self, value: Any) -> datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # the last hours of year 9999, say
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class StrictFilterBackend(DjangoFilterBackend):
    """Unknown query parameters answer 400 with the ones that exist; lists are filtered, lookups are not."""

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: Any) -> QuerySet[Any]:
        if getattr(view, "action", None) != "list":
            return queryset
        known = set(self._filter_names(request, queryset, view))
        paginator = getattr(view, "paginator", None)
        if paginator is not None:
            known |= {getattr(paginator, "limit_query_param", ""), getattr(paginator, "offset_query_param", "")}
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            allowed = ", ".join(sorted(name for name in known if name))
            raise exceptions.ValidationError({name: [f"Unknown parameter. Allowed: {allowed}."] for name in unknown})
        return super().filter_queryset(request, queryset, view)

    def _filter_names(self, request: Request, queryset: QuerySet[Any], view: Any) -> list[str]:
        filterset_class = self.get_filterset_class(view, queryset)
        return list(filterset_class.base_filters) if filterset_class else []
