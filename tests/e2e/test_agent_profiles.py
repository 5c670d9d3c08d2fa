"""Agent profiles in real runs: REST → Celery → the sandboxed CLI → the gateway → the offline model → events.

Profiles are made with the agents' services (the test process shares the platform's database); everything
else is what a client application does: choose a profile per conversation or message, read the events.
"""

import json
from dataclasses import dataclass
from typing import Any

from agents.models import AgentProfile
from agents.services import create_profile, update_profile
from agents.spec import AgentSpec
from tenants.models import LanguageModel, Tenant
from tenants.services import save_language_model
from tests.e2e.harness import Client


def profile(client: Client, name: str, **spec: Any) -> AgentProfile:
    return create_profile(Tenant.objects.get(pk=client.tenant), name, AgentSpec(**spec))


@dataclass
class Ran:
    """One run as the client reads it: its terminal event and all its events."""

    id: str
    terminal: dict[str, Any]
    events: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event["data"] for event in self.events if event["type"] == kind]

    @property
    def reply(self) -> str:
        return str(self.terminal["data"]["result"])

    @property
    def options(self) -> dict[str, Any]:
        """What the model's request carried, as the offline model's `[[options]]` reports it."""
        return dict(json.loads(self.reply))

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [data for data in self.of("message") if data["block"]["type"] == "tool_use"]


def send(client: Client, conversation: str, text: str, **body: Any) -> str:
    response = client.http.post(client.path(conversation, "/messages"), json={"text": text, **body})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def finish(client: Client, conversation: str, run_id: str) -> Ran:
    terminal = client.wait_for_terminal(conversation, run_id)
    events = [event for event in client.events(conversation) if event["run_id"] == run_id]
    return Ran(run_id, terminal, events)


def run(client: Client, conversation: str, text: str, **body: Any) -> Ran:
    return finish(client, conversation, send(client, conversation, text, **body))


def completed(ran: Ran) -> Ran:
    assert ran.terminal["type"] == "run.completed", ran.terminal
    return ran


def files(client: Client, conversation: str) -> list[str]:
    return sorted(entry["path"] for entry in client.http.get(client.path(conversation, "/files")).json())


def test_a_profile_without_bash_refuses_the_agents_bash_call_and_the_model_reads_why(acme: Client) -> None:
    profile(acme, "reader", disallowed_tools=["Bash"])
    conversation = acme.create_conversation(agent="reader")

    ran = completed(run(acme, conversation, "[[bash touch /workspace/ran]]"))

    assert "Bash" not in ran.of("session.init")[0]["tools"]
    (result,) = ran.of("tool.result")
    assert result["is_error"] is True
    assert "Bash" in result["content"] and "disabled" in result["content"], result
    assert result["content"] in ran.reply  # the model's next call carried the refusal
    assert files(acme, conversation) == []  # the command never ran


def test_an_allowed_pattern_passes_and_its_neighbours_and_compounds_are_refused(acme: Client) -> None:
    profile(acme, "echoer", allowed_tools=["Read", "Bash(echo *)"])
    conversation = acme.create_conversation(agent="echoer")

    ran = completed(run(acme, conversation, "[[bash echo ok]] [[bash ls /]] [[bash echo ok && touch x]]"))

    commands = [use["block"]["input"]["command"] for use in ran.tool_uses]
    assert commands == ["echo ok", "ls /", "echo ok && touch x"]
    passed, neighbour, compound = ran.of("tool.result")
    assert (passed["content"], passed["is_error"]) == ("ok", False)
    reason = "The agent profile 'echoer' allows only these tools: Read, Bash(echo *)."
    for refused in (neighbour, compound):
        assert refused["is_error"] is True and reason in refused["content"], refused
    assert reason in ran.reply
    assert files(acme, conversation) == []  # no x: the compound command did not run in part either


