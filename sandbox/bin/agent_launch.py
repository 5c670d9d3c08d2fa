"""Starts the Claude Code CLI for one run: the only way the platform launches it.

Run as `python -I -S agent_launch.py <cli args>` (stdlib only, no Django: it must start in
milliseconds). The Agent SDK passes our whole process environment to its CLI, so this program
throws that away and keeps only what the run's launch spec names, plus the few variables the SDK
itself sets for its CLI. The CLI dies with the process that started it.
"""

import ctypes
import json
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
SDK_VARIABLES = ("CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING")
SDK_PREFIXES = ("CLAUDE_AGENT_SDK_", "CLAUDE_CODE_SDK_")


def main() -> None:
    spec = json.loads(os.environ["AGENT_LAUNCH_SPEC"])
    env = {
        name: value
        for name, value in os.environ.items()
        if name in SDK_VARIABLES or name.startswith(SDK_PREFIXES)
    }
    env.update(spec["env"])
    # If the worker dies (even by SIGKILL), the kernel kills the CLI instead of leaving it calling
    # the model with nobody listening.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        sys.exit("agent_launch: the worker exited before the CLI started")
    os.execve(spec["cli"], [spec["cli"], *sys.argv[1:]], env)  # noqa: S606 - replacing this process is the point


if __name__ == "__main__":
    main()
