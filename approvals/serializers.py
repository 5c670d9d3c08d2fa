"""Approvals and questions over REST and the conversation WebSocket: what each looks like, and the bodies that
decide one. The bodies check their shape; whether the request may still be decided, and what the answers must
name, is `approvals.services`'s to say, for every surface alike."""

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.errors import ServiceError
from api.serializers import StrictSerializer
from approvals.models import Approval, Decider, Question
from approvals.services import MAX_MESSAGE_CHARS, checked_answers

OBJECT = {"type": "object", "additionalProperties": {}}
ANSWERS = {
    "type": "object",
    "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "example": {"Which format?": "CSV"},
}


class DecidedBySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        Decider.choices, help_text="`end_user`, `api_key`, `operator` (admin) or `system` (expiry, a run that ended)."
    )
    name = serializers.CharField(
        help_text="The end user's id, the key's name and prefix (and the X-User-ID it acted for), the operator's "
        "username, or `platform`."
    )


@extend_schema_field(DecidedBySerializer(allow_null=True, help_text="Who settled it; null while pending."))
class DecidedByField(serializers.Field):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, request: Approval | Question) -> dict[str, str] | None:
        if not request.decided_by_kind:
            return None
        return {"kind": request.decided_by_kind, "name": request.decided_by}


class StrictBooleanField(serializers.BooleanField):
    """true or false, as JSON says it: DRF's own also takes "yes", 1 and "on", which in JSON is a client's bug."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field(OBJECT)
class ObjectField(serializers.JSONField):
    """A JSON object."""

    default_error_messages = {"not_an_object": "Must be a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        return value


@extend_schema_field(ANSWERS)
class AnswersField(serializers.JSONField):
    """Per question text, a label, labels, or the user's own words."""


# --- What they look like ------------------------------------------------------------------------------


REQUEST_FIELDS = ["id", "conversation_id", "run_id", "user_id", "tool_use_id"]
SETTLED_FIELDS = ["status", "requested_at", "expires_at"]


class ApprovalSerializer(serializers.ModelSerializer):
    """A tool call waiting for (or settled by) a person."""

    conversation_id = serializers.UUIDField(read_only=True)
    run_id = serializers.UUIDField(read_only=True)
    input = serializers.JSONField(
        source="tool_input", read_only=True, help_text="The call's input, as the agent made it."
    )
    updated_input = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="The input the call runs with, as the decider edited it; null: as asked.",
    )
    decided_by = DecidedByField()

    class Meta:
        model = Approval
        fields = [
            *REQUEST_FIELDS,
            "tool",
            "input",
            "title",
            "display_name",
            "description",
            "decision_reason",
            *SETTLED_FIELDS,
            "message",
            "updated_input",
            "remember",
            "decided_by",
            "decided_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "user_id": {"help_text": "The end user whose run asked."},
            "status": {"help_text": "pending, then allowed, denied, expired (denied by itself) or cancelled."},
            "expires_at": {
                "help_text": "Undecided past it, the call is denied by itself, with a reason the model reads."
            },
        }


class QuestionSerializer(serializers.ModelSerializer):
    """The agent's question to its user (its `AskUserQuestion` call)."""

    conversation_id = serializers.UUIDField(read_only=True)
    run_id = serializers.UUIDField(read_only=True)
    questions = serializers.JSONField(
        read_only=True,
        help_text='[{"question", "header", "options": [{"label", "description"}], "multiSelect"}]: answer each by its '
        "`question` text.",
    )
    answers = serializers.JSONField(
        read_only=True, allow_null=True, help_text="Per question text, the chosen label(s) or the user's own words."
    )
    decided_by = DecidedByField()

    class Meta:
        model = Question
        fields = [*REQUEST_FIELDS, "questions", *SETTLED_FIELDS, "answers", "decided_by", "decided_at"]
        read_only_fields = fields
        extra_kwargs = {
            "user_id": {"help_text": "The end user whose run asked."},
            "status": {"help_text": "pending, then answered, expired or cancelled."},
            "expires_at": {"help_text": "Unanswered past it, the agent is told nobody answered."},
        }


# --- Deciding -----------------------------------------------------------------------------------------


class ApprovalDecisionSerializer(StrictSerializer):
    """Allow or deny a pending approval."""

    decision = serializers.ChoiceField(
        ["allow", "deny"],
        help_text="`allow` runs the call (as edited, with `updated_input`); `deny` refuses it, and the model reads "
        "why (`message`).",
        error_messages={"invalid_choice": '"{input}" is not a decision: send "allow" or "deny".'},
    )
    message = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_MESSAGE_CHARS,
        help_text="Words to the model: with a deny, why (it reads them and may do otherwise); with an allow, any "
        "instruction that goes with it.",
    )
    updated_input = ObjectField(
        required=False,
        allow_null=True,
        help_text="With an allow: the tool's whole input to run instead of the one asked (e.g. a corrected "
        "command). The agent profile's rules still hold: an input they refuse is refused (400). Omitted or null: "
        "as asked.",
    )
    remember = StrictBooleanField(
        required=False,
        help_text="With an allow: allow this tool for the rest of the conversation (its later calls ask nobody).",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["decision"] == "deny":
            wrong = {
                name: ["Goes with an allow only: a deny takes a message."]
                for name in ("updated_input", "remember")
                if data.get(name) not in (None, False)
            }
            if wrong:
                raise serializers.ValidationError(wrong)
        return data

    def as_decision(self) -> dict[str, Any]:
        """The validated body as `runs.services.decide_approval` takes it."""
        data = self.validated_data
        return {
            "allow": data["decision"] == "allow",
            "message": data.get("message", ""),
            "updated_input": data.get("updated_input"),
            "remember": data.get("remember", False),
        }


class QuestionAnswerSerializer(StrictSerializer):
    """Answer a pending question: each of its questions, by its text."""

    # With the question in the context (`question`), the answers are checked against its questions: each
    # answered, none unknown (the WebSocket, which finds the question after reading the frame, leaves that to
    # the service).

    answers = AnswersField(
        help_text="Per question (its `question` text, exactly), a label of its options, several labels for a "
        'multiSelect question (a list), or the user\'s own words: {"Which format?": "CSV"}.'
    )

    def validate_answers(self, answers: Any) -> Mapping[str, Any]:
        if not isinstance(answers, dict):
            raise serializers.ValidationError(
                'Must be an object: {"<question text>": "<a label, or your own words>"}, one entry per question.'
            )
        question = self.context.get("question")
        if question is not None:
            try:
                checked_answers(question.questions, answers)
            except ServiceError as problem:
                raise serializers.ValidationError(problem.message) from None
        return answers


# --- The conversation WebSocket's frames (the same bodies, naming their request) -----------------------


class ApprovalDecisionFrameSerializer(ApprovalDecisionSerializer):
    approval_id = serializers.UUIDField()


class QuestionAnswerFrameSerializer(QuestionAnswerSerializer):
    question_id = serializers.UUIDField()
