from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers import MAX_INTEGER, StrictModelSerializer, StrictSerializer
from usage.models import BudgetLevel, UserBudget

GROUP_BY_CHOICES = ["day", "week", "month", "model", "user", "conversation"]
# The most groups one report answers (the API says when there were more): a report by user or by
# conversation over a busy month could otherwise be one answer of every row the tenant has.
MAX_GROUPS = 1000


@extend_schema_field(OpenApiTypes.STR)
class InstantField(serializers.Field):
    """An ISO 8601 date (midnight UTC) or date-time; a date-time without an offset is taken as UTC."""

    default_error_messages = {
        "invalid": "Use an ISO 8601 date (2026-11-01) or date-time (2026-11-01T12:00:00Z).",
    }

    def to_internal_value(self, data: Any) -> datetime:
        text = str(data).strip()
        try:
            moment = parse_datetime(text)
            day = None if moment else parse_date(text)
        except ValueError:  # well formed but impossible, like 2026-02-30
            self.fail("invalid")
        if moment is None and day is None:
            self.fail("invalid")
        if moment is None:
            assert isinstance(day, date)
            moment = datetime.combine(day, time.min)
        if not timezone.is_aware(moment):
            return moment.replace(tzinfo=UTC)
        try:
            # In UTC: PostgreSQL refuses offsets that Python reads (beyond ±15:59).
            return moment.astimezone(UTC)
        except OverflowError:  # the last hours of year 9999, say
            self.fail("invalid")

    def to_representation(self, value: datetime) -> str:
        return value.isoformat().replace("+00:00", "Z")


class UsageReportQuerySerializer(StrictSerializer):
    """The report's query string. `from` is a Python keyword, hence get_fields()."""

    to = InstantField(required=False, help_text="End of the window (exclusive): a date or date-time.")
    group_by = serializers.ChoiceField(
        choices=GROUP_BY_CHOICES, required=False, help_text="Also break the totals down by this."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = InstantField(required=False, help_text="Start of the window (inclusive): a date or date-time.")
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("from"), attrs.get("to")
        if start is not None and end is not None and end <= start:
            raise serializers.ValidationError({"to": ["It must be later than `from`."]})
        return attrs


class UsageFiguresSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_write_5m_tokens = serializers.IntegerField()
    cache_write_1h_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    model_calls = serializers.IntegerField()
    cost_usd = serializers.CharField(help_text="USD at catalog prices, a decimal string with 10 places.")


class UsageReportFiguresSerializer(UsageFiguresSerializer):
    runs = serializers.IntegerField(
        help_text="Runs created in the window (and group), whether or not they called a model."
    )
    failed_runs = serializers.IntegerField(help_text="Those of them that ended run.failed.")


class UsageGroupSerializer(UsageReportFiguresSerializer):
    key = serializers.CharField(
        allow_null=True,
        help_text="The day (YYYY-MM-DD), model id, end user id or conversation id; "
        "null for the records of a deleted conversation.",
    )


class UsageReportSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    user_id = serializers.CharField(help_text="With X-User-ID, the report covers only that end user.")
    to = serializers.DateTimeField(allow_null=True)
    group_by = serializers.CharField(allow_null=True, help_text=f"One of {', '.join(GROUP_BY_CHOICES)}, or null.")
    totals = UsageReportFiguresSerializer()
    groups = UsageGroupSerializer(many=True, help_text=f"Empty without group_by; at most {MAX_GROUPS} groups.")
    groups_truncated = serializers.BooleanField(help_text=f"True when there were more than {MAX_GROUPS} groups.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(allow_null=True)
        return fields


class UsageCallSerializer(serializers.Serializer):
    message_id = serializers.CharField()
    model = serializers.CharField(source="model_id")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_write_5m_tokens = serializers.IntegerField()
    cache_write_1h_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=16, decimal_places=10)
    created_at = serializers.DateTimeField()


class RunUsageSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()
    conversation = serializers.UUIDField()
    totals = UsageFiguresSerializer()
    calls = UsageCallSerializer(many=True, help_text="Each recorded model call, oldest first.")


class BudgetStateSerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=BudgetLevel.choices)
    period = serializers.CharField(
        allow_null=True, help_text="The month (2026-11) or day (2026-11-28) where the tenant lives."
    )
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True, help_text="When the period ends and the budget starts over.")
    limit_usd = serializers.DecimalField(max_digits=12, decimal_places=6, allow_null=True, help_text="null: unlimited")
    limit_calls = serializers.IntegerField(allow_null=True, help_text="null: unlimited")
    spent_usd = serializers.CharField(help_text="USD recorded in the period.")
    calls = serializers.IntegerField(help_text="Model calls recorded in the period.")
    reserved_usd = serializers.CharField(help_text="The worst-case cost held by calls in progress.")
    reserved_calls = serializers.IntegerField(help_text="Calls in progress.")
    remaining_usd = serializers.CharField(allow_null=True, help_text="What calls may still spend; null: unlimited.")
    remaining_calls = serializers.IntegerField(allow_null=True, help_text="null: unlimited")


class BudgetLimitSerializer(StrictSerializer):
    usd = serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=Decimal(0), allow_null=True, required=False
    )
    calls = serializers.IntegerField(min_value=0, max_value=MAX_INTEGER, allow_null=True, required=False)


class BudgetDefaultsSerializer(serializers.Serializer):
    user_day = BudgetLimitSerializer()
    user_month = BudgetLimitSerializer()
    conversation = BudgetLimitSerializer()
    run = BudgetLimitSerializer()


class TenantBudgetsSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    month = BudgetStateSerializer(help_text="The tenant's calendar month now.")
    defaults = BudgetDefaultsSerializer(
        help_text="What each end user, conversation and run gets unless told otherwise."
    )


class UserBudgetSerializer(StrictModelSerializer):
    """An end user's own budgets; null takes the tenant's default."""

    daily_usd = serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=Decimal(0), allow_null=True, required=False
    )
    daily_calls = serializers.IntegerField(min_value=0, max_value=MAX_INTEGER, allow_null=True, required=False)
    monthly_usd = serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=Decimal(0), allow_null=True, required=False
    )
    monthly_calls = serializers.IntegerField(min_value=0, max_value=MAX_INTEGER, allow_null=True, required=False)

    class Meta:
        model = UserBudget
        fields = ["daily_usd", "daily_calls", "monthly_usd", "monthly_calls"]


class UserBudgetsSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    user_id = serializers.CharField()
    day = BudgetStateSerializer(help_text="The end user's day now.")
    month = BudgetStateSerializer(help_text="The end user's calendar month now.")
    own = UserBudgetSerializer(help_text="Its own budgets; null fields take the tenant's defaults.")
