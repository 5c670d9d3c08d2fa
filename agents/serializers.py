"""Agent profiles over REST: a profile with its current version's fields inline, and its versions.

The serializers give each field its JSON type and document it; whether a profile could run (tool patterns,
models, skills, subagents, the output schema) is `agents.services.check_spec`'s to say, for REST and admin alike.
"""

import copy
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    MAX_APPROVAL_TIMEOUT_SECONDS,
    MAX_INSTRUCTIONS_CHARS,
    AgentProfile,
    AgentVersion,
)
from agents.rules import ACTIONS
from agents.spec import MAX_SUBAGENTS
from api.serializers import MAX_INTEGER, StrictSerializer

# --- The shapes of the JSON fields, for the schema (check_spec validates them) --------------------------


class PermissionRuleSerializer(serializers.Serializer):
    pattern = serializers.CharField(help_text="A tool pattern, e.g. `Bash(rm *)` or `WebFetch(domain:example.com)`.")
    action = serializers.ChoiceField(ACTIONS, help_text="`deny` wins over `ask`, which wins over `allow`.")


class SubagentSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="How the agent names it to the Task tool: lowercase letters, digits, -.")
    description = serializers.CharField(help_text="When the agent should hand work to it.")
    prompt = serializers.CharField(help_text="Its system prompt.")
    tools = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        required=False,
        help_text="Tool patterns it may use; null or absent: the same tools as the agent.",
    )
    model = serializers.CharField(
        allow_null=True, required=False, help_text="A catalog model id; null or absent: the agent's model."
    )


PATTERNS = {"type": "array", "items": {"type": "string"}}
NAMES = {"type": "array", "items": {"type": "string"}, "nullable": True}
OBJECT = {"type": "object", "additionalProperties": {}, "nullable": True}


@extend_schema_field(PATTERNS)
class PatternsField(serializers.JSONField):
    """A list of tool patterns."""


@extend_schema_field(NAMES)
class NamesField(serializers.JSONField):
    """A list of names, or null."""


@extend_schema_field(
    {**NAMES, "example": ["api.github.com", "*.pypi.org", "files.pythonhosted.org", "10.1.0.0/16:5432"]}
)
class EgressRulesField(serializers.JSONField):
    """A list of egress allow-list rules, or null."""


@extend_schema_field(PermissionRuleSerializer(many=True))
class PermissionRulesField(serializers.JSONField):
    """A list of {pattern, action}."""


@extend_schema_field(SubagentSerializer(many=True))
class SubagentsField(serializers.JSONField):
    """A list of subagent definitions."""


@extend_schema_field(OBJECT)
class JsonSchemaField(serializers.JSONField):
    """A JSON Schema object, or null."""


# --- The fields of a version -----------------------------------------------------------------------


