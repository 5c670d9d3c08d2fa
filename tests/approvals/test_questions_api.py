"""The agent's questions over REST: list, read, answer once, as whom; another tenant's or end user's is 404."""

from typing import Any
from uuid import UUID, uuid4

import pytest
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks
from rest_framework.test import APIClient

from approvals.models import Question
from audit.models import AuditRecord
from conversations.models import Event, Run
from tests.api.assertions import error_of
from tests.chat.test_chat_agents import session
from tests.conftest import client_with_key
from tests.factories import QuestionFactory

pytestmark = pytest.mark.django_db

QUESTIONS = "/api/tenants/acme/questions"
TWO_QUESTIONS = [
    {"question": "Which format?", "header": "Format", "options": [{"label": "CSV"}, {"label": "JSON"}]},
    {
        "question": "Which columns?",
        "header": "Columns",
        "options": [{"label": "Name"}, {"label": "Total"}],
        "multiSelect": True,
    },
]


def url(question: Question, tenant: str = "acme") -> str:
    return f"/api/tenants/{tenant}/questions/{question.pk}"


def answer(client: Client, question: Question, body: Any, tenant: str = "acme", **headers: str) -> Any:
    return client.post(url(question, tenant), body, format="json", **headers)


def snapshot(*questions: Question) -> list[Any]:
    return [
        *[Question.objects.values().get(pk=question.pk) for question in questions],
        *[Run.objects.values().get(pk=question.run_id) for question in questions],
        list(Event.objects.filter(type="question.answered").values()),
        list(AuditRecord.objects.values()),
    ]


def test_answering_stores_the_answers_and_queues_the_waiting_run_again(
    api_client: APIClient,
    question: Question,
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = answer(api_client, question, {"answers": {"Which format?": "CSV"}})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["answers"]) == ("answered", {"Which format?": "CSV"})
    assert body["decided_by"]["kind"] == "api_key" and body["decided_at"]
    assert Run.objects.get(pk=question.run_id).status == Run.Status.QUEUED
    assert dispatched == [question.run_id]


def test_the_answer_has_every_field_of_the_contract(api_client: APIClient, question: Question) -> None:
    body = api_client.get(url(question)).json()

    assert set(body) == {
        "id",
        "conversation_id",
        "run_id",
        "user_id",
        "tool_use_id",
        "questions",
        "status",
        "requested_at",
        "expires_at",
        "answers",
        "decided_by",
        "decided_at",
    }
    assert body["questions"][0]["options"][0]["label"] == "CSV"
    assert (body["status"], body["answers"], body["decided_by"]) == ("pending", None, None)


def test_several_labels_and_own_words_answer_their_questions(api_client: APIClient, waiting_run: Run) -> None:
    question = QuestionFactory(run=waiting_run, questions=TWO_QUESTIONS)

    response = answer(
        api_client, question, {"answers": {"Which format?": "Parquet, please", "Which columns?": ["Name", "Total"]}}
    )

    assert response.status_code == 200, response.content
    assert response.json()["answers"] == {"Which format?": "Parquet, please", "Which columns?": "Name, Total"}


def test_the_answer_lands_in_the_event_log_and_the_audit_trail_naming_the_end_user(
    api_client: APIClient, question: Question
) -> None:
    browser, csrf = session(api_client)

    response = browser.post(url(question), {"answers": {"Which format?": "JSON"}}, "application/json", **csrf)

    assert response.json()["decided_by"] == {"kind": "end_user", "name": "alice"}
    event = Event.objects.get(conversation_id=question.conversation_id, type="question.answered")
    assert event.data["question_id"] == str(question.pk) and event.data["answers"] == {"Which format?": "JSON"}
    assert event.data["decided_by"] == {"kind": "end_user", "name": "alice"}
    record = AuditRecord.objects.get()
    assert (record.actor_kind, record.actor, record.action) == ("end_user", "alice", "question.answered")


def test_a_second_answer_is_409_and_the_first_stands(api_client: APIClient, question: Question) -> None:
    answer(api_client, question, {"answers": {"Which format?": "CSV"}})
    after_first = snapshot(question)

    second = answer(api_client, question, {"answers": {"Which format?": "JSON"}})

    assert error_of(second, 409)["code"] == "already_decided"
    assert snapshot(question) == after_first


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "answers"),
        ({"answers": "CSV"}, "Must be an object"),
        ({"answers": ["CSV"]}, "Must be an object"),
        ({"answers": {}}, "Which format?"),
        ({"answers": {"Which format?": ""}}, "Which format?"),
        ({"answers": {"Which format?": 42}}, "Which format?"),
        ({"answers": {"Which format?": "CSV", "Which colour?": "Red"}}, "Which colour?"),
        ({"answers": {"Which format?": "CSV"}, "note": "hi"}, "note"),
    ],
    ids=[
        "no-answers",
        "answers-a-string",
        "answers-a-list",
        "missing-answer",
        "blank-answer",
        "answer-a-number",
        "unknown-question",
        "unknown-field",
    ],
)
def test_a_bad_body_is_400_saying_what_to_fix_and_answers_nothing(
    api_client: APIClient, question: Question, body: dict[str, Any], says: str
) -> None:
    before = snapshot(question)

    response = answer(api_client, question, body)

    error = error_of(response, 400)
    assert says in error["message"], error
    assert error["fields"]
    assert snapshot(question) == before


def test_another_tenants_or_end_users_question_is_404_like_a_missing_one(
    api_client: APIClient,
    other_api_client: APIClient,
    tenant_key: str,
    question: Question,
    bobs_question: Question,
    their_question: Question,
) -> None:
    as_alice = client_with_key(tenant_key, user_id="alice")
    before = snapshot(question, bobs_question, their_question)
    body = {"answers": {"Which format?": "CSV"}}

    answers = [
        other_api_client.get(url(question)),
        answer(other_api_client, question, body),
        answer(other_api_client, question, body, tenant="globex"),
        api_client.get(url(their_question)),
        answer(api_client, their_question, body),
        as_alice.get(url(bobs_question)),
        answer(as_alice, bobs_question, body),
    ]

    expected = error_of(api_client.get(url(Question(pk=uuid4()))), 404)
    assert [error_of(response, 404) for response in answers] == [expected] * len(answers)
    assert snapshot(question, bobs_question, their_question) == before


def test_the_pending_list_is_the_tenants_and_narrows_to_an_end_user(
    api_client: APIClient, tenant_key: str, question: Question, bobs_question: Question, their_question: Question
) -> None:
    answered = QuestionFactory(run=question.run, status=Question.Status.ANSWERED, answers={"Which format?": "CSV"})

    def listed(client: APIClient, query: str = "") -> set[str]:
        response = client.get(f"{QUESTIONS}{query}")
        assert response.status_code == 200, response.content
        return {item["id"] for item in response.json()["results"]}

    assert listed(api_client, "?status=pending") == {str(question.pk), str(bobs_question.pk)}
    assert listed(api_client) == {str(question.pk), str(bobs_question.pk), str(answered.pk)}
    assert listed(client_with_key(tenant_key, user_id="alice"), "?status=pending") == {str(question.pk)}
    assert listed(api_client, f"?conversation={bobs_question.conversation_id}") == {str(bobs_question.pk)}
    assert listed(api_client, f"?run={question.run_id}&status=answered") == {str(answered.pk)}
    assert error_of(api_client.get(f"{QUESTIONS}?status=allowed"), 400)["fields"]["status"]
