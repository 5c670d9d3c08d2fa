"""Asking a person and recording their answer: approvals of tool calls and the agent's questions.

A request is stored with its event in one transaction; a decision locks the request's row, so of two
deciders racing, one decides and the other gets a 409. What a run does with a decision (resume it, or wake
its waiting worker) is `runs.services`'s; this module only keeps the record, its events and the audit trail.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from api.errors import Conflict, ServiceError
from approvals.models import Approval, Decider, Question, ToolGrant
from audit.models import record as audit
from conversations.events import EventType, record_events
from conversations.models import Run

Asked = TypeVar("Asked", Approval, Question)

MAX_MESSAGE_CHARS = 10_000
MAX_TITLE_CHARS = 500
# What a call acts on (its command, file, URL, ...), in the order the CLI's own permission prompts look for it.
_SUBJECT_KEYS = ("command", "file_path", "notebook_path", "path", "url", "pattern", "query", "skill", "prompt")


@dataclass(frozen=True)
class Who:
    """Who decides: an end user (their id), an API key (its prefix), an operator (their username), the platform."""

    kind: str
    name: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


SYSTEM = Who(Decider.SYSTEM, "platform")


def describe(tool: str, tool_input: Mapping[str, Any]) -> tuple[str, str]:
    """The title and description of a call, for whoever decides (the CLI gives no title to SDK hosts): the title
    says what the agent wants in its own words (the call's `description`) or else what it acts on; the
    description is what it acts on (the command, the file, the URL)."""
    subject = next((str(tool_input[key]) for key in _SUBJECT_KEYS if tool_input.get(key)), "")
    purpose = str(tool_input.get("description") or "") or subject
    title = f"The agent wants to use {tool}" + (f": {purpose}" if purpose else "")
    title = title[: MAX_TITLE_CHARS - 1] + "…" if len(title) > MAX_TITLE_CHARS else title
    return title, subject


# --- Asking --------------------------------------------------------------------------------------


def ask_approval(
    run: Run, tool_use_id: str, tool: str, tool_input: Mapping[str, Any], reason: str, timeout_seconds: int
) -> Approval:
    """The approval of this call, asked once: stored with its `permission.request` event (a call asked about
    again, when a resumed session replays it, finds the one already stored)."""
    title, description = describe(tool, tool_input)
    fields = {"tool": tool, "tool_input": dict(tool_input), "title": title, "display_name": tool}
    fields |= {"description": description, "decision_reason": reason}
    return _ask_once(Approval, run, tool_use_id, timeout_seconds, fields)


def ask_question(run: Run, tool_use_id: str, questions: Sequence[Mapping[str, Any]], timeout_seconds: int) -> Question:
    """The agent's question (its `AskUserQuestion` call), asked once, with its `question` event."""
    return _ask_once(Question, run, tool_use_id, timeout_seconds, {"questions": [dict(item) for item in questions]})


def _ask_once(model: type[Asked], run: Run, tool_use_id: str, timeout_seconds: int, fields: dict[str, Any]) -> Asked:
    with transaction.atomic():
        existing = model.objects.filter(run=run, tool_use_id=tool_use_id).first()
        if existing is not None:
            return existing
        request = model.objects.create(
            tenant_id=run.conversation.tenant_id,
            conversation_id=run.conversation_id,
            run=run,
            user_id=run.user_id,
            tool_use_id=tool_use_id,
            expires_at=timezone.now() + timedelta(seconds=timeout_seconds),
            **fields,
        )
        if isinstance(request, Approval):
            record_events(run, [(EventType.PERMISSION_REQUEST, request_data(request))])
        else:
            record_events(run, [(EventType.QUESTION, question_data(request))])
    return request


def granted(conversation_id: UUID, tool: str) -> bool:
    """Whether a person allowed `tool` for the rest of the conversation."""
    return ToolGrant.objects.filter(conversation_id=conversation_id, tool=tool).exists()


def request_data(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": str(approval.pk),
        "tool_use_id": approval.tool_use_id,
        "tool": approval.tool,
        "input": approval.tool_input,
        "title": approval.title,
        "display_name": approval.display_name,
        "description": approval.description,
        "decision_reason": approval.decision_reason,
        "expires_at": _iso(approval.expires_at),
    }


def question_data(question: Question) -> dict[str, Any]:
    return {
        "question_id": str(question.pk),
        "tool_use_id": question.tool_use_id,
        "questions": question.questions,
        "expires_at": _iso(question.expires_at),
    }


def _iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- Deciding ------------------------------------------------------------------------------------


def decide_approval(
    approval_id: UUID,
    who: Who,
    *,
    allow: bool,
    message: str = "",
    updated_input: Mapping[str, Any] | None = None,
    remember: bool = False,
) -> Approval:
    """Allow or deny a pending approval, once: a second decision is a 409 that says how it was decided."""
    if len(message) > MAX_MESSAGE_CHARS:
        raise ServiceError(f"The message is longer than {MAX_MESSAGE_CHARS:,} characters.", code="message_too_long")
    if updated_input is not None and not isinstance(updated_input, Mapping):
        raise ServiceError("updated_input must be a JSON object: the tool's whole input.", code="invalid_input")
    if not allow and (updated_input is not None or remember):
        raise ServiceError(
            "updated_input and remember go with an allow; a deny takes only a message.", code="invalid_decision"
        )
    with transaction.atomic():
        approval = Approval.objects.select_for_update().select_related("run").get(pk=approval_id)
        _check_pending(approval, "approval")
        approval.status = Approval.Status.ALLOWED if allow else Approval.Status.DENIED
        approval.message = message
        approval.updated_input = dict(updated_input) if updated_input is not None else None
        approval.remember = remember
        _settle(approval, who)
        if remember:
            ToolGrant.objects.get_or_create(
                conversation_id=approval.conversation_id, tool=approval.tool, defaults={"approval": approval}
            )
    return approval


def answer_question(question_id: UUID, who: Who, answers: Mapping[str, Any]) -> Question:
    """Answer a pending question, once. `answers`: per question (its text), the chosen label(s) or free text."""
    with transaction.atomic():
        question = Question.objects.select_for_update().select_related("run").get(pk=question_id)
        _check_pending(question, "question")
        question.answers = checked_answers(question.questions, answers)
        question.status = Question.Status.ANSWERED
        _settle(question, who)
    return question


def checked_answers(questions: Sequence[Mapping[str, Any]], answers: Any) -> dict[str, str]:
    """One answer per question, keyed by its text: a label, several (multiSelect: a list), or the user's own words."""
    if not isinstance(answers, Mapping):
        raise ServiceError('answers must be an object: {"<question text>": "<label or your own words>"}.')
    texts = [str(item.get("question", "")) for item in questions]
    if unknown := [key for key in answers if key not in texts]:
        raise ServiceError(f"No question reads {unknown[0]!r}. Questions: {'; '.join(texts)}.", code="invalid_answers")
    checked = {}
    for text in texts:
        value = answers.get(text)
        if isinstance(value, list) and value and all(isinstance(part, str) and part.strip() for part in value):
            value = ", ".join(value)
        if not isinstance(value, str) or not value.strip():
            raise ServiceError(f"Answer the question {text!r} (a label, or your own words).", code="invalid_answers")
        if len(value) > MAX_MESSAGE_CHARS:
            raise ServiceError(f"The answer to {text!r} is longer than {MAX_MESSAGE_CHARS:,} characters.")
        checked[text] = value
    return checked


def _check_pending(request: Approval | Question, what: str) -> None:
    if request.is_pending:
        return
    by = f" by {request.get_decided_by_kind_display().lower()}" if request.decided_by_kind else ""
    raise Conflict(
        f"This {what} was already settled ({request.status}{by}); a request is decided once.",
        code="already_decided",
    )


def _settle(request: Approval | Question, who: Who) -> None:
    """Stamp who settled the request and when; store its event and the audit record, in the caller's transaction."""
    request.decided_by_kind, request.decided_by, request.decided_at = who.kind, who.name, timezone.now()
    request.save()
    if isinstance(request, Approval):
        kind, data = EventType.PERMISSION_DECISION, decision_data(request)
    else:
        kind, data = EventType.QUESTION_ANSWERED, answer_data(request)
    record_events(request.run, [(kind, data)])
    audit(
        tenant=request.tenant_id,
        actor_kind=who.kind,
        actor=who.name,
        action=f"{'approval' if isinstance(request, Approval) else 'question'}.{request.status}",
        object_type="approval" if isinstance(request, Approval) else "question",
        object_id=request.pk,
        data={"conversation_id": str(request.conversation_id), "run_id": str(request.run_id), **data},
    )


def decision_data(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": str(approval.pk),
        "tool_use_id": approval.tool_use_id,
        "tool": approval.tool,
        "decision": approval.status,
        "message": approval.message,
        "updated_input": approval.updated_input,
        "remember": approval.remember,
        "decided_by": {"kind": approval.decided_by_kind, "name": approval.decided_by},
    }


def answer_data(question: Question) -> dict[str, Any]:
    return {
        "question_id": str(question.pk),
        "tool_use_id": question.tool_use_id,
        "status": question.status,
        "answers": question.answers,
        "decided_by": {"kind": question.decided_by_kind, "name": question.decided_by},
    }


# --- Expiry and ending ---------------------------------------------------------------------------


def expire_due() -> set[UUID]:
    """Deny (by itself) every request past its time; the runs whose requests expired, to resume."""
    now = timezone.now()
    expired = [
        _settle_pending(model, pk, model.Status.EXPIRED)
        for model in (Approval, Question)
        for pk in model.objects.pending().filter(expires_at__lte=now).values_list("pk", flat=True)[:500]
    ]
    return {request.run_id for request in expired if request is not None}


def cancel_pending(run_id: UUID) -> int:
    """Close what a run that ended still asked: nobody can decide for a run that is over."""
    cancelled = [
        _settle_pending(model, pk, model.Status.CANCELLED)
        for model in (Approval, Question)
        for pk in model.objects.pending().filter(run_id=run_id).values_list("pk", flat=True)
    ]
    return sum(request is not None for request in cancelled)


def _settle_pending(model: type[Approval] | type[Question], pk: UUID, status: str) -> Approval | Question | None:
    """Settle one request as the platform, unless someone decided it meanwhile (then None)."""
    with transaction.atomic():
        request = model.objects.select_for_update().select_related("run").filter(pk=pk).first()
        if request is None or not request.is_pending:
            return None
        request.status = status
        _settle(request, SYSTEM)
    return request


def pending_for_run(run_id: UUID) -> Approval | Question | None:
    """The request a run waits on, if any (the oldest: a run asks one thing at a time)."""
    approval = Approval.objects.pending().filter(run_id=run_id).order_by("requested_at").first()
    return approval or Question.objects.pending().filter(run_id=run_id).order_by("requested_at").first()


def settled_request(run_id: UUID, tool_use_id: str) -> Approval | Question | None:
    """The request of this call, settled or not, or None when it was never asked."""
    return (
        Approval.objects.filter(run_id=run_id, tool_use_id=tool_use_id).first()
        or Question.objects.filter(run_id=run_id, tool_use_id=tool_use_id).first()
    )


def latest_request(run_id: UUID) -> Approval | Question | None:
    """The run's newest request: for a run resumed after a suspension, the one it was suspended on."""
    found = [model.objects.filter(run_id=run_id).order_by("-requested_at").first() for model in (Approval, Question)]
    present = [request for request in found if request is not None]
    return max(present, key=lambda request: request.requested_at) if present else None


def request_summary(request: Approval | Question) -> dict[str, Any]:
    """How `run.waiting` and `run.resumed` name the request."""
    kind = "approval" if isinstance(request, Approval) else "question"
    return {
        "kind": kind,
        f"{kind}_id": str(request.pk),
        "tool": request.tool,
        "tool_use_id": request.tool_use_id,
        "status": request.status,
        "expires_at": _iso(request.expires_at),
    }


def mark_applied(request: Approval | Question) -> None:
    """The run took the decision: its call ran with it (or was refused)."""
    type(request).objects.filter(pk=request.pk, applied_at__isnull=True).update(applied_at=timezone.now())


def refusal_text(request: Approval | Question) -> str:
    """What the model reads when a request did not end in an allow or an answer."""
    if request.status == "expired":
        minutes = max(1, round((request.expires_at - request.requested_at).total_seconds() / 60))
        asked = "approved this call" if isinstance(request, Approval) else "answered the question"
        return (
            f"Nobody {asked} within {minutes} minute{'s' if minutes != 1 else ''}, so it was refused. "
            "Continue without it, or tell the user what you need."
        )
    if request.status == "cancelled":
        return "The run ended before anyone decided."
    said = f" They said: {request.message}" if isinstance(request, Approval) and request.message else ""
    return f"The user denied this call.{said}"
