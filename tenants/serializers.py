from typing import Any

from rest_framework import serializers

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


class TenantSerializer(StrictModelSerializer):
    default_model = serializers.SlugRelatedField(slug_field="id", queryset=LanguageModel.objects.all())

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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def validate_id(self, value: str) -> str:
        if self.instance is not None and value != self.instance.pk:
            raise serializers.ValidationError("A tenant's id cannot change.")
        return value

    def validate_default_model(self, value: LanguageModel) -> LanguageModel:
        value.check_usable_as_default(self.instance.default_model_id if self.instance else None)
        return value
