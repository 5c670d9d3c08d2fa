"""The operator admin of conversations, runs and events: every page renders, transcripts, live page, interrupts."""

import re
from collections.abc import Callable

import pytest
from django.test import Client
from django.test.html import Element, parse_html
from django.urls import reverse

from agents.services import create_profile
from agents.spec import AgentSpec
from conversations.models import Conversation, Event, Run
from tenants.models import LanguageModel, Tenant
from tests.conftest import add_events
from tests.subagent_events import AGENT_CALL, STRUCTURED_OUTPUT, subagent_run_events

pytestmark = pytest.mark.django_db

RAW_KEY = re.compile(r"ak_[A-Za-z0-9_-]{20,}")


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


# --- Conversations --------------------------------------------------------------------------------


def test_conversation_changelist_and_change_pages_render_and_add_is_refused(
    admin_client: Client, finished_run: Run
) -> None:
    conversation = finished_run.conversation

    assert admin_client.get(url("conversations_conversation_changelist")).status_code == 200
    assert admin_client.get(url("conversations_conversation_change", conversation.pk)).status_code == 200
    assert admin_client.get(url("conversations_conversation_add")).status_code == 403


def test_conversation_page_shows_the_transcript(admin_client: Client, finished_run: Run) -> None:
    response = admin_client.get(url("conversations_conversation_change", finished_run.conversation_id))

    page = response.content.decode()
    assert "List the files, please." in page
    assert "Let me look at the workspace." in page
    assert "<strong>Bash</strong> <code>ls -la</code>" in page
    assert "&quot;command&quot;: &quot;ls -la&quot;" in page
    assert '<pre class="result">notes.txt</pre></details>' in page  # the result inside its call
    assert "run.completed" in page
    assert "Offline model (not Claude)" in page
    assert "DELTA-ONLY-TOKEN" not in page


def test_the_transcript_shows_what_the_user_typed_with_chips_and_a_failed_call_once(
    admin_client: Client, conversation: Conversation
) -> None:
    typed, appended = (
        "Read my notes",
        "Read my notes\n\nThe user attached these files:\n- /workspace/notes.txt (5 bytes)",
    )
    run = Run.objects.create(conversation=conversation, model=conversation.model, input=appended)
    queued = {"input": appended, "text": typed, "attachments": [{"path": "notes.txt", "size": 5}]}
    cli_words = {
        "role": "assistant",
        "message_id": "m1",
        "block": {"type": "text", "text": "API Error: 403 at 127.0.0.1"},
    }
    add_events(
        run,
        [
            ("run.queued", queued),
            ("message", cli_words),
            ("message.error", {"error": "authentication_failed", "message_id": "m1"}),
            ("run.failed", {"error": {"reason": "model_error", "message": "The model refused the call."}}),
        ],
    )

    page = admin_client.get(url("conversations_conversation_change", conversation.pk)).content.decode()

    assert '<div class="text">Read my notes</div>' in page
    assert '<li class="attachment" title="5 bytes">notes.txt</li>' in page
    assert "The user attached these files" not in page
    assert "API Error: 403" not in page
    assert page.count("The model refused the call.") == 1


def ancestry(page: str, text: str) -> list[str]:
    """The elements around the first text holding `text`, outermost first, as `tag.class[data-tool]`."""

    def find(element: Element, path: list[str]) -> list[str] | None:
        for child in element.children:
            if isinstance(child, str):
                if text in child:
                    return path
                continue
            attributes = dict(child.attributes)
            step = child.name + "".join(f".{name}" for name in (attributes.get("class") or "").split())
            step += f"[{attributes['data-tool']}]" if attributes.get("data-tool") else ""
            if (found := find(child, [*path, step])) is not None:
                return found
        return None

    found = find(parse_html(page), [])
    assert found is not None, f"{text!r} is not on the page"
    return found


def transcript_of(page: str) -> str:
    start = page.index('<section class="transcript')
    return page[start : page.index("</section>", start) + len("</section>")]


SUBAGENT_SECTION = [f"details.tool[{AGENT_CALL}]", "details.subagent", "div.nested"]


def nested(path: list[str], steps: list[str]) -> bool:
    """Whether `steps` follow one another somewhere in `path`."""
    return any(path[at : at + len(steps)] == steps for at in range(len(path)))


