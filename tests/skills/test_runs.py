"""Skills in real runs: uploaded over REST, placed read-only in the sandbox, invoked through the offline model."""

import io
import zipfile
from typing import Any

from tests.e2e.harness import Client

HELLO = """---
name: hello
description: Greets whoever is named, from the script beside this file. Use when asked to greet.
---
# Hello

Run the greeting script with the name you were given:

[[bash python3 ${CLAUDE_SKILL_DIR}/scripts/hello.py $ARGUMENTS]]
"""
HELLO_SCRIPT = b"import sys\nprint('hello from the skill script,', ' '.join(sys.argv[1:]))\n"

# Laid out exactly as the public Agent Skills examples are: a folder with SKILL.md, scripts/, references/.
CSV_REPORT = {
    "csv-report/SKILL.md": b"""---
name: csv-report
description: Summarises a CSV file into a short report. Use when the user brings a CSV file.
---
# CSV report

1. Run `python3 scripts/report.py <file>` from this skill's folder.
2. Read `references/format.md` for how to present the figures.
""",
    "csv-report/scripts/report.py": b"""import csv
import sys

with open(sys.argv[1], newline="") as source:
    rows = list(csv.DictReader(source))
print(f"{len(rows)} rows; total {sum(float(r['amount']) for r in rows):.2f}")
""",
    "csv-report/references/format.md": b"# Format\n\nOne line: rows, then the total.\n",
}


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return buffer.getvalue()


def upload(client: Client, files: dict[str, bytes], **settings: Any) -> dict[str, Any]:
    url = f"/api/tenants/{client.tenant}/skills"
    response = client.http.post(url, files={"archive": ("skill.zip", zipped(files), "application/zip")})
    assert response.status_code == 201, response.text
    name = response.json()["name"]
    if settings:
        assert client.http.patch(f"{url}/{name}", json=settings).status_code == 200
    return response.json()


def run(client: Client, conversation_id: str, text: str, **body: Any) -> list[dict[str, Any]]:
    response = client.http.post(client.path(conversation_id, "/messages"), json={"text": text, **body})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    terminal = client.wait_for_terminal(conversation_id, run_id)
    assert terminal["type"] == "run.completed", terminal
    return [event for event in client.events(conversation_id) if event["run_id"] == run_id]


def tool_calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = [data["block"] for data in of_type(events, "message") if data["block"]["type"] == "tool_use"]
    return [{"name": block["name"], "input": block["input"]} for block in blocks]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == kind]


def test_a_skill_uploaded_over_rest_runs_its_script_in_the_sandbox_and_stays_out_of_the_files(acme: Client) -> None:
    upload(acme, {"hello/SKILL.md": HELLO.encode(), "hello/scripts/hello.py": HELLO_SCRIPT})
    conversation = acme.create_conversation()

    events = run(acme, conversation, "Greet Ada. [[skill hello Ada]]")

    started = of_type(events, "run.started")[0]
    assert started["skills"] == [{"name": "hello", "version": 1, "platform": False}]
    assert "hello" in of_type(events, "session.init")[0]["skills"]
    assert tool_calls(events)[0] == {"name": "Skill", "input": {"skill": "hello", "args": "Ada"}}
    results = [result["content"] for result in of_type(events, "tool.result")]
    assert "hello from the skill script, Ada" in results

    # The skill's folder is read-only; the workspace, where the agent writes, is saved as usual.
    events = run(
        acme,
        conversation,
        "[[bash touch $CLAUDE_CONFIG_DIR/skills/hello/new.txt; echo touch-exit=$?; "
        "echo changed >> $CLAUDE_CONFIG_DIR/skills/hello/scripts/hello.py; echo append-exit=$?; "
        "echo mine > /workspace/notes.txt; ls /workspace]]",
    )
    output = of_type(events, "tool.result")[0]["content"]
    assert "Read-only file system" in output
    assert "touch-exit=1" in output and "append-exit=1" in output
    files = acme.http.get(acme.path(conversation, "/files")).json()
    assert [entry["path"] for entry in files] == ["notes.txt"]
    assert "SKILL.md" not in output  # nothing of the skill is in /workspace either