def version_fields(through: str | None = None) -> dict[str, serializers.Field]:
    """A version's fields, each documenting the SDK option it sets. To read, `through` reaches the version
    from the serialized object ("" for a version, "current_version." for a profile). To write (None), none is
    required: a new profile takes the defaults, and a change names only what it changes."""

    def source(attribute: str, name: str) -> dict[str, Any]:
        if through is None:
            return {}
        # DRF refuses a `source` equal to the field's own name.
        path = f"{through}{attribute}"
        return {"read_only": True, **({} if path == name else {"source": path})}

    return {
        "kind": serializers.ChoiceField(
            AgentVersion.Kind.choices,
            required=False,
            help_text="`agent` (default): the Claude Code CLI with tools, in a sandbox. `chat`: one streamed model "
            "call per message, without tools or sandbox; its tool fields, subagents and output_schema stay empty.",
            **source("kind", "kind"),
        ),
        "instructions": serializers.CharField(
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            max_length=MAX_INSTRUCTIONS_CHARS,
            help_text="Appended to Claude Code's system prompt (SDK `system_prompt.append`); "
            f"at most {MAX_INSTRUCTIONS_CHARS:,} characters.",
            **source("instructions", "instructions"),
        ),
        "prompt_scope": serializers.ChoiceField(
            AgentVersion.PromptScope.choices,
            required=False,
            help_text="`next_turn` (default): an edit of the instructions reaches existing conversations at their "
            "next turn. `new_conversations`: a conversation keeps the instructions it started with "
            "(SDK `system_prompt.snapshot`).",
            **source("prompt_scope", "prompt_scope"),
        ),
        "model": serializers.CharField(
            required=False,
            allow_null=True,
            max_length=63,
            help_text="An active model of the catalog (`GET /api/models`); null: the tenant's default model. "
            "A conversation that names a model runs on that one instead.",
            **source("model_id", "model"),
        ),
        "fallback_model": serializers.CharField(
            required=False,
            allow_null=True,
            max_length=63,
            help_text="An active catalog model to use when the model is overloaded (SDK `fallback_model`); null: none.",
            **source("fallback_model_id", "fallback_model"),
        ),
        "effort": serializers.ChoiceField(
            AgentVersion.Effort.choices,
            required=False,
            allow_blank=True,
            help_text="How hard the model works (SDK `effort`): `low`, `medium`, `high`, `max`; empty: the model's "
            "default.",
            **source("effort", "effort"),
        ),
        "thinking_budget": serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=0,
            max_value=128_000,
            help_text="Tokens of extended thinking per model call (SDK `thinking`); 0 turns thinking off; "
            "null: the model's default.",
            **source("thinking_budget", "thinking_budget"),
        ),
        "max_turns": serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=1,
            max_value=MAX_INTEGER,
            help_text="Most agent turns in one run (SDK `max_turns`); null: no limit.",
            **source("max_turns", "max_turns"),
        ),
        "run_budget_usd": serializers.DecimalField(
            required=False,
            allow_null=True,
            max_digits=12,
            decimal_places=6,
            min_value=Decimal(0),
            help_text="Most one run may spend, in USD: lowers the tenant's run budget, never raises it; "
            "null: the tenant's.",
            **source("run_budget_usd", "run_budget_usd"),
        ),
        "run_budget_calls": serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=0,
            max_value=MAX_INTEGER,
            help_text="Most model calls one run may make, below the tenant's; null: the tenant's.",
            **source("run_budget_calls", "run_budget_calls"),
        ),
        "allowed_tools": PatternsField(
            required=False,
            help_text="Tool patterns the agent may use: a tool (`Read`, `WebSearch`), a tool with a specifier "
            "(`Bash(git *)`, `Read(src/**)`, `WebFetch(domain:*.example.com)`, `Task(reviewer)`), or an MCP server "
            "or one of its tools (`mcp__github`, `mcp__github__create_issue`). Every part of a compound shell "
            "command must match. Empty: every tool.",
            **source("allowed_tools", "allowed_tools"),
        ),
        "disallowed_tools": PatternsField(
            required=False,
            help_text="Tool patterns the agent may never use; they win over allowed_tools, and any part of a "
            "compound shell command matching refuses the whole command.",
            **source("disallowed_tools", "disallowed_tools"),
        ),
        "permission_rules": PermissionRulesField(
            required=False,
            help_text="A decision per tool pattern: `allow`, `ask` or `deny`; deny wins over ask, ask over allow. "
            "A call an `ask` rule matches waits for a person's decision (an approval: `GET …/approvals`), at most "
            "approval_timeout_seconds, then is denied by itself.",
            **source("permission_rules", "permission_rules"),
        ),
        "approval_timeout_seconds": serializers.IntegerField(
            required=False,
            min_value=10,
            max_value=MAX_APPROVAL_TIMEOUT_SECONDS,
            help_text="How long an approval or a question of its runs waits for a person (10 s to 7 days; default "
            f"{DEFAULT_APPROVAL_TIMEOUT_SECONDS}); past it, it is denied (or left unanswered) by itself, with a "
            "reason the model reads.",
            **source("approval_timeout_seconds", "approval_timeout_seconds"),
        ),
        "busy_policy": serializers.ChoiceField(
            AgentVersion.BusyPolicy.choices,
            required=False,
            help_text="What a message sent while a run of this version is active does: `reject` (default): 409 "
            "`run_in_progress`. `queue`: it runs after the active run, in order (at most RUN_QUEUE_MAX waiting). "
            "`steer`: the running agent takes it in as its next user input. `interrupt`: it stops the active run "
            "(which keeps its events and usage) and runs right after. The message's 202 says which (`disposition`).",
            **source("busy_policy", "busy_policy"),
        ),
        "skills": NamesField(
            required=False,
            allow_null=True,
            help_text="The tenant's enabled skills its runs get, by name; null: all of them. A conversation or "
            "message may narrow them, never widen.",
            **source("skills", "skills"),
        ),
        "mcp_servers": NamesField(
            required=False,
            allow_null=True,
            help_text="The tenant's MCP servers its runs get, by name; null: all of them. A conversation or message "
            "may narrow them, never widen.",
            **source("mcp_servers", "mcp_servers"),
        ),
        "egress_allowlist": EgressRulesField(
            required=False,
            allow_null=True,
            help_text="Where its runs' sandboxes may connect, narrowing the tenant's `egress_allowlist` (a connection "
            "must pass both: a profile never widens it); null: the tenant's as is; []: nowhere. Rules: a host "
            "(`example.com`), its subdomains (`*.example.com`), an address or network (`10.1.2.3`, `10.1.0.0/16`), "
            "each with an optional port (`example.com:8080`, `10.1.0.0/16:5432`, `:*` for any); without one, 80 "
            "and 443.",
            **source("egress_allowlist", "egress_allowlist"),
        ),
        "subagents": SubagentsField(
            required=False,
            help_text=f"At most {MAX_SUBAGENTS} agents it may hand work to with the Task tool (SDK `agents`), each "
            "{name, description, prompt, tools?, model?}; their events are nested under the Task call.",
            **source("subagents", "subagents"),
        ),
        "output_schema": JsonSchemaField(
            required=False,
            allow_null=True,
            help_text='A JSON Schema ("type": "object") the run\'s final answer must fit (SDK `output_format`): '
            "the object comes as `structured_output` in run.completed, and an answer that does not fit fails the "
            "run (`output_invalid`). null: a free-text answer.",
            **source("output_schema", "output_schema"),
        ),
    }


