from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.egress import EgressSettingsError, check_allowlist, check_headers, egress_warnings
from api.serializers import StrictModelSerializer
from tenants.models import PRICE_FIELDS, LanguageModel, ModelPrice, Tenant
from tenants.services import save_language_model


class ModelPriceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelPrice
        fields = ["effective_from", *PRICE_FIELDS, "created_at"]
        read_only_fields = fields


class LanguageModelSerializer(StrictModelSerializer):
    """A catalog entry. Its five prices are the ones in effect now; changing them records a new price
    from now on, and `prices` is the history (newest first, scheduled prices included)."""

    prices = ModelPriceSerializer(
        many=True,
        read_only=True,
        help_text="The model's prices, newest first: each holds from its effective_from until the next; "
        "one that starts later than now is scheduled. Calls keep the price they were charged at.",
    )

    class Meta:
        model = LanguageModel
        fields = [
            "id",
            "display_name",
            "provider",
            "provider_model_id",
            "context_window",
            "max_output_tokens",
            "input_price",
            "output_price",
            "cache_write_5m_price",
            "cache_write_1h_price",
            "cache_read_price",
            "status",
            "prices",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def validate_id(self, value: str) -> str:
        if self.instance is not None and value != self.instance.pk:
            raise serializers.ValidationError("A model's id cannot change; create a new model instead.")
        return value

    def create(self, validated_data: dict[str, Any]) -> LanguageModel:
        return save_language_model(LanguageModel(**validated_data))

    def update(self, instance: LanguageModel, validated_data: dict[str, Any]) -> LanguageModel:
        # A change is a change from the price in effect (what a GET showed), not from an outdated list.
        instance.show_price_in_effect()
        for name, value in validated_data.items():
            setattr(instance, name, value)
        return save_language_model(instance)

    def to_representation(self, instance: LanguageModel) -> dict[str, Any]:
        instance.show_price_in_effect()
        return super().to_representation(instance)


ALLOWLIST_EXAMPLE = ["api.github.com", "*.pypi.org", "files.pythonhosted.org", "10.1.0.0/16:5432"]
HEADERS_EXAMPLE = {"api.github.com": {"Authorization": "Bearer ${github_token}"}}


@extend_schema_field({"type": "array", "items": {"type": "string"}, "example": ALLOWLIST_EXAMPLE})
class EgressAllowlistField(serializers.JSONField):
    """A list of egress allow-list rules."""


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
        "example": HEADERS_EXAMPLE,
    }
)
class EgressHeadersField(serializers.JSONField):
    """Host → header name → value."""


class TenantSerializer(StrictModelSerializer):
    default_model = serializers.SlugRelatedField(slug_field="id", queryset=LanguageModel.objects.all())
    egress_allowlist = EgressAllowlistField(
        required=False,
        help_text="Where its runs' sandboxes may connect, through the run's egress proxy; [] (the default): "
        "nowhere. A rule is a host (`example.com`), its subdomains (`*.example.com`, not the host itself), an address "
        "or a network (`10.1.2.3`, `10.1.0.0/16`, `2001:db8::/32`), each with an optional port (`example.com:8080`, "
        "`[2001:db8::1]:443`, `:*` for any port); without one, 80 and 443. An agent profile's `egress_allowlist` may "
        "narrow it, never widen it; the operator's EGRESS_DENY and its outbound guard (loopback, private, link-local "
        "and metadata addresses) refuse first.",
    )
    egress_headers = EgressHeadersField(
        required=False,
        write_only=True,
        help_text="Headers the egress proxy adds to requests for a host, by its exact name or address (no wildcard, "
        "no port), which the allow-list must allow; values name the tenant's secrets as `${name}` (`PUT "
        "…/secrets/{name}`), revealed only in the proxy, never in the sandbox. HTTPS to such a host is opened by the "
        "proxy with the deployment's CA, which the sandbox trusts. Write-only: a read shows `egress_header_names`. "
        "Host, Connection, Content-Length, Transfer-Encoding, Upgrade, TE, Trailer, Keep-Alive and Proxy-* are the "
        "proxy's own.",
    )
    egress_header_names = serializers.SerializerMethodField(
        help_text="The headers the proxy adds, by host: names only, never values."
    )
    egress_warnings = serializers.SerializerMethodField(
        help_text="What keeps egress headers from being made now, such as a secret they name that is not stored: "
        "requests to that host are refused, saying why, until it is."
    )

    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "default_model",
            "status",
            "run_budget_usd",
            "run_budget_calls",
            "monthly_budget_usd",
            "monthly_budget_calls",
            "user_daily_budget_usd",
            "user_daily_budget_calls",
            "user_monthly_budget_usd",
            "user_monthly_budget_calls",
            "conversation_budget_usd",
            "conversation_budget_calls",
            "chat_shows_cost",
            "time_zone",
            "api_requests_per_minute",
            "user_api_requests_per_minute",
            "runs_per_minute",
            "user_runs_per_minute",
            "egress_allowlist",
            "egress_headers",
            "egress_header_names",
            "egress_warnings",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "example": {"api.github.com": ["Authorization"]},
        }
    )
    def get_egress_header_names(self, tenant: Tenant) -> dict[str, list[str]]:
        return {host: sorted(headers) for host, headers in sorted((tenant.egress_headers or {}).items())}

    def get_egress_warnings(self, tenant: Tenant) -> list[str]:
        return egress_warnings(tenant)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Both egress fields together: a header's host must be on the allow-list the tenant will have."""
        attrs = super().validate(attrs)
        if "egress_allowlist" not in attrs and "egress_headers" not in attrs:
            return attrs
        instance = self.instance if isinstance(self.instance, Tenant) else None
        allowlist = attrs.get("egress_allowlist", instance.egress_allowlist if instance else [])
        headers = attrs.get("egress_headers", instance.egress_headers if instance else {})
        try:
            attrs["egress_allowlist"] = check_allowlist(allowlist)
            attrs["egress_headers"] = check_headers(headers, attrs["egress_allowlist"])
        except EgressSettingsError as problem:
            raise serializers.ValidationError({problem.field: [problem.message]}) from None
        return attrs

    def validate_id(self, value: str) -> str:
        if self.instance is not None and value != self.instance.pk:
            raise serializers.ValidationError("A tenant's id cannot change.")
        return value

    def validate_default_model(self, value: LanguageModel) -> LanguageModel:
        value.check_usable_as_default(self.instance.default_model_id if self.instance else None)
        return value
