"""Tool patterns and the policy a profile sets on tool calls: parsed once, matched on every call.

A pattern is a tool name (`Bash`, `WebFetch`, `mcp__github`, `mcp__github__create_issue`) or a tool
name with a specifier in parentheses, matched against the call's input:

- `Bash(git *)`: the command, `*` matching anything. A compound command (`git status && rm -rf x`,
  `(…)`, `$(…)`, backticks) is split at its shell operators: every part must match for an allow, any part
  matching denies. Quotes are not parsed: a `;` or `(` inside quotes splits too (stricter, never looser).
- `Read(src/**)`, `Write(/workspace/*.md)`, `Edit(…)`, `NotebookEdit(…)`, `Glob(…)`, `Grep(…)`: the path, with
  `*` within one directory and `**` across directories (`src/**` is the folder itself too); a relative
  pattern is under /workspace, and the path's `..` are resolved before it is matched.
- `WebFetch(domain:example.com)`: the URL's host, `*.example.com` for its subdomains.
- `Skill(name)`, `Task(name)` (a subagent), `WebSearch(text *)`: the name or query, `*` matching anything.
- `mcp__server__*` or `mcp__server`: every tool of that MCP server.
"""

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The CLI's built-in tools (Claude Code 2.1.327 in SDK mode, measured: its `init` message calls the subagent
# tool `Task`, its requests `Agent`; Glob and Grep appear only without Bash; AskUserQuestion comes with approvals).
BUILTIN_TOOLS = frozenset(
    {
        "Agent",
        "AskUserQuestion",
        "Bash",
        "CronCreate",
        "CronDelete",
        "CronList",
        "Edit",
        "EnterWorktree",
        "ExitWorktree",
        "Glob",
        "Grep",
        "ListAgents",
        "Monitor",
        "NotebookEdit",
        "Read",
        "ReportFindings",
        "ScheduleWakeup",
        "SendMessage",
        "Skill",
        "Task",
        "TaskStop",
        "ToolSearch",
        "WebFetch",
        "WebSearch",
        "Workflow",
        "Write",
    }
)
# Tools no run is offered, whatever its profile: they schedule turns (a cron, a wake-up) that would run
# after the run has ended, outside its sandbox, budget and event log.
PLATFORM_DISALLOWED = ("CronCreate", "CronDelete", "CronList", "ScheduleWakeup")
# What a profile cannot take away, because the platform needs it: finding deferred MCP tools, and
# delivering a structured answer.
ALWAYS_ALLOWED = frozenset({"ToolSearch", "StructuredOutput"})

# The input field each tool's specifier is matched against, and how.
_PATH_TOOLS = {"Read": "file_path", "Write": "file_path", "Edit": "file_path", "NotebookEdit": "notebook_path"}
_SEARCH_TOOLS = {"Glob": "path", "Grep": "path"}
_NAME_TOOLS = {"Skill": "skill", "Task": "subagent_type", "Agent": "subagent_type", "WebSearch": "query"}
_SPECIFIED = {"Bash", "WebFetch", *_PATH_TOOLS, *_SEARCH_TOOLS, *_NAME_TOOLS}

_PATTERN = re.compile(r"^(?P<tool>[A-Za-z][A-Za-z0-9_-]*)(?:\((?P<spec>.*)\))?$", re.DOTALL)
_MCP = re.compile(r"^mcp__(?P<server>[A-Za-z0-9_-]+?)(?:__(?P<tool>[A-Za-z0-9_*.-]+))?$")
# Where one shell command ends and the next begins: a rule for `git *` must not pass `git x; rm -rf /`.
_SHELL_SEPARATORS = re.compile(r"&&|\|\||[;|&\n()]|`")
MAX_PATTERN_CHARS = 500
WORKSPACE = "/workspace"


class PatternError(ValueError):
    """A tool pattern that cannot be understood; the message says what to write instead."""


