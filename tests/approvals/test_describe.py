"""What a person deciding reads of a call: its purpose in the title, what it acts on in the description."""

import pytest

from approvals.services import describe


@pytest.mark.parametrize(
    ("tool", "tool_input", "title", "description"),
    [
        (
            "Bash",
            {"command": "git push origin main", "description": "Publish the branch"},
            "The agent wants to use Bash: Publish the branch",
            "git push origin main",
        ),
        ("Bash", {"command": "ls"}, "The agent wants to use Bash: ls", "ls"),
        (
            "Write",
            {"file_path": "/workspace/a.txt", "content": "x"},
            "The agent wants to use Write: /workspace/a.txt",
            "/workspace/a.txt",
        ),
        (
            "WebFetch",
            {"url": "https://example.com", "prompt": "read"},
            "The agent wants to use WebFetch: https://example.com",
            "https://example.com",
        ),
        ("mcp__crm__lookup", {"id": 7}, "The agent wants to use mcp__crm__lookup", ""),
    ],
)
def test_a_calls_title_says_its_purpose_and_its_description_what_it_acts_on(
    tool: str, tool_input: dict[str, object], title: str, description: str
) -> None:
    assert describe(tool, tool_input) == (title, description)


def test_a_long_title_is_cut_with_an_ellipsis() -> None:
    title, _ = describe("Bash", {"command": "echo " + "x" * 1000})

    assert len(title) == 500 and title.endswith("…")