def test_permission_rules_deny_refuses_with_its_reason_and_other_calls_run(acme: Client) -> None:
    rules = [{"pattern": "Bash(rm *)", "action": "deny"}, {"pattern": "Write(secret/**)", "action": "ask"}]
    profile(acme, "careful", permission_rules=rules)
    conversation = acme.create_conversation(agent="careful")

    ran = completed(
        run(
            acme,
            conversation,
            "[[write /workspace/notes.txt keep]] [[bash rm /workspace/notes.txt]] [[bash echo still-here]]",
        )
    )

    assert ran.of("run.started")[0]["agent"] == {
        "name": "careful",
        "version": 1,
        "kind": "agent",
        "busy_policy": "reject",
        "permissions": {"ask": ["Write(secret/**)"], "approval_timeout_seconds": 3600},
    }
    wrote, removed, echoed = ran.of("tool.result")
    assert wrote["is_error"] is False and echoed == {**echoed, "content": "still-here", "is_error": False}
    assert removed["is_error"] is True
    assert "The agent profile 'careful' denies this call (Bash(rm *))." in removed["content"]
    assert files(acme, conversation) == ["notes.txt"]


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_structured_output_that_fits_is_the_runs_result_and_a_misfit_fails_the_run(acme: Client) -> None:
    profile(acme, "counter", output_schema=SCHEMA)
    fits, misfits = acme.create_conversation(agent="counter"), acme.create_conversation(agent="counter")

    good = send(acme, fits, 'Count. [[structured {"n": 3}]]')
    bad = send(acme, misfits, 'Count. [[structured {"n": "x"}]]')
    good_run, bad_run = finish(acme, fits, good), finish(acme, misfits, bad)

    assert completed(good_run).terminal["data"]["structured_output"] == {"n": 3}
    assert "StructuredOutput" in good_run.of("session.init")[0]["tools"]
    stored = acme.http.get(acme.path(fits, f"/runs/{good}")).json()
    assert stored["status"] == "completed" and stored["result"]["structured_output"] == {"n": 3}
    assert bad_run.terminal["type"] == "run.failed", bad_run.terminal
    error = bad_run.terminal["data"]["error"]
    assert error["reason"] == "output_invalid"
    assert "Output does not match required schema" in error["message"] and "integer" in error["message"], error
    assert "structured_output" not in bad_run.terminal["data"]
    refusals = [result for result in bad_run.of("tool.result") if result["is_error"]]
    assert len(refusals) == 5  # the CLI's attempts before it gives up
    assert acme.http.get(acme.path(misfits, f"/runs/{bad}")).json()["error"]["reason"] == "output_invalid"


def test_a_subagents_events_nest_under_the_call_that_started_it_and_the_run_ends_after_them(acme: Client) -> None:
    researcher = {"name": "researcher", "description": "Looks things up", "prompt": "You research.", "tools": ["Bash"]}
    profile(acme, "lead", subagents=[researcher])
    conversation, backgrounded = acme.create_conversation(agent="lead"), acme.create_conversation(agent="lead")
    background = (
        '{"subagent_type": "researcher", "description": "look", "prompt": "look it up", "run_in_background": true}'
    )

    runs = [
        send(acme, conversation, "[[task researcher {{bash echo from-sub}}]]"),
        send(acme, backgrounded, f"[[tool Agent {background}]]"),
    ]
    ran, foreground = (completed(finish(acme, c, r)) for c, r in zip([conversation, backgrounded], runs, strict=True))

    (task,) = [use["block"] for use in ran.tool_uses if use["parent_tool_use_id"] is None]
    assert task["name"] == "Agent" and task["input"]["subagent_type"] == "researcher"
    nested = [event for event in ran.events if event["data"].get("parent_tool_use_id") == task["id"]]
    sub_bash, report = (event["data"] for event in nested if event["type"] == "message")
    (sub_result,) = (event["data"] for event in nested if event["type"] == "tool.result")
    assert sub_bash["block"]["name"] == "Bash" and sub_bash["block"]["input"]["command"] == "echo from-sub"
    assert sub_result == {**sub_result, "tool_use_id": sub_bash["block"]["id"], "content": "from-sub"}
    assert report["block"]["type"] == "text" and "[Bash result] from-sub" in report["block"]["text"]
    # Each of the subagent's two model calls is metered under its call, like all it did.
    sub_usage = [event["data"]["message_id"] for event in nested if event["type"] == "usage"]
    assert sub_usage == [sub_bash["message_id"], report["message_id"]]
    (task_result,) = [event for event in ran.events if event["data"].get("tool_use_id") == task["id"]]
    assert task_result["data"]["parent_tool_use_id"] is None and "from-sub" in task_result["data"]["content"]
    assert nested[-1]["seq"] < task_result["seq"] < ran.terminal["seq"] == ran.events[-1]["seq"]
    usage = ran.of("usage")
    assert len({call["message_id"] for call in usage}) == len(usage) == ran.terminal["data"]["usage"]["model_calls"]
    # A subagent the model sends to the background runs in the foreground: the run ends with its answer.
    (asked,) = [use["block"] for use in foreground.tool_uses if use["parent_tool_use_id"] is None]
    assert asked["input"]["run_in_background"] is True
    (answered,) = [result for result in foreground.of("tool.result") if result["tool_use_id"] == asked["id"]]
    assert "[Subagent hand-back]" in answered["content"] and "look it up" in answered["content"], answered
    assert [m["block"]["text"] for m in foreground.of("message") if m["parent_tool_use_id"] == asked["id"]] == [
        "Offline model (not Claude) reply: look it up"
    ]


