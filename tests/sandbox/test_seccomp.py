"""The seccomp filters: read by a small BPF interpreter for both architectures, and loaded for real in a
child process of this (x86_64 or aarch64) machine."""

import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import seccomp
from sandbox.seccomp import AUDIT_ARCH_AARCH64, AUDIT_ARCH_X86_64, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS

INIT = Path(__file__).resolve().parents[2] / "sandbox" / "bin" / "sandbox-init"
EPERM, ENOSYS = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS


def run_filter(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """What `program` answers for one syscall: a classic-BPF interpreter for the instructions it uses."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    instructions = [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        code, true, false, k = instructions[pc]
        if code == seccomp.LD_W_ABS:
            accumulator = struct.unpack_from("<I", data, k)[0]
        elif code == seccomp.RET_K:
            return k
        else:
            taken = {
                seccomp.JEQ_K: accumulator == k,
                seccomp.JGE_K: accumulator >= k,
                seccomp.JSET_K: bool(accumulator & k),
            }[code]
            pc += true if taken else false
        pc += 1


@pytest.mark.parametrize(("arch", "index"), [(AUDIT_ARCH_X86_64, 0), (AUDIT_ARCH_AARCH64, 1)])
def test_the_base_filter_refuses_escapes_and_lets_ordinary_calls_through(arch: int, index: int) -> None:
    base = seccomp.BASE

    for name, numbers in seccomp.DENIED.items():
        assert run_filter(base, arch, numbers[index]) == EPERM, name
    for numbers in seccomp.NAMESPACING.values():
        assert run_filter(base, arch, numbers[index], seccomp.CLONE_NEWUSER | 0x11) == EPERM
        assert run_filter(base, arch, numbers[index], 0x40000000) == RET_ALLOW  # CLONE_NEWNET: bwrap's own business
    assert run_filter(base, arch, seccomp.CLONE3[index]) == ENOSYS  # libc falls back to clone, which is checked
    assert run_filter(base, arch, seccomp.SOCKET[index], seccomp.AF_UNIX) == RET_ALLOW  # the bridges need it
    for ordinary in (0, 1, 2, 3, 59, 57, 61):
        assert run_filter(base, arch, ordinary) == RET_ALLOW


def test_the_second_filter_refuses_unix_sockets_only() -> None:
    for arch, index in [(AUDIT_ARCH_X86_64, 0), (AUDIT_ARCH_AARCH64, 1)]:
        socket = seccomp.SOCKET[index]
        assert run_filter(seccomp.UNIX_SOCKETS, arch, socket, seccomp.AF_UNIX) == EPERM
        assert run_filter(seccomp.UNIX_SOCKETS, arch, socket, 2) == RET_ALLOW  # AF_INET: to the bridges on loopback
        assert run_filter(seccomp.UNIX_SOCKETS, arch, seccomp.DENIED["ptrace"][index]) == RET_ALLOW  # the base's job


def test_other_architectures_and_x32_calls_are_killed() -> None:
    for program in (seccomp.BASE, seccomp.UNIX_SOCKETS):
        assert run_filter(program, 0x40000003, 0) == RET_KILL_PROCESS  # i386
        assert run_filter(program, AUDIT_ARCH_X86_64, seccomp.X32_SYSCALL_BIT | 0) == RET_KILL_PROCESS


PROBE = """
import ctypes, errno, json, os, socket, subprocess, sys, importlib.machinery, importlib.util
loader = importlib.machinery.SourceFileLoader("sandbox_init", sys.argv[1])
spec = importlib.util.spec_from_loader("sandbox_init", loader)
init = importlib.util.module_from_spec(spec)
loader.exec_module(init)
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # no_new_privs, as bubblewrap sets it
for path in sys.argv[2:]:
    init.install_filter(open(path, "rb").read())
numbers = {"x86_64": dict(keyctl=250, bpf=321, perf_event_open=298, ptrace=101, mount=165, clone3=435, unshare=272,
                          io_uring_setup=425),
           "aarch64": dict(keyctl=219, bpf=280, perf_event_open=241, ptrace=117, mount=40, clone3=435, unshare=97,
                           io_uring_setup=425)}
found = {}
for name, number in numbers[os.uname().machine].items():
    ctypes.set_errno(0)
    arg = 0x10000000 if name == "unshare" else 0
    found[name] = errno.errorcode.get(ctypes.get_errno()) if libc.syscall(number, arg, 0, 0, 0, 0) == -1 else "ok"
try:
    socket.socket(socket.AF_UNIX).close()
    found["unix"] = "ok"
except OSError as exc:
    found["unix"] = errno.errorcode[exc.errno]
socket.socket(socket.AF_INET).close()
found["run"] = subprocess.run(["/bin/sh", "-c", "echo child"], capture_output=True, text=True).stdout.strip()
print(json.dumps(found))
"""


def probe_under(*filters: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(INIT), *map(str, filters)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="the filters know these two")
def test_the_filters_loaded_in_a_process_refuse_with_eperm_and_leave_the_rest(tmp_path: Path) -> None:
    base, unix = seccomp.write_filters(tmp_path)

    found = probe_under(base)
    stacked = probe_under(base, unix)

    for name in ("keyctl", "bpf", "perf_event_open", "ptrace", "mount", "unshare", "io_uring_setup"):
        assert found[name] == "EPERM", name
    assert found["clone3"] == "ENOSYS"
    assert found["unix"] == "ok" and stacked["unix"] == "EPERM"
    assert found["run"] == stacked["run"] == "child"  # processes start (libc's clone3 falls back to clone)
