"""The sandbox seen from inside: the agent's Bash tool probes what it can reach, through the real CLI
driven by the offline model, on a real Celery worker running as root (so the sandbox must drop to
its own uid)."""

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from conversations.models import Run
from sandbox.limits import CLI_PROCESS_HEADROOM
from tenants.models import ApiKey, Tenant
from tenants.services import ensure_offline_model
from tests.e2e.harness import ROOT, Client, Platform, database_url

CANARY = f"canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def guarded(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose processes hold secrets the agent must never see, with a small workspace limit."""
    secrets = {
        "ANTHROPIC_API_KEY": f"sk-ant-{CANARY}",
        "AWS_SECRET_ACCESS_KEY": f"aws-{CANARY}",
        "SECRET_KEY": f"django-{CANARY}",
        "SANDBOX_WORKSPACE_MB": "50",
    }
    guarded = Platform(
        database_url(connection.settings_dict), settings.REDIS_URL, tmp_path_factory.mktemp("guarded"), **secrets
    )
    guarded.start_web()
    guarded.start_worker()
    yield guarded
    guarded.stop()


@pytest.fixture
def acme(guarded: Platform, transactional_db: None) -> Client:
    tenant = Tenant.objects.create(id="acme", name="Acme", default_model=ensure_offline_model())
    return Client(guarded.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])


def run_bash(client: Client, command: str, conversation: str | None = None) -> dict[str, Any]:
    """Have the agent run `command` in its Bash tool; the terminal event of that run."""
    conversation = conversation or client.create_conversation()
    run = client.send(conversation, f"[[bash {command}]]")
    return client.wait_for_terminal(conversation, run["id"], timeout=90)


def run_bash_or_say(client: Client, text: str, conversation: str) -> dict[str, Any]:
    """Send `text` (directives) as is; the terminal event of that run."""
    run = client.send(conversation, text)
    return client.wait_for_terminal(conversation, run["id"], timeout=90)


def tool_output(terminal: dict[str, Any]) -> str:
    assert terminal["type"] == "run.completed", terminal
    return terminal["data"]["result"]


def test_the_agent_runs_as_an_unprivileged_user_with_nothing_of_the_hosts_files(acme: Client) -> None:
    output = tool_output(
        run_bash(acme, "id -u; cat /etc/shadow; ls /root; ls /home; ls /work /app; echo; pwd; ls / | tr '\\n' ' '")
    )

    uid = output.split("[Bash result] ", 1)[1].split()[0]
    assert uid.isdigit() and uid != "0"
    assert "root:" not in output
    assert "/etc/shadow: No such file or directory" in output
    assert "/root': No such file or directory" in output
    assert "/workspace" in output


def test_the_agent_sees_no_secret_of_the_worker_anywhere(acme: Client, guarded: Platform) -> None:
    conversation = acme.create_conversation()

    terminal = run_bash(
        acme,
        "env; tr '\\0' '\\n' < /proc/1/environ; tr '\\0' '\\n' < /proc/self/environ; cat /proc/*/cmdline | tr '\\0' ' '",
        conversation,
    )

    output = tool_output(terminal)
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1" in output  # the tool really printed the environment
    assert CANARY not in output
    assert "DATABASE_URL" not in output and "REDIS_URL" not in output
    assert CANARY not in str(acme.events(conversation))
    assert CANARY not in acme.http.get(acme.path(conversation, "/runs")).text
    assert CANARY not in guarded.logs()


def test_the_agent_cannot_reach_another_conversations_workspace(acme: Client) -> None:
    first = acme.create_conversation()
    tool_output(run_bash(acme, "echo private-notes > notes.txt; pwd", first))
    host_path = settings.RUN_ROOT  # the harness's RUN_ROOT differs, so look for the file by name too

    output = tool_output(
        run_bash(
            acme,
            f"ls /workspace; find / -name notes.txt -not -path '/proc/*' 2>/dev/null; ls {host_path} 2>&1; cat /workspace/notes.txt 2>&1",
        )
    )

    assert "private-notes" not in output
    assert "notes.txt" not in output.split("[Bash result]", 1)[1].replace("/workspace/notes.txt: No such file", "")