def test_an_edited_profile_reaches_an_existing_conversations_next_turn_unless_it_keeps_its_prompt(
    acme: Client,
) -> None:
    follows = profile(acme, "follows", instructions="Speak as version A.")
    keeps = profile(acme, "keeps", instructions="Speak as version A.", prompt_scope="new_conversations")
    following, keeping = acme.create_conversation(agent="follows"), acme.create_conversation(agent="keeps")
    firsts = [send(acme, following, "[[options]]"), send(acme, keeping, "[[options]]")]
    for conversation, run_id in zip([following, keeping], firsts, strict=True):
        assert completed(finish(acme, conversation, run_id)).options["system_tail"].endswith("Speak as version A.")

    update_profile(follows, {"instructions": "Speak as version B."})
    update_profile(keeps, {"instructions": "Speak as version B."})
    newcomer = acme.create_conversation(agent="keeps")
    seconds = [send(acme, following, "[[options]]"), send(acme, keeping, "[[options]]")]
    fresh = send(acme, newcomer, "[[options]]")

    followed, kept = (finish(acme, c, r) for c, r in zip([following, keeping], seconds, strict=True))
    assert completed(followed).options["system_tail"].endswith("Speak as version B.")
    assert completed(kept).options["system_tail"].endswith("Speak as version A.")
    assert completed(finish(acme, newcomer, fresh)).options["system_tail"].endswith("Speak as version B.")
    # Both resumed their session; both recorded the version they were given.
    assert followed.of("run.started")[0]["resumed_session_id"] and kept.of("run.started")[0]["resumed_session_id"]
    assert [followed.of("run.started")[0]["agent"]["version"], kept.of("run.started")[0]["agent"]["version"]] == [2, 2]


def test_a_pinned_conversation_keeps_its_version_while_an_unpinned_one_moves_on(acme: Client) -> None:
    support = profile(acme, "support", instructions="You are support, version one.")
    update_profile(support, {"instructions": "You are support, version two."})
    pinned, unpinned = acme.create_conversation(agent="support@1"), acme.create_conversation(agent="support")

    runs = [send(acme, pinned, "[[options]]"), send(acme, unpinned, "[[options]]")]
    old, new = (completed(finish(acme, c, r)) for c, r in zip([pinned, unpinned], runs, strict=True))

    assert old.options["system_tail"].endswith("You are support, version one.")
    assert new.options["system_tail"].endswith("You are support, version two.")
    for ran, version in [(old, 1), (new, 2)]:
        expected = {"name": "support", "version": version, "kind": "agent"}
        assert ran.of("run.queued")[0]["agent"] == expected
        assert ran.of("run.started")[0]["agent"] == {**expected, "busy_policy": "reject"}
    conversation = acme.http.get(acme.path(pinned)).json()
    assert conversation["agent"] == {"name": "support", "version": 1}