def test_the_transcript_nests_a_subagents_lines_in_the_agent_call_that_started_it(
    admin_client: Client, conversation: Conversation
) -> None:
    run = Run.objects.create(conversation=conversation, model=conversation.model, input="Where are my notes?")
    add_events(run, subagent_run_events())

    page = admin_client.get(url("conversations_conversation_change", conversation.pk)).content.decode()

    transcript = transcript_of(page)
    for line in ("SUB-LOOKING", "SUB-ANSWER", "input 40"):  # its words, and its model call's usage
        assert nested(ancestry(transcript, line), SUBAGENT_SECTION)
    assert nested(ancestry(transcript, "ls notes*"), [*SUBAGENT_SECTION, "details.tool[toolu_sub_bash]"])
    assert nested(ancestry(transcript, "notes.txt"), [*SUBAGENT_SECTION, "details.tool[toolu_sub_bash]", "pre.result"])
    assert ancestry(transcript, "researcher")[-2:] == ["summary", "span.agent-type"]  # in the Agent call's summary
    assert '<details class="subagent" open><summary>Subagent <strong>researcher</strong></summary>' in transcript
    assert ancestry(transcript, "AGENT-RESULT")[-2:] == [f"details.tool[{AGENT_CALL}]", "pre.result"]
    for line in ("MAIN-BEFORE", "MAIN-AFTER"):
        assert not any(step.startswith("details.tool") for step in ancestry(transcript, line))
    assert transcript.index("MAIN-BEFORE") < transcript.index("SUB-ANSWER") < transcript.index("MAIN-AFTER")
    assert "(subagent)" not in transcript  # nested lines need no marker


