"""Tool patterns and the policy a profile sets: what each pattern lets through, what it refuses, and why
a pattern that cannot be understood is refused before it is stored."""

from typing import Any

import pytest

from agents.rules import PatternError, ToolPattern, ToolPolicy, parse_rules


def policy(
    allowed: list[str] | None = None,
    disallowed: list[str] | None = None,
    rules: list[dict[str, str]] | None = None,
    mcp_tools: dict[str, list[str]] | None = None,
) -> ToolPolicy:
    return ToolPolicy.of("support", allowed or [], disallowed or [], rules or [], mcp_tools)


def bash(command: str) -> tuple[str, dict[str, Any]]:
    return "Bash", {"command": command}


def refused(rules: ToolPolicy, call: tuple[str, dict[str, Any]]) -> bool:
    return rules.refusal(*call) is not None


# --- Bash ---------------------------------------------------------------------------------------------


def test_an_allowed_bash_pattern_lets_its_commands_through() -> None:
    git_only = policy(allowed=["Bash(git *)"])

    assert not refused(git_only, bash("git status"))
    assert not refused(git_only, bash("git log --oneline -n 5"))


def test_an_allowed_bash_pattern_refuses_a_neighbour_and_says_what_is_allowed() -> None:
    git_only = policy(allowed=["Bash(git *)"])

    refusal = git_only.refusal(*bash("gitk --all"))

    assert refusal == "The agent profile 'support' allows only these tools: Bash(git *)."


@pytest.mark.parametrize(
    "command",
    [
        "git status && rm -rf /",
        "git status; rm -rf /",
        "git status || rm -rf /",
        "git status | sh",
        "git status & rm -rf /",
        "git status\nrm -rf /",
        "git log $(rm -rf /)",
        "git log `rm -rf /`",
        "git status; (rm -rf /)",
    ],
)
def test_an_allowed_bash_pattern_refuses_a_compound_command_with_another_part(command: str) -> None:
    assert refused(policy(allowed=["Bash(git *)"]), bash(command))


@pytest.mark.parametrize(
    "rules",
    [
        {"disallowed": ["Bash(rm *)"]},
        {"rules": [{"pattern": "Bash(rm *)", "action": "deny"}]},
    ],
    ids=["disallowed tool", "deny rule"],
)
def test_a_denied_bash_pattern_refuses_a_compound_command_with_any_part_matching(rules: dict[str, Any]) -> None:
    denying = policy(allowed=["Bash"], **rules)

    assert refused(denying, bash("git status && rm -rf /"))
    assert refused(denying, bash("rm -rf /"))
    assert refused(denying, bash("(rm -rf /)"))
    assert refused(denying, bash("echo $(rm -rf /)"))
    assert not refused(denying, bash("git status && ls"))


def test_a_deny_rule_names_its_pattern_to_the_model() -> None:
    denying = policy(rules=[{"pattern": "Bash(rm *)", "action": "deny"}])

    assert denying.refusal(*bash("rm -rf build")) == "The agent profile 'support' denies this call (Bash(rm *))."


def test_a_colon_star_suffix_means_the_same_as_a_star() -> None:
    assert not refused(policy(allowed=["Bash(npm run:*)"]), bash("npm run test"))


# --- Paths ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("Read(src/**)", "/workspace/src/app/main.py", True),
        ("Read(src/**)", "src/app/main.py", True),  # a relative path is under /workspace too
        ("Read(src/**)", "/workspace/tests/test_main.py", False),
        ("Read(./src/**)", "/workspace/src/main.py", True),
        ("Read(**/secret.txt)", "/workspace/secret.txt", True),
        ("Read(**/secret.txt)", "/workspace/a/b/secret.txt", True),
        ("Read(**/secret.txt)", "/workspace/a/not-secret.txt", False),
        ("Write(/workspace/*.md)", "/workspace/README.md", True),
        ("Write(/workspace/*.md)", "/workspace/docs/README.md", False),  # * stays within one directory
        ("Edit(/etc/**)", "/etc/passwd", True),
        ("Edit(/etc/**)", "/workspace/etc/passwd", False),
        ("Read(/workspace//data/*.csv)", "/workspace/data/a.csv", False),  # the pattern is taken as written
        ("Read(data/?.csv)", "/workspace/data/a.csv", True),
        ("Read(data/?.csv)", "/workspace/data/ab.csv", False),
    ],
)
def test_path_patterns_match_the_files_they_say(pattern: str, path: str, matches: bool) -> None:
    tool = pattern.split("(")[0]
    key = "file_path"

    assert ToolPattern.parse(pattern).matches(tool, {key: path}, every_part=True) is matches