# The names of a version's fields, as AgentSpec and the API call them.
VERSION_FIELDS = list(version_fields())


DATES = {
    "created_at": serializers.DateTimeField(read_only=True, help_text="When it was made."),
    "updated_at": serializers.DateTimeField(read_only=True, help_text="When it last changed (a new version too)."),
}


class AgentVersionSerializer(serializers.Serializer):
    """One immutable version of a profile."""

    number = serializers.IntegerField(read_only=True, help_text="1, 2, …: `name@number` pins a conversation to it.")
    current = serializers.SerializerMethodField(help_text="Whether the profile runs this version now.")
    created_by = serializers.CharField(
        read_only=True, help_text='Who made it: "api-key:<key name>" or "operator:<admin user>".'
    )
    created_at = serializers.DateTimeField(read_only=True, help_text="When it was made.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = super().get_fields()
        return {**fields, **version_fields("")}

    def get_current(self, version: AgentVersion) -> bool:
        return version.profile.current_version_id == version.pk


NAME_HELP = "Unique in the tenant: 1-63 lowercase letters, digits and hyphens. Cannot change."
DESCRIPTION_HELP = "What it is for, for people."
IS_DEFAULT_HELP = (
    "Conversations that name no agent get it. A tenant has exactly one: making one default unmakes the other; "
    "the default cannot be unmade, only replaced."
)
CHOOSABLE_HELP = (
    "End users may pick it in the chat page, and read it here (with X-User-ID); the default they always may."
)


class AgentSerializer(serializers.Serializer):
    """A profile with its current version's fields inline."""

    name = serializers.CharField(read_only=True, help_text=NAME_HELP)
    description = serializers.CharField(read_only=True, help_text=DESCRIPTION_HELP)
    is_default = serializers.BooleanField(read_only=True, help_text=IS_DEFAULT_HELP)
    choosable = serializers.BooleanField(read_only=True, help_text=CHOOSABLE_HELP)
    current_version = serializers.IntegerField(
        source="current_version.number",
        read_only=True,
        help_text="The number of the version it runs now; that version's fields follow.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = super().get_fields()
        return {**fields, **version_fields("current_version."), **copy.deepcopy(DATES)}


class AgentWriteSerializer(StrictSerializer):
    """A new profile, or a change to one: a change to its version fields makes a new version."""

    name = serializers.CharField(max_length=63, help_text=NAME_HELP)
    description = serializers.CharField(max_length=1000, required=False, allow_blank=True, help_text=DESCRIPTION_HELP)
    is_default = serializers.BooleanField(required=False, help_text=IS_DEFAULT_HELP)
    choosable = serializers.BooleanField(required=False, help_text=CHOOSABLE_HELP)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = super().get_fields()
        return {**fields, **version_fields()}

    def validate_name(self, value: str) -> str:
        if isinstance(self.instance, AgentProfile) and value != self.instance.name:
            raise serializers.ValidationError("A profile's name cannot change; create a new profile.")
        return value


def spec_changes(validated: dict[str, Any]) -> dict[str, Any]:
    """The version fields of a validated AgentWriteSerializer body, by AgentSpec's names."""
    return {name: value for name, value in validated.items() if name in VERSION_FIELDS}