def test_disabled_and_other_tenants_skills_never_reach_the_run(acme: Client, globex: Client) -> None:
    upload(acme, {"hello/SKILL.md": HELLO.encode(), "hello/scripts/hello.py": HELLO_SCRIPT})
    upload(acme, {"csv-report/" + k.split("/", 1)[1]: v for k, v in CSV_REPORT.items()}, enabled=False)
    upload(globex, {"globex-secret/SKILL.md": HELLO.replace("name: hello", "name: globex-secret").encode()})
    conversation = acme.create_conversation()

    events = run(
        acme,
        conversation,
        "[[bash ls $CLAUDE_CONFIG_DIR/skills; find / -name SKILL.md -not -path '/proc/*' 2>/dev/null]] "
        "[[skill csv-report]] [[skill globex-secret]]",
    )

    assert of_type(events, "run.started")[0]["skills"] == [{"name": "hello", "version": 1, "platform": False}]
    cli_skills = of_type(events, "session.init")[0]["skills"]
    assert "hello" in cli_skills and "csv-report" not in cli_skills and "globex-secret" not in cli_skills
    listing, disabled, foreign = (result["content"] for result in of_type(events, "tool.result"))
    assert listing.split() == ["hello", listing.split()[1]] and listing.split()[1].endswith("/skills/hello/SKILL.md")
    assert "Unknown skill" in disabled and "csv-report" in disabled
    assert "Unknown skill" in foreign and "globex-secret" in foreign


def test_a_skill_laid_out_like_the_public_examples_runs_unchanged_and_as_a_slash_command(acme: Client) -> None:
    upload(acme, CSV_REPORT, slash_command=True)
    conversation = acme.create_conversation()
    stored = acme.http.post(
        acme.path(conversation, "/files"),
        files={"file": ("sales.csv", b"item,amount\ntea,2.50\ncake,4.25\n", "text/csv")},
    )
    assert stored.status_code == 201, stored.text

    events = run(acme, conversation, "/csv-report sales.csv")
    reply = "".join(delta["text"] for delta in of_type(events, "message.delta"))
    assert "Base directory for this skill:" in reply and "# CSV report" in reply

    events = run(
        acme, conversation, "[[bash python3 $CLAUDE_CONFIG_DIR/skills/csv-report/scripts/report.py sales.csv]]"
    )
    assert of_type(events, "tool.result")[0]["content"] == "2 rows; total 6.75"


def test_selection_preference_and_commands_shape_the_run(acme: Client) -> None:
    upload(acme, {"hello/SKILL.md": HELLO.encode(), "hello/scripts/hello.py": HELLO_SCRIPT})
    upload(acme, CSV_REPORT)
    conversation = acme.create_conversation(skills=["csv-report"])

    events = run(acme, conversation, "[[bash ls $CLAUDE_CONFIG_DIR/skills]]", preferred_skills=["hello"])
    started = of_type(events, "run.started")[0]
    assert [skill["name"] for skill in started["skills"]] == ["csv-report", "hello"]
    assert started["preferred_skills"] == ["hello"]

    events = run(acme, conversation, "[[bash ls $CLAUDE_CONFIG_DIR/skills]]", skills=[])
    assert of_type(events, "run.started")[0]["skills"] == []
    assert of_type(events, "tool.result")[0]["content"] == "(Bash completed with no output)"

    # Not a command here: refused with the commands there are. Any other text starting with '/' is
    # delivered as written, never as one of the CLI's own commands.
    refused = acme.http.post(acme.path(conversation, "/messages"), json={"text": "/init"})
    assert refused.status_code == 400
    assert "/init is not a command here" in refused.json()["error"]["message"]
    events = run(acme, conversation, " /init please")
    reply = "".join(delta["text"] for delta in of_type(events, "message.delta"))
    assert reply == "Offline model (not Claude) reply: /init please"