def test_a_messages_agent_applies_to_its_run_only(acme: Client) -> None:
    profile(acme, "alpha", instructions="You are alpha.")
    profile(acme, "beta", instructions="You are beta.")
    conversation = acme.create_conversation(agent="alpha")

    borrowed = completed(run(acme, conversation, "[[options]]", agent="beta"))
    back = completed(run(acme, conversation, "[[options]]"))

    assert borrowed.of("run.queued")[0]["agent"]["name"] == borrowed.of("run.started")[0]["agent"]["name"] == "beta"
    assert borrowed.options["system_tail"].endswith("You are beta.")
    assert back.of("run.queued")[0]["agent"]["name"] == back.of("run.started")[0]["agent"]["name"] == "alpha"
    assert back.options["system_tail"].endswith("You are alpha.")
    assert acme.http.get(acme.path(conversation)).json()["agent"] == {"name": "alpha", "version": None}


def test_end_users_text_is_relayed_verbatim_without_file_expansion_or_cli_commands(acme: Client) -> None:
    # A file big enough that the CLI's `@path` expansion would show in the call's metered input.
    notes = "\n".join(f"line {n}: the quick brown fox jumps over the lazy dog" for n in range(600)).encode()
    mentioned, plain = acme.create_conversation(), acme.create_conversation()
    for conversation in (mentioned, plain):
        stored = acme.http.post(acme.path(conversation, "/files"), files={"file": ("notes.txt", notes, "text/plain")})
        assert stored.status_code == 201, stored.text

    runs = [send(acme, mentioned, "Summarise @notes.txt"), send(acme, plain, "Summarise #notes.txt")]
    with_at, without = (completed(finish(acme, c, r)) for c, r in zip([mentioned, plain], runs, strict=True))

    assert with_at.reply == "Offline model (not Claude) reply: Summarise @notes.txt"
    assert not with_at.tool_uses
    # Both calls carried as much text: the file's ~9,000 tokens were in neither (expanded, they were in the first).
    first_input = [ran.of("usage")[0]["input_tokens"] for ran in (with_at, without)]
    assert abs(first_input[0] - first_input[1]) < 100 < len(notes) // 4, first_input
    # The CLI's own commands never reach it: refused before the run, with the way to send such text.
    refused = acme.http.post(acme.path(plain, "/messages"), json={"text": "/init"})
    assert refused.status_code == 400 and "/init is not a command here" in refused.json()["error"]["message"]


def test_effort_fallback_model_and_max_turns_reach_the_cli(acme: Client) -> None:
    fallback = save_language_model(
        LanguageModel(
            id="offline-fallback", display_name="Offline fallback", provider="offline", provider_model_id="offline-fb"
        )
    )
    profile(acme, "tuned", effort="low", thinking_budget=0, fallback_model=fallback.pk)
    profile(acme, "brief", max_turns=1)
    tuned, brief = acme.create_conversation(agent="tuned"), acme.create_conversation(agent="brief")

    runs = [
        send(acme, tuned, "[[options]] [[error 500 times=1]]"),
        send(acme, brief, "[[bash echo one]] [[bash echo two]]"),
    ]
    options, limited = (finish(acme, c, r) for c, r in zip([tuned, brief], runs, strict=True))

    reported = completed(options).options
    assert reported["effort"] == "low" and reported["output_config"] == {"effort": "low"}
    assert reported["thinking"] is None  # thinking_budget 0: thinking disabled (the default is adaptive)
    assert reported["model"] == "offline-fb"  # the primary failed; the CLI fell back to the profile's fallback
    assert limited.terminal["type"] == "run.failed", limited.terminal
    assert limited.terminal["data"]["error"] == {
        "reason": "max_turns",
        "message": "The agent reached its limit of turns (1) before it finished.",
        "api_status": None,
    }
    assert [result["content"] for result in limited.of("tool.result")] == ["one"]