@dataclass(frozen=True)
class ToolPattern:
    text: str
    tool: str  # a built-in tool, or for MCP: "mcp__<server>"
    spec: str | None  # the specifier in parentheses; for MCP the tool name (or "*")

    @classmethod
    def parse(cls, text: str) -> "ToolPattern":
        if not isinstance(text, str) or not text.strip():
            raise PatternError("A tool pattern must be a non-empty string, such as Read or Bash(git *).")
        text = text.strip()
        if len(text) > MAX_PATTERN_CHARS:
            raise PatternError(f"Tool pattern {text[:40]!r}… is longer than {MAX_PATTERN_CHARS} characters.")
        if text.startswith("mcp__"):
            mcp = _MCP.match(text)
            if mcp is None:
                raise PatternError(f"MCP tool pattern {text!r} must read mcp__<server> or mcp__<server>__<tool>.")
            return cls(text, f"mcp__{mcp['server']}", mcp["tool"] or "*")
        found = _PATTERN.match(text)
        if found is None:
            raise PatternError(f"Tool pattern {text!r} must read Tool or Tool(specifier), such as Bash(git *).")
        tool, spec = found["tool"], found["spec"]
        if tool not in BUILTIN_TOOLS and tool not in ALWAYS_ALLOWED:
            raise PatternError(f"Unknown tool {tool!r} in {text!r}. Tools: {', '.join(sorted(BUILTIN_TOOLS))}.")
        if spec is not None:
            if tool not in _SPECIFIED:
                raise PatternError(f"{tool} takes no specifier: write {tool!r} alone.")
            if not spec.strip():
                raise PatternError(f"Empty specifier in {text!r}: write {tool!r} for every call of {tool}.")
            if tool == "WebFetch" and not spec.startswith("domain:"):
                raise PatternError(f"WebFetch patterns name a host: WebFetch(domain:example.com), not {text!r}.")
        return cls(text, tool, spec)

    def matches(self, tool: str, tool_input: Mapping[str, Any], *, every_part: bool) -> bool:
        """Whether a call of `tool` with `tool_input` matches. For a compound shell command, `every_part`
        asks that all its commands match (an allow) rather than any one (a deny)."""
        if self.tool.startswith("mcp__"):
            server, _, name = tool.partition("__")[2].partition("__")
            return f"mcp__{server}" == self.tool and self.spec is not None and fnmatch.fnmatchcase(name, self.spec)
        if tool != self.tool and not (self.tool in {"Task", "Agent"} and tool in {"Task", "Agent"}):
            return False
        if self.spec is None:
            return True
        if tool == "Bash":
            parts = [part.strip() for part in _SHELL_SEPARATORS.split(str(tool_input.get("command", "")))]
            parts = [part for part in parts if part] or [""]
            check = all if every_part else any
            return check(_glob(self.spec, part) for part in parts)
        if tool == "WebFetch":
            host = (urlsplit(str(tool_input.get("url", ""))).hostname or "").lower()
            domain = self.spec.removeprefix("domain:").lower()
            if domain.startswith("*."):
                return host.endswith(domain[1:])
            return host == domain
        if tool in _PATH_TOOLS or tool in _SEARCH_TOOLS:
            key = _PATH_TOOLS.get(tool) or _SEARCH_TOOLS[tool]
            return _path_matches(self.spec, str(tool_input.get(key) or WORKSPACE))
        return _glob(self.spec, str(tool_input.get(_NAME_TOOLS[tool], "")))


def _glob(pattern: str, text: str) -> bool:
    """`*` matches anything (spaces and slashes too); nothing else is special. `git:*` is `git*`."""
    pattern = pattern[:-2] + "*" if pattern.endswith(":*") else pattern
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _path_matches(pattern: str, path: str) -> bool:
    if not pattern.startswith("/"):
        pattern = f"{WORKSPACE}/{pattern.removeprefix('./')}"
    if not path.startswith("/"):
        path = f"{WORKSPACE}/{path}"
    # `..` would walk out of what a pattern names (`/workspace/src/../.env` under `src/**`).
    path = posixpath.normpath(re.sub(r"/+", "/", path))
    if pattern.endswith("/**") and _path_matches(pattern[:-3] or "/", path):
        return True  # `src/**` is the folder too: a search of the folder reads what is in it
    regex = ""
    for piece in re.split(r"(\*\*/?|\*|\?)", pattern):
        if piece in {"**", "**/"}:
            regex += "(?:.*/)?" if piece == "**/" else ".*"
        elif piece == "*":
            regex += "[^/]*"
        elif piece == "?":
            regex += "[^/]"
        else:
            regex += re.escape(piece)
    return re.fullmatch(regex, path) is not None


def parse_patterns(texts: Iterable[str]) -> list[ToolPattern]:
    return [ToolPattern.parse(text) for text in texts]


