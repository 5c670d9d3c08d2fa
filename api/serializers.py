"""Serializers that refuse what they do not know."""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

# The largest values PostgreSQL's integer and bigint columns hold: a bigger number is the client's error.
MAX_INTEGER = 2**31 - 1
MAX_BIGINT = 2**63 - 1


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error instead of a silently ignored value."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                allowed = ", ".join(name for name, field in self.fields.items() if not field.read_only)
                raise serializers.ValidationError(
                    {name: [f"Unknown field. Allowed fields: {allowed}."] for name in unknown}
                )
            # DRF's CharField turns 42 into "42"; a client that sends a number where text belongs has a bug.
            not_text = sorted(
                name
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField)
                and name in data
                and data[name] is not None
                and not isinstance(data[name], str)
            )
            if not_text:
                raise serializers.ValidationError({name: ["Must be a string."] for name in not_text})
        return super().to_internal_value(data)


class StrictModelSerializer(StrictSerializer, serializers.ModelSerializer):
    pass