def test_a_path_pattern_normalises_doubled_slashes_in_the_path() -> None:
    assert ToolPattern.parse("Read(data/*.csv)").matches(
        "Read", {"file_path": "/workspace//data/a.csv"}, every_part=True
    )


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("Read(src/**)", "/workspace/src/../.env", False),
        ("Read(src/**)", "src/../../etc/passwd", False),
        ("Read(/etc/**)", "/workspace/../etc/passwd", True),
        ("Read(.env)", "/workspace/./src/../.env", True),
    ],
)
def test_a_path_is_resolved_before_it_is_matched(pattern: str, path: str, matches: bool) -> None:
    assert ToolPattern.parse(pattern).matches("Read", {"file_path": path}, every_part=True) is matches


def test_a_denied_folder_refuses_a_search_of_the_folder_itself() -> None:
    rules = policy(disallowed=["Grep(secrets/**)", "Read(/workspace/secrets/**)"])

    assert refused(rules, ("Grep", {"pattern": "password", "path": "/workspace/secrets"}))
    assert refused(rules, ("Read", {"file_path": "/workspace/docs/../secrets/key.pem"}))
    assert not refused(rules, ("Grep", {"pattern": "password", "path": "/workspace/secrets-public"}))


def test_a_search_without_a_path_searches_the_workspace() -> None:
    assert ToolPattern.parse("Grep(/workspace/**)").matches("Grep", {"pattern": "TODO"}, every_part=True)
    assert not ToolPattern.parse("Grep(src/**)").matches("Grep", {"pattern": "TODO"}, every_part=True)


# --- WebFetch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "url", "matches"),
    [
        ("WebFetch(domain:example.com)", "https://example.com/docs", True),
        ("WebFetch(domain:example.com)", "https://EXAMPLE.com/docs", True),
        ("WebFetch(domain:example.com)", "https://api.example.com/docs", False),
        ("WebFetch(domain:example.com)", "https://example.com.evil.net/", False),
        ("WebFetch(domain:*.example.com)", "https://api.example.com/v1", True),
        ("WebFetch(domain:*.example.com)", "https://a.b.example.com/v1", True),
        ("WebFetch(domain:*.example.com)", "https://example.com/", False),
        ("WebFetch(domain:*.example.com)", "https://evilexample.com/", False),
        ("WebFetch(domain:example.com)", "not a url", False),
    ],
)
def test_webfetch_patterns_match_the_host_of_the_url(pattern: str, url: str, matches: bool) -> None:
    assert ToolPattern.parse(pattern).matches("WebFetch", {"url": url}, every_part=True) is matches


# --- MCP ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "tool", "matches"),
    [
        ("mcp__github", "mcp__github__create_issue", True),
        ("mcp__github", "mcp__github__list_repos", True),
        ("mcp__github", "mcp__gitlab__create_issue", False),
        ("mcp__github__*", "mcp__github__create_issue", True),
        ("mcp__github__create_issue", "mcp__github__create_issue", True),
        ("mcp__github__create_issue", "mcp__github__delete_repo", False),
        ("mcp__github__create_*", "mcp__github__create_pull_request", True),
        ("mcp__github", "Bash", False),
    ],
)
def test_mcp_patterns_match_a_server_or_one_of_its_tools(pattern: str, tool: str, matches: bool) -> None:
    assert ToolPattern.parse(pattern).matches(tool, {}, every_part=True) is matches


def test_an_mcp_servers_own_allow_list_refuses_its_other_tools() -> None:
    rules = policy(mcp_tools={"github": ["list_issues"]})

    assert not refused(rules, ("mcp__github__list_issues", {}))
    assert rules.refusal("mcp__github__delete_repo", {}) == "MCP server 'github' allows only these tools: list_issues."
    assert not refused(rules, ("mcp__docs__search", {}))  # a server without a list allows all its tools


# --- Names: skills, subagents, searches ---------------------------------------------------------------------


