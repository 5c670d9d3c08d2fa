"""The README's curl and WebSocket examples, run as written and in the README's order, against a running
platform. Only the address changes: the README's `localhost:8000` is this test's platform."""

import os
import re
import subprocess
import time
from pathlib import Path

from tenants.models import ApiKey
from tenants.services import create_tenant_with_key
from tests.e2e.harness import ROOT, Client, Platform

BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    """The README's code blocks that talk to a running platform (curl or a WebSocket), in order."""
    text = (ROOT / "README.md").read_text()
    return [
        (language, code)
        for language, code in BLOCK.findall(text)
        if "localhost:8000" in code or ("127.0.0.1:8000" in code and ("curl" in code or "websockets" in code))
    ]


def at(platform: Platform, code: str) -> str:
    address = platform.base_url.removeprefix("http://")
    return code.replace("localhost:8000", address).replace("127.0.0.1:8000", address)


def test_the_readmes_examples_run_as_written(platform: Platform, transactional_db: None, tmp_path: Path) -> None:
    _, key = create_tenant_with_key("demo", "Demo tenant")
    blocks = examples()
    shell = [at(platform, code) for language, code in blocks if language == "sh" and "websockets" not in code]
    websocket = [at(platform, code) for language, code in blocks if "websockets" in code]
    assert len(shell) >= 2 and len(websocket) == 1, blocks

    # The shell examples share one shell, as a reader's terminal would; `C` is what the first exports.
    script = "\n".join(shell).replace("export KEY=ak_...", "#").replace("export ADMIN_KEY=ak_...", "#")
    script += '\necho\necho "C=$C"\n'
    ran = subprocess.run(
        ["/bin/bash", "-c", script],
        env={**os.environ, "KEY": key, "ADMIN_KEY": ApiKey.issue("ops")[1]},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # where the examples' own files (scores.csv) go
    )
    output = ran.stdout
    conversation = re.search(r"^C=([0-9a-f-]{36})$", output, re.MULTILINE)
    assert conversation, (output, ran.stderr)
    assert '"type":"message.delta"' in output, output
    assert "hi from the agent" in output and '"type":"run.completed"' in output, output
    assert '{"events":[' in output and '"has_more":false' in output, output  # the events page
    # The run's own stream from seq 1, then the live stream resumed after Last-Event-ID 2.
    assert output.count("\nid: 2\n") == 1 and output.count("\nid: 3\n") == 2, output
    assert '{"error":{"status":409' in output, output  # nothing left to interrupt
    assert '"path":"data/scores.csv"' in output and '"path":"scores.csv"' in output, output  # the files
    assert '"path":"outputs/summary.txt"' in output and "done\n" in output, output
    assert '"name":"crm_token"' in output and "not-a-real-token" not in output, output  # a secret, write-only
    assert '"type":"file.presented"' in output, output  # the builtin MCP server's present_files
    assert "allows only these tools: Read, Grep, Glob, Bash(ls *)" in output, output  # an agent profile's policy
    assert '"code":"invalid_agent"' in output, output  # a profile that could not run is refused
    assert '"sandbox":"none"' in output and "Earlier turns: 1) My name is Ada." in output, output  # a chat agent
    assert '"code":"files_not_supported"' in output, output
    assert '"name":"greet"' in output and '"content":"hello, Ada"' in output, output  # the skill, run as /greet
    assert re.search(r'\{"url":"http://[^"]+/chat/open/[^"]+","expires_at":', output), output  # a chat link
    assert "['api.github.com', 'pypi.org', 'files.pythonhosted.org', '10.1.0.0/16:5432']" in output, output  # egress
    assert "{'api.github.com': ['Authorization']} []" in output and "is a URL: write its host alone" in output, output
    assert '"code":"already_decided"' in output and "hello from ada" in output, output  # an approval, decided once
    assert "interrupted cancelled" in output, output  # messages sent mid-run: one queued, cancelled
    assert "Earlier turns: 1) one [[slow 3]]" in output, output  # the cancelled message never ran
    assert "No question reads 'Which colour?'" in output and '"status":"answered"' in output, output  # a question

    # A reader waits for the file example's run before the next example's message; so does this test.
    client = Client(platform.base_url, "demo", key)
    deadline = time.monotonic() + 30
    while client.http.get(client.path(conversation[1])).json()["active_run"]:
        assert time.monotonic() < deadline, "the file example's run did not end"
        time.sleep(0.2)

    # The WebSocket example runs as pasted into a shell in the checkout: it names its interpreter.
    started = time.monotonic()
    ran = subprocess.run(
        ["/bin/bash", "-c", websocket[0]],
        env={**os.environ, "KEY": key, "C": conversation[1]},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    elapsed = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip().endswith("run.completed"), ran.stdout
    assert "[Bash result]" in ran.stdout, ran.stdout  # this run's reply, not the earlier run's
    assert "hi from the agent" not in ran.stdout, ran.stdout
    assert elapsed < 5, f"the example took {elapsed:.1f}s"  # its close handshake included
