"""What an agent profile version holds (`AgentSpec`) and the checks that refuse one that could not run."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

import jsonschema
from django.core.exceptions import ValidationError
from django.db.models import Field

from agents.egress import EgressSettingsError, check_allowlist
from agents.models import DEFAULT_APPROVAL_TIMEOUT_SECONDS, MAX_INSTRUCTIONS_CHARS, AgentVersion
from agents.rules import PatternError, parse_patterns, parse_rules
from api.errors import ServiceError
from mcp_servers.services import enabled_servers
from skills.services import enabled_skills
from tenants.models import LanguageModel, Tenant, slug_validator

MAX_SUBAGENTS = 20
MAX_SCHEMA_CHARS = 100_000
SUBAGENT_KEYS = {"name", "description", "prompt", "tools", "model"}
# Numbers whose bounds the AgentVersion columns state (validators, digits, the column's range).
BOUNDED_FIELDS = ("thinking_budget", "max_turns", "run_budget_usd", "run_budget_calls", "approval_timeout_seconds")


@dataclass(frozen=True)
class AgentSpec:
    """What a version holds: one value per AgentVersion field (see there), as a client or operator wrote it."""

    kind: str = AgentVersion.Kind.AGENT
    instructions: str = ""
    prompt_scope: str = AgentVersion.PromptScope.NEXT_TURN
    model: str | None = None  # a catalog model id
    fallback_model: str | None = None
    effort: str = ""
    thinking_budget: int | None = None
    max_turns: int | None = None
    run_budget_usd: Decimal | None = None
    run_budget_calls: int | None = None
    allowed_tools: Sequence[str] = ()
    disallowed_tools: Sequence[str] = ()
    permission_rules: Sequence[Mapping[str, Any]] = ()
    approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    busy_policy: str = AgentVersion.BusyPolicy.REJECT
    skills: Sequence[str] | None = None
    mcp_servers: Sequence[str] | None = None
    egress_allowlist: Sequence[str] | None = None  # narrows the tenant's; None: the tenant's as is
    subagents: Sequence[Mapping[str, Any]] = ()
    output_schema: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, version: AgentVersion) -> "AgentSpec":
        values = {spec_field.name: getattr(version, spec_field.name) for spec_field in fields(cls)}
        values["model"], values["fallback_model"] = version.model_id, version.fallback_model_id
        return cls(**values)

    def changed(self, changes: Mapping[str, Any]) -> "AgentSpec":
        unknown = set(changes) - {spec_field.name for spec_field in fields(self)}
        if unknown:
            raise ServiceError(f"Unknown agent fields: {', '.join(sorted(unknown))}.", code="invalid_agent")
        return replace(self, **changes)


def field_problem(field_name: str, message: str) -> ServiceError:
    """The 400 that names the field of a spec to fix."""
    return ServiceError(f"{field_name}: {message}", code="invalid_agent", fields={field_name: [message]})


def check_spec(tenant: Tenant, spec: AgentSpec) -> dict[str, LanguageModel | None]:
    """Refuse a spec that could not run, naming the field to fix; the catalog models it names, by field."""
    if spec.kind not in AgentVersion.Kind.values:
        raise field_problem("kind", f"Choose one of: {', '.join(AgentVersion.Kind.values)}.")
    if spec.prompt_scope not in AgentVersion.PromptScope.values:
        raise field_problem("prompt_scope", f"Choose one of: {', '.join(AgentVersion.PromptScope.values)}.")
    if spec.effort not in AgentVersion.Effort.values:
        raise field_problem(
            "effort", f"Choose one of: {', '.join(v for v in AgentVersion.Effort.values if v)}, or empty."
        )
    if spec.busy_policy not in AgentVersion.BusyPolicy.values:
        raise field_problem("busy_policy", f"Choose one of: {', '.join(AgentVersion.BusyPolicy.values)}.")
    if not isinstance(spec.approval_timeout_seconds, int) or isinstance(spec.approval_timeout_seconds, bool):
        raise field_problem("approval_timeout_seconds", "A whole number of seconds.")
    if len(spec.instructions) > MAX_INSTRUCTIONS_CHARS:
        raise field_problem(
            "instructions", f"{len(spec.instructions):,} characters; the limit is {MAX_INSTRUCTIONS_CHARS:,}."
        )
    for name in BOUNDED_FIELDS:
        _check_bounds(name, getattr(spec, name))
    models = {name: _catalog_model(name, getattr(spec, name)) for name in ("model", "fallback_model")}
    for name in ("allowed_tools", "disallowed_tools"):
        try:
            parse_patterns(_strings(name, getattr(spec, name)))
        except PatternError as problem:
            raise field_problem(name, str(problem)) from None
    if not isinstance(spec.permission_rules, Sequence) or isinstance(spec.permission_rules, str):
        raise field_problem("permission_rules", 'A list of {"pattern": …, "action": "allow" | "ask" | "deny"}.')
    try:
        parse_rules(spec.permission_rules)
    except PatternError as problem:
        raise field_problem("permission_rules", str(problem)) from None
    if spec.skills is not None:
        _check_names("skills", _strings("skills", spec.skills), enabled_skills(tenant), "enabled skill")
    if spec.mcp_servers is not None:
        _check_names("mcp_servers", _strings("mcp_servers", spec.mcp_servers), enabled_servers(tenant), "MCP server")
    if spec.egress_allowlist is not None:
        try:
            check_allowlist(spec.egress_allowlist)
        except EgressSettingsError as problem:
            raise field_problem("egress_allowlist", problem.message) from None
    _check_subagents(spec.subagents)
    _check_providers(models["model"] or tenant.default_model, models["fallback_model"], spec.subagents)
    if spec.output_schema is not None:
        _check_schema(spec.output_schema)
    if spec.kind == AgentVersion.Kind.CHAT:
        asked = [
            name
            for name in ("allowed_tools", "disallowed_tools", "permission_rules", "subagents")
            if getattr(spec, name)
        ]
        if asked:
            raise field_problem(asked[0], "A chat agent has no tools; leave it empty or choose kind 'agent'.")
        if spec.output_schema is not None:
            raise field_problem("output_schema", "Structured output needs kind 'agent'.")
        if spec.egress_allowlist is not None:
            raise field_problem("egress_allowlist", "A chat agent has no sandbox to connect from; leave it null.")
    return models


def _check_bounds(field_name: str, value: Any) -> None:
    # objects.create() runs no validator: without this a max_turns of 0 or a budget of -1 would be stored.
    if value is None:
        return
    column = AgentVersion._meta.get_field(field_name)
    assert isinstance(column, Field)
    try:
        column.clean(value, None)
    except ValidationError as problem:
        raise field_problem(field_name, " ".join(problem.messages)) from None


def _strings(field_name: str, values: Any) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        raise field_problem(field_name, "A list of strings.")
    return list(values)


def _catalog_model(field_name: str, model_id: str | None) -> LanguageModel | None:
    if model_id in (None, ""):
        return None
    model = LanguageModel.objects.filter(pk=model_id).first()
    if model is None or not model.is_usable:
        choices = ", ".join(LanguageModel.objects.usable().values_list("id", flat=True)) or "none defined"
        state = "is deprecated" if model else "is not in the model catalog"
        raise field_problem(field_name, f"Model {model_id!r} {state}. Choose one of: {choices}.")
    return model


def _check_names(field_name: str, names: list[str], available: Mapping[str, Any], what: str) -> None:
    for name in names:
        if name not in available:
            choices = ", ".join(sorted(available)) or "none"
            raise field_problem(field_name, f"No {what} is named {name!r}. Choose from: {choices}.")


def _check_subagents(subagents: Any) -> None:
    if isinstance(subagents, str) or not isinstance(subagents, Sequence):
        raise field_problem("subagents", "A list of {name, description, prompt, tools, model}.")
    if len(subagents) > MAX_SUBAGENTS:
        raise field_problem("subagents", f"At most {MAX_SUBAGENTS} subagents.")
    names = set()
    for number, subagent in enumerate(subagents, 1):
        where = f"subagent {number}"
        if not isinstance(subagent, Mapping):
            raise field_problem("subagents", f"{where}: an object with name, description and prompt.")
        if unknown := set(subagent) - SUBAGENT_KEYS:
            raise field_problem("subagents", f"{where}: unknown keys {', '.join(sorted(unknown))}.")
        for key in ("name", "description", "prompt"):
            if not isinstance(subagent.get(key), str) or not subagent[key].strip():
                raise field_problem("subagents", f"{where}: {key} is required (a non-empty string).")
        try:
            slug_validator(subagent["name"])
        except Exception:
            raise field_problem("subagents", f"{where}: name {subagent['name']!r}: {slug_validator.message}") from None
        if subagent["name"] in names:
            raise field_problem("subagents", f"{where}: the name {subagent['name']!r} is used twice.")
        names.add(subagent["name"])
        if len(subagent["prompt"]) > MAX_INSTRUCTIONS_CHARS:
            raise field_problem(
                "subagents", f"{where}: the prompt is longer than {MAX_INSTRUCTIONS_CHARS:,} characters."
            )
        if subagent.get("tools") is not None:
            try:
                parse_patterns(_strings("subagents", subagent["tools"]))
            except PatternError as problem:
                raise field_problem("subagents", f"{where}: {problem}") from None
        if subagent.get("model") is not None:
            _catalog_model("subagents", subagent["model"])


def _check_providers(
    model: LanguageModel, fallback: LanguageModel | None, subagents: Sequence[Mapping[str, Any]]
) -> None:
    """The CLI speaks to one upstream, its model's: a fallback or subagent model of another provider could
    never be called (the gateway refuses it), so it is refused here, where it can be fixed."""
    if fallback is not None and fallback.provider != model.provider:
        raise field_problem(
            "fallback_model",
            f"Model {fallback.pk!r} is served by {fallback.get_provider_display()}, the agent's model {model.pk!r} "
            f"by {model.get_provider_display()}: choose a fallback of the same provider.",
        )
    for subagent in subagents:
        sub_model = LanguageModel.objects.filter(pk=subagent.get("model") or "").first()
        if sub_model is not None and sub_model.provider != model.provider:
            raise field_problem(
                "subagents",
                f"subagent {subagent['name']!r}: model {sub_model.pk!r} is served by "
                f"{sub_model.get_provider_display()}, the agent's model {model.pk!r} by "
                f"{model.get_provider_display()}: choose one of the same provider.",
            )


def _check_schema(schema: Any) -> None:
    if not isinstance(schema, Mapping):
        raise field_problem("output_schema", 'A JSON Schema object, such as {"type": "object", "properties": {…}}.')
    if len(str(schema)) > MAX_SCHEMA_CHARS:
        raise field_problem("output_schema", f"Longer than {MAX_SCHEMA_CHARS:,} characters.")
    if schema.get("type") != "object":
        raise field_problem("output_schema", 'The schema must describe an object ("type": "object").')
    try:
        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as problem:
        path = "/".join(str(part) for part in problem.absolute_path)
        raise field_problem(
            "output_schema", f"Does not compile{f' at {path}' if path else ''}: {problem.message}"
        ) from None