def test_a_task_pattern_names_the_subagent_whichever_tool_name_the_cli_uses() -> None:
    reviewer = ToolPattern.parse("Task(reviewer)")

    assert reviewer.matches("Task", {"subagent_type": "reviewer"}, every_part=True)
    assert reviewer.matches("Agent", {"subagent_type": "reviewer"}, every_part=True)
    assert not reviewer.matches("Task", {"subagent_type": "deployer"}, every_part=True)


def test_a_skill_pattern_matches_the_skill_by_name() -> None:
    assert ToolPattern.parse("Skill(pdf-*)").matches("Skill", {"skill": "pdf-tools"}, every_part=True)
    assert not ToolPattern.parse("Skill(pdf-*)").matches("Skill", {"skill": "csv-report"}, every_part=True)


# --- The order of decisions ----------------------------------------------------------------------------------


def test_a_disallowed_tool_wins_over_an_allowed_one() -> None:
    rules = policy(allowed=["Bash", "Read"], disallowed=["Bash"])

    assert rules.refusal(*bash("ls")) == "The agent profile 'support' does not allow this call (Bash)."
    assert not refused(rules, ("Read", {"file_path": "/workspace/a"}))


def test_deny_wins_over_ask_and_ask_over_allow() -> None:
    rules = policy(
        rules=[
            {"pattern": "Bash(git *)", "action": "allow"},
            {"pattern": "Bash(git push *)", "action": "ask"},
            {"pattern": "Bash(git push --force*)", "action": "deny"},
        ]
    )

    assert rules.verdict(*bash("git status")).action == "allow"
    asked = rules.verdict(*bash("git push origin main"))
    assert (asked.action, asked.reason) == (
        "ask",
        "The agent profile 'support' asks a person first (Bash(git push *)).",
    )
    assert not refused(rules, bash("git push origin main"))  # a person decides: not a refusal
    assert "denies this call" in str(rules.refusal(*bash("git push --force origin main")))
    assert rules.ask_patterns == ["Bash(git push *)"]


def test_an_empty_policy_allows_every_tool() -> None:
    assert not refused(policy(), bash("rm -rf /tmp/x"))
    assert not refused(policy(), ("WebFetch", {"url": "https://example.com"}))


def test_the_platforms_own_tools_pass_any_allow_list() -> None:
    read_only = policy(allowed=["Read"])

    assert not refused(read_only, ("StructuredOutput", {"total": 3}))
    assert not refused(read_only, ("ToolSearch", {"query": "github"}))
    assert refused(read_only, ("Write", {"file_path": "/workspace/a"}))


# --- Patterns that cannot be understood ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Shell", "Unknown tool 'Shell' in 'Shell'. Tools: Agent, AskUserQuestion, Bash,"),
        ("bash(git *)", "Unknown tool 'bash'"),
        ("Bash(git *", "must read Tool or Tool(specifier), such as Bash(git *)"),
        ("Bash git", "must read Tool or Tool(specifier)"),
        ("Read()", "Empty specifier in 'Read()': write 'Read' for every call of Read."),
        ("ListAgents(x)", "ListAgents takes no specifier: write 'ListAgents' alone."),
        ("WebFetch(example.com)", "WebFetch patterns name a host: WebFetch(domain:example.com)"),
        ("mcp__", "must read mcp__<server> or mcp__<server>__<tool>"),
        ("mcp__git hub", "must read mcp__<server> or mcp__<server>__<tool>"),
        ("", "must be a non-empty string"),
        ("Bash(" + "x" * 600 + ")", "is longer than 500 characters"),
    ],
)
def test_a_pattern_that_cannot_be_understood_is_refused_saying_what_to_write(text: str, message: str) -> None:
    with pytest.raises(PatternError) as refusal:
        ToolPattern.parse(text)

    assert message in str(refusal.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"pattern": "Bash(rm *)", "action": "maybe"}, "Rule 1: action must be one of allow, ask, deny, not 'maybe'."),
        ({"pattern": "Bash(rm *)"}, 'Rule 1 must be {"pattern": "Bash(git *)", "action": "allow"}.'),
        ({"pattern": "Bash(rm *)", "action": "deny", "why": "x"}, "Rule 1 must be"),
        ({"pattern": "Remove", "action": "deny"}, "Unknown tool 'Remove'"),
    ],
)
def test_a_rule_that_cannot_be_understood_is_refused_saying_what_to_write(rule: Any, message: str) -> None:
    with pytest.raises(PatternError) as refusal:
        parse_rules([rule])

    assert message in str(refusal.value)