def test_a_subagents_line_whose_call_is_older_than_the_window_stays_in_its_run_marked(
    admin_client: Client, conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run.objects.create(conversation=conversation, model=conversation.model, input="Where are my notes?")
    add_events(run, subagent_run_events())
    # The newest four: the subagent's answer, the Agent call's result, the main agent's answer, the end.
    monkeypatch.setattr("conversations.transcripts.TRANSCRIPT_MAX_EVENTS", 4)

    page = admin_client.get(url("conversations_conversation_change", conversation.pk)).content.decode()

    transcript = transcript_of(page)
    assert "Find the notes" not in transcript  # the Agent call is older than the window
    assert ancestry(transcript, "SUB-ANSWER")[-2:] == ["article.run", "div.assistant"]
    assert re.search(r'<span class="who">Subagent</span>SUB-ANSWER', transcript)
    assert "MAIN-AFTER" in transcript


def test_the_transcript_shows_structured_output_the_agent_context_and_the_title(
    admin_client: Client, conversation: Conversation
) -> None:
    create_profile(conversation.tenant, "analyst", AgentSpec(), description="Reports in JSON.")
    conversation.agent = conversation.tenant.agents.get(name="analyst")
    conversation.context_usage = {"totalTokens": 12_345, "maxTokens": 200_000, "percentage": 6.17, "categories": []}
    conversation.save()
    run = Run.objects.create(conversation=conversation, model=conversation.model, input="Report")
    context = {
        "totalTokens": 12_345,
        "maxTokens": 200_000,
        "percentage": 6.17,
        "categories": [
            {"name": "System prompt", "tokens": 3_100, "color": "gray"},
            {"name": "Messages", "tokens": 420},
        ],
    }
    add_events(
        run,
        [
            *subagent_run_events(structured_output=STRUCTURED_OUTPUT),
            ("context.usage", context),
            ("conversation.titled", {"title": "Where the notes are"}),
        ],
    )

    page = admin_client.get(url("conversations_conversation_change", conversation.pk)).content.decode()

    transcript = transcript_of(page)
    assert ancestry(transcript, '"count": 1')[-2:] == ["div.structured", "pre"]
    assert "Structured output" in transcript
    assert "Context: 12,345 of 200,000 tokens (6%)" in transcript
    assert "System prompt: 3100 tokens" in transcript and "Messages: 420 tokens" in transcript
    assert "Titled “Where the notes are”" in transcript
    assert "agent default@1" in transcript  # what run.started named
    fields = page[: page.index('id="transcript"')]
    assert "analyst" in fields and "12,345 of 200,000 tokens (6%)" in fields


def test_conversation_search_finds_a_conversation_by_its_exact_id(
    admin_client: Client, conversation: Conversation, other_conversation: Conversation
) -> None:
    response = admin_client.get(url("conversations_conversation_changelist"), {"q": str(conversation.pk)})

    assert list(response.context["cl"].result_list) == [conversation]


def test_conversation_changelist_queries_do_not_grow_with_rows(
    admin_client: Client,
    tenant: Tenant,
    other_tenant: Tenant,
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    for i in range(20):
        owner = tenant if i % 2 else other_tenant
        conversation = Conversation.objects.create(tenant=owner, model=owner.default_model, title=f"chat {i}")
        run = Run.objects.create(conversation=conversation, model=conversation.model, input="hi")
        conversation.active_run = run
        conversation.save(update_fields=["active_run"])

    # Session, user, the tenant and model filters' choices, two counts (filtered and total), the page.
    with django_assert_max_num_queries(7):
        response = admin_client.get(url("conversations_conversation_changelist"))

    assert len(response.context["cl"].result_list) == 20


def test_live_page_renders_with_the_conversation_websocket_path(
    admin_client: Client, conversation: Conversation
) -> None:
    response = admin_client.get(url("conversations_conversation_live", conversation.pk))

    assert response.status_code == 200
    assert f"/ws/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/" in response.content.decode()
    assert b"Offline model (not Claude)" in response.content


def test_live_page_names_the_agent_and_the_model_its_next_run_uses(
    admin_client: Client, conversation: Conversation, sonnet: LanguageModel
) -> None:
    create_profile(conversation.tenant, "analyst", AgentSpec(model="sonnet"))
    Conversation.objects.filter(pk=conversation.pk).update(
        agent=conversation.tenant.agents.get(name="analyst"), model=None
    )

    page = admin_client.get(url("conversations_conversation_live", conversation.pk)).content.decode()

    assert "Agent: analyst@1 · Model: Claude Sonnet 4.5" in page


def test_live_page_requires_a_staff_login(client: Client, conversation: Conversation) -> None:
    response = client.get(url("conversations_conversation_live", conversation.pk))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_an_idle_conversation_can_be_deleted_with_its_runs_and_events(admin_client: Client, finished_run: Run) -> None:
    response = admin_client.post(
        url("conversations_conversation_delete", finished_run.conversation_id), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Conversation.objects.exists()
    assert not Event.objects.exists()


def test_a_conversation_with_an_active_run_cannot_be_deleted(admin_client: Client, running_run: Run) -> None:
    response = admin_client.post(url("conversations_conversation_delete", running_run.conversation_id), {"post": "yes"})

    assert response.status_code == 403
    assert Conversation.objects.filter(pk=running_run.conversation_id).exists()


# --- Runs -----------------------------------------------------------------------------------------


def test_run_changelist_and_change_pages_render_and_add_is_refused(admin_client: Client, finished_run: Run) -> None:
    assert admin_client.get(url("conversations_run_changelist")).status_code == 200
    assert admin_client.get(url("conversations_run_change", finished_run.pk)).status_code == 200
    assert admin_client.get(url("conversations_run_add")).status_code == 403


def test_interrupt_action_ends_a_queued_run_and_releases_the_conversation(
    admin_client: Client, running_run: Run
) -> None:
    admin_client.post(
        url("conversations_run_changelist"), {"action": "interrupt_runs", "_selected_action": [running_run.pk]}
    )

    running_run.refresh_from_db()
    assert running_run.status == Run.Status.INTERRUPTED
    assert Conversation.objects.get(pk=running_run.conversation_id).active_run_id is None
    assert Event.objects.filter(run=running_run, type="run.interrupted").count() == 1


def test_interrupt_action_reports_a_run_that_holds_no_lease(admin_client: Client, running_run: Run) -> None:
    Conversation.objects.filter(pk=running_run.conversation_id).update(active_run=None)

    response = admin_client.post(
        url("conversations_run_changelist"),
        {"action": "interrupt_runs", "_selected_action": [running_run.pk]},
        follow=True,
    )

    assert "is not its conversation&#x27;s active run" in response.content.decode()
    running_run.refresh_from_db()
    assert running_run.status == Run.Status.QUEUED


# --- Events ---------------------------------------------------------------------------------------


def test_event_changelist_and_change_pages_render_and_add_is_refused(admin_client: Client, finished_run: Run) -> None:
    event = Event.objects.filter(run=finished_run).first()
    assert event is not None

    assert admin_client.get(url("conversations_event_changelist")).status_code == 200
    assert admin_client.get(url("conversations_event_change", event.pk)).status_code == 200
    assert admin_client.get(url("conversations_event_add")).status_code == 403


def test_event_search_by_conversation_id_and_type_filter(
    admin_client: Client, finished_run: Run, other_conversation: Conversation
) -> None:
    response = admin_client.get(
        url("conversations_event_changelist"), {"q": str(finished_run.conversation_id), "type": "tool.result"}
    )

    events = list(response.context["cl"].result_list)
    assert [event.type for event in events] == ["tool.result"]


def test_an_unsandboxed_run_is_labelled_on_its_conversation_and_run_pages(
    admin_client: Client, conversation: Conversation
) -> None:
    run = Run.objects.create(
        conversation=conversation, model=conversation.model, input="hi", status=Run.Status.COMPLETED
    )
    report = {"mode": "unsandboxed", "layers": {"user": False, "seccomp": False}}
    add_events(run, [("run.started", {"model": "offline", "sandbox": "unsandboxed", "sandbox_report": report})])
    Run.objects.filter(pk=run.pk).update(result={"sandbox": "unsandboxed"})

    conversation_page = admin_client.get(url("conversations_conversation_change", conversation.pk)).content.decode()
    run_page = admin_client.get(url("conversations_run_change", run.pk)).content.decode()
    runs_page = admin_client.get(url("conversations_run_changelist")).content.decode()

    assert '<span class="badge unsandboxed">NOT SANDBOXED</span>' in conversation_page
    assert "NOT SANDBOXED" in run_page and "&quot;mode&quot;: &quot;unsandboxed&quot;" in run_page
    assert "NOT SANDBOXED" in runs_page


def test_a_sandboxed_run_carries_no_such_label(admin_client: Client, finished_run: Run) -> None:
    add_events(finished_run, [("run.started", {"model": "offline", "sandbox": "bubblewrap"})])

    assert "NOT SANDBOXED" not in admin_client.get(url("conversations_run_change", finished_run.pk)).content.decode()
    page = admin_client.get(url("conversations_conversation_change", finished_run.conversation_id)).content.decode()
    assert "NOT SANDBOXED" not in page