def test_the_agent_has_no_network_but_its_model(acme: Client, guarded: Platform) -> None:
    web_port = guarded.base_url.rsplit(":", 1)[1]
    probe = "; ".join(
        f"(echo > /dev/tcp/{host}/{port}) 2>/dev/null && echo '{host}:{port} open' || echo '{host}:{port} closed'"
        for host, port in [
            ("127.0.0.1", 5432),
            ("127.0.0.1", 6379),
            ("127.0.0.1", web_port),
            ("10.0.0.1", 80),
            ("1.1.1.1", 443),
        ]
    )

    output = tool_output(run_bash(acme, f"{probe}; cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '"))

    assert "open" not in output.replace("[Bash result]", "")
    assert output.count("closed") == 5
    assert output.strip().endswith("lo")


def test_the_agent_cannot_write_outside_its_workspace_or_nest_namespaces(acme: Client) -> None:
    output = tool_output(
        run_bash(
            acme,
            "touch /usr/x /etc/x /x 2>&1; echo ok > /workspace/mine && echo wrote-workspace; "
            "unshare -U true 2>&1; echo unshare=$?; grep CapEff /proc/self/status",
        )
    )

    assert output.count("Read-only file system") == 3
    assert "wrote-workspace" in output
    assert "unshare=1" in output
    assert "CapEff:\t0000000000000000" in output


def test_a_fork_bomb_and_a_4_gb_allocation_are_contained_and_the_worker_serves_the_next_run(acme: Client) -> None:
    bomb = run_bash(acme, "timeout 5 bash -c ':(){ :|:& };:' 2>/dev/null; echo bomb-over")
    hog = run_bash(acme, "python3 -c 'b = bytearray(4 * 1024**3)' ; echo hog-exit=$?")

    # The bomb fills the tools' process limit, below the run's: the CLI keeps room for its threads and answers.
    assert "bomb-over" in tool_output(bomb)
    assert "hog-exit=137" in tool_output(hog)  # killed by the run's memory limit, not the host
    assert "[Bash result] next" in tool_output(run_bash(acme, "echo next"))


def namespace_inode(name: str) -> str:
    return str(os.stat(f"/proc/self/ns/{name}").st_ino)


PROBES = {
    "uid": "echo uid=$(id -u) proxy=${HTTP_PROXY:-none}",
    "status": "grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status",
    "namespaces": "for ns in user mnt pid net ipc uts cgroup; do echo $ns=$(readlink /proc/self/ns/$ns); done",
    "unshare": "unshare -U true 2>&1 | tail -1",
    "unix": "python3 -c 'import socket; socket.socket(socket.AF_UNIX)' 2>&1 | tail -1",
    "inet": "python3 -c 'import socket; socket.socket(socket.AF_INET); print(\"inet-ok\")'",
    # Without the filter, PTRACE_TRACEME succeeds and an unknown keyctl operation is EOPNOTSUPP; mount is
    # refused by the missing capability either way.
    "syscalls": "python3 -c 'import ctypes, os; c = ctypes.CDLL(None, use_errno=True); "
    "calls = dict(ptrace=lambda: c.ptrace(0, 0, 0, 0), keyctl=lambda: c.syscall(250, -1, 0, 0, 0, 0), "
    'mount=lambda: c.mount(b"none", b"/tmp", b"tmpfs", 0, None)); '
    "[print(name, call(), os.strerror(ctypes.get_errno())) for name, call in calls.items()]'",
    "writable": "touch /usr/x /x 2>/dev/null; echo touch=$?",
    "interfaces": "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | tr '\\n' ' '; echo",
    "limits": "echo pids=$(cat /run/cgroup/pids/pids.max) memory=$(cat /run/cgroup/memory/memory.limit_in_bytes) "
    "quota=$(cat /run/cgroup/cpu/cpu.cfs_quota_us) period=$(cat /run/cgroup/cpu/cpu.cfs_period_us); "
    "echo tools=$(cat /run/cgroup/tools/pids.max) in-tools=$(grep -cx $$ /run/cgroup/tools/cgroup.procs)",
}