@dataclass(frozen=True)
class Rule:
    pattern: ToolPattern
    action: str  # allow | ask | deny


ACTIONS = ("allow", "ask", "deny")


def parse_rules(rules: Sequence[Mapping[str, Any]]) -> list[Rule]:
    parsed = []
    for number, rule in enumerate(rules, 1):
        if not isinstance(rule, Mapping) or set(rule) != {"pattern", "action"}:
            raise PatternError(f'Rule {number} must be {{"pattern": "Bash(git *)", "action": "allow"}}.')
        if rule["action"] not in ACTIONS:
            raise PatternError(f"Rule {number}: action must be one of {', '.join(ACTIONS)}, not {rule['action']!r}.")
        parsed.append(Rule(ToolPattern.parse(rule["pattern"]), rule["action"]))
    return parsed


@dataclass(frozen=True)
class Verdict:
    """A profile's decision on one call: `allow`, `deny` (with the refusal the model reads) or `ask` a person
    (with the rule that asks, shown to whoever decides)."""

    action: str
    reason: str = ""

    @property
    def asks(self) -> bool:
        return self.action == "ask"


ALLOW = Verdict("allow")


@dataclass(frozen=True)
class ToolPolicy:
    """A profile's decision on each tool call: None lets it through, a string is the refusal the model reads."""

    profile: str
    allowed: tuple[ToolPattern, ...] = ()
    disallowed: tuple[ToolPattern, ...] = ()
    rules: tuple[Rule, ...] = ()
    mcp_tools: Mapping[str, Sequence[str]] | None = None  # per MCP server, the tools it allows (empty: all)

    @classmethod
    def of(
        cls,
        profile: str,
        allowed: Sequence[str],
        disallowed: Sequence[str],
        rules: Sequence[Mapping[str, Any]],
        mcp_tools: Mapping[str, Sequence[str]] | None = None,
    ) -> "ToolPolicy":
        return cls(
            profile,
            tuple(parse_patterns(allowed)),
            tuple(parse_patterns(disallowed)),
            tuple(parse_rules(rules)),
            mcp_tools or {},
        )

    @property
    def ask_patterns(self) -> list[str]:
        return [rule.pattern.text for rule in self.rules if rule.action == "ask"]

    def refusal(self, tool: str, tool_input: Mapping[str, Any]) -> str | None:
        """Why the profile refuses the call, or None (an `ask` is not a refusal: a person decides)."""
        verdict = self.verdict(tool, tool_input)
        return verdict.reason if verdict.action == "deny" else None

    def verdict(self, tool: str, tool_input: Mapping[str, Any]) -> Verdict:
        if refusal := self._refusal(tool, tool_input):
            return Verdict("deny", refusal)
        # As in Claude Code: a deny rule (above) wins over an ask rule, which wins over an allow rule.
        for rule in self.rules:
            if rule.action == "ask" and rule.pattern.matches(tool, tool_input, every_part=False):
                return Verdict("ask", f"The agent profile {self.profile!r} asks a person first ({rule.pattern.text}).")
        return ALLOW

    def _refusal(self, tool: str, tool_input: Mapping[str, Any]) -> str | None:
        if tool in ALWAYS_ALLOWED:
            return None
        if tool in PLATFORM_DISALLOWED:
            return f"{tool} is not available here: a scheduled turn would run after this run has ended."
        for pattern in self.disallowed:
            if pattern.matches(tool, tool_input, every_part=False):
                return f"The agent profile {self.profile!r} does not allow this call ({pattern.text})."
        if self.allowed and not any(p.matches(tool, tool_input, every_part=True) for p in self.allowed):
            allowed = ", ".join(pattern.text for pattern in self.allowed)
            return f"The agent profile {self.profile!r} allows only these tools: {allowed}."
        for rule in self.rules:
            if rule.action == "deny" and rule.pattern.matches(tool, tool_input, every_part=False):
                return f"The agent profile {self.profile!r} denies this call ({rule.pattern.text})."
        if tool.startswith("mcp__") and self.mcp_tools:
            _, server, name = [*tool.split("__", 2), "", ""][:3]
            tools = self.mcp_tools.get(server)
            if tools and name not in tools:
                return f"MCP server {server!r} allows only these tools: {', '.join(tools)}."
        return None