def test_the_sandbox_report_matches_what_probes_from_inside_find(acme: Client) -> None:
    conversation = acme.create_conversation()

    terminal = run_bash(acme, "; ".join(PROBES.values()), conversation)

    output = tool_output(terminal).split("[Bash result]", 1)[1]
    status = dict(re.findall(r"(\w+):\t(\S+)", output))
    namespaces = dict(re.findall(r"(\w+)=\w+:\[(\d+)\]", output))
    report = next(e for e in acme.events(conversation) if e["type"] == "run.started")["data"]["sandbox_report"]
    layers = report["layers"]
    for layer, name in {"user": "user", "mount": "mnt", "pid": "pid", "net": "net", "ipc": "ipc", "uts": "uts"}.items():
        assert layers[layer] is (namespaces[name] != namespace_inode(name)) is True, layer
    assert layers["no_new_privs"] and status["NoNewPrivs"] == "1"
    assert layers["capabilities"] and all(
        int(status[name], 16) == 0 for name in ("CapPrm", "CapEff", "CapBnd", "CapAmb")
    )
    assert layers["seccomp"] and status["Seccomp"] == str(report["seccomp"]["mode"]) == "2"
    assert status["Seccomp_filters"] == str(report["seccomp"]["filters"])
    assert "unshare failed: Operation not permitted" in output
    assert report["seccomp"]["unix_sockets"] is False and "PermissionError" in output and "inet-ok" in output
    for call in ("ptrace", "keyctl", "mount"):
        assert f"{call} -1 Operation not permitted" in output
    assert layers["read_only_system"] and "touch=1" in output
    assert report["network_interfaces"] == ["lo"] and "\nlo \n" in output
    assert report["egress"] == ("none" if "proxy=none" in output else "proxy")
    limits = report["limits"]
    assert f"pids={limits['max_processes']} memory={limits['memory_bytes']}" in output
    quota, period = (int(v) for v in re.findall(r"quota=(\d+) period=(\d+)", output)[0])
    assert limits["cpus"] == settings.SANDBOX_CPUS == quota / period
    assert layers["pids"] and layers["memory"] and layers["cpu"]
    # The Bash tool's commands run in the tools' cgroup, whose limit leaves room for the CLI.
    tools = settings.SANDBOX_MAX_PROCESSES - CLI_PROCESS_HEADROOM
    assert limits["tools_max_processes"] == tools and f"tools={tools} in-tools=1" in output
    assert f"uid={report['uid']}" in output and report["uid"] != 0 and report["host_root_unmapped"]
    assert report["missing_layers"] == [] and set(report["required_layers"]) == set(settings.SANDBOX_REQUIRED_LAYERS)


def test_no_host_path_reaches_the_model_and_the_session_still_resumes(acme: Client, guarded: Platform) -> None:
    run_root = guarded.env["RUN_ROOT"]
    conversation = acme.create_conversation()

    first = tool_output(run_bash_or_say(acme, f"[[seen {run_root}]]", conversation))
    neutral = tool_output(run_bash_or_say(acme, "[[seen /home/agent/.claude]]", conversation))
    resumed = tool_output(run_bash_or_say(acme, "[[seen claude-resume]]", conversation))
    shell = tool_output(
        run_bash_or_say(acme, "[[bash env; echo $CLAUDE_CONFIG_DIR; ls /home/agent/.claude]]", conversation)
    )
    recalled = tool_output(run_bash_or_say(acme, "[[recall]]", conversation))

    assert first == "seen: system=0 messages=0 tools=0"
    assert neutral != "seen: system=0 messages=0 tools=0"  # what the CLI names instead: the neutral path
    assert resumed == "seen: system=0 messages=0 tools=0"  # nor the SDK's temporary dir of a resumed session
    assert run_root not in shell and "CLAUDE_CONFIG_DIR=/home/agent/.claude" in shell and "projects" in shell
    assert recalled.startswith("Earlier turns: 1) [[seen") and "5)" not in recalled and "4) [[bash env" in recalled


def test_a_disk_filler_ends_its_run_with_workspace_limit(acme: Client) -> None:
    conversation = acme.create_conversation()

    terminal = run_bash(
        acme,
        "for i in $(seq 1 40); do head -c 10000000 /dev/zero > fill$i; sleep 0.05; done; echo filled",
        conversation,
    )

    assert terminal["type"] == "run.failed", terminal
    assert terminal["data"]["error"]["reason"] == "workspace_limit"
    assert Run.objects.get(pk=terminal["run_id"]).status == Run.Status.FAILED


def test_production_settings_refuse_the_unsandboxed_runner() -> None:
    env = {"DEBUG": "0", "SECRET_KEY": "x" * 60, "SANDBOX_RUNNER": "unsandboxed", "PATH": "/usr/bin:/bin"}

    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert check.returncode != 0
    assert "SANDBOX_RUNNER=unsandboxed is refused when DEBUG is off" in check.stderr


def test_production_settings_refuse_to_start_a_run_without_bubblewrap(
    platform: Platform, transactional_db: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    production = Platform(
        database_url(connection.settings_dict),
        settings.REDIS_URL,
        tmp_path_factory.mktemp("production"),
        DEBUG="0",
        SECRET_KEY=f"production-{CANARY}",
        SANDBOX_BWRAP="/nonexistent/bwrap",
    )
    tenant = Tenant.objects.create(id="prod", name="Prod", default_model=ensure_offline_model())
    client = Client(production.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])
    try:
        production.start_web()
        production.start_worker()

        terminal = run_bash(client, "echo should-not-run")
    finally:
        production.stop()

    assert terminal["type"] == "run.failed"
    assert terminal["data"]["error"]["reason"] == "sandbox_unavailable"
    assert "bubblewrap" in terminal["data"]["error"]["message"]


def test_a_run_whose_sandbox_lacks_a_required_layer_is_refused_before_its_cli_starts(
    platform: Platform, transactional_db: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # An operator who requires a CPU limit on a worker that gives none (SANDBOX_CPUS=0: no cpu cgroup).
    required = ",".join([*settings.SANDBOX_REQUIRED_LAYERS, "cpu"])
    strict = Platform(
        database_url(connection.settings_dict),
        settings.REDIS_URL,
        tmp_path_factory.mktemp("strict"),
        SANDBOX_CPUS="0",
        SANDBOX_REQUIRED_LAYERS=required,
    )
    tenant = Tenant.objects.create(id="strict", name="Strict", default_model=ensure_offline_model())
    client = Client(strict.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])
    try:
        strict.start_web()
        strict.start_worker()
        conversation = client.create_conversation()

        terminal = run_bash(client, "touch /workspace/ran", conversation)
        events = client.events(conversation)
    finally:
        strict.stop()

    assert terminal["type"] == "run.failed", terminal
    error = terminal["data"]["error"]
    assert error["reason"] == "sandbox_unavailable"
    assert "lacks required layer(s): cpu." in error["message"]
    assert error["sandbox_report"]["missing_layers"] == ["cpu"] and error["sandbox_report"]["layers"]["cpu"] is False
    # Nothing of the CLI: no session, no model call, no tool.
    assert [event["type"] for event in events] == ["run.queued", "run.failed"]


def test_an_unknown_required_layer_is_refused_at_startup() -> None:
    env = {"DEBUG": "1", "SANDBOX_REQUIRED_LAYERS": "user,seccomp,selinux", "PATH": "/usr/bin:/bin"}

    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert check.returncode != 0
    assert "SANDBOX_REQUIRED_LAYERS names unknown layer(s) selinux" in check.stderr
