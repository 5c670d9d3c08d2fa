"""The sandbox's seccomp filters, as classic BPF programs the kernel loads (bubblewrap's `--seccomp FD`).

Written here rather than built with libseccomp: the programs are short, fixed and the same on every
host, and the in-sandbox init (sandbox/bin/sandbox-init) loads the second one with one `prctl` call,
without a library inside the sandbox. Like Anthropic's sandbox-runtime, they refuse (EPERM) what a
sandboxed agent has no use for and what kernel exploits and escapes start from:

- `base` (the whole sandbox, the socat bridges included): new user namespaces (`unshare`/`clone` with
  CLONE_NEWUSER; `clone3`, whose flags sit in memory a filter cannot read, answers ENOSYS so that libc
  falls back to `clone`), `ptrace` and `process_vm_readv/writev`, mounts (old and new API), `keyctl`
  and its siblings, `bpf`, `perf_event_open`, `kexec_*`, kernel modules, `open_by_handle_at`,
  `setns`, `io_uring_*` (its operations bypass seccomp, the Unix socket rule included) and `userfaultfd`;
- `unix_sockets` (stacked on `base` by the init just before it starts the CLI, so only the bridges,
  which connect to the run's gateway socket, may): `socket(AF_UNIX, …)`.

Both handle x86_64 and aarch64 and kill the process on any other architecture (a 32-bit or x32
syscall table would get round a filter written for the 64-bit numbers).
"""

import errno
import struct
from collections.abc import Iterable
from pathlib import Path

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little-endian on both).
NR_OFFSET, ARCH_OFFSET, ARG0_LOW_OFFSET = 0, 4, 16

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06

CLONE_NEWUSER = 0x10000000
AF_UNIX = 1

# Denied outright (EPERM): name → (x86_64 number, aarch64 number).
DENIED: dict[str, tuple[int, int]] = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "open_by_handle_at": (304, 265),
    "setns": (308, 268),
    # io_uring runs operations (sockets among them) that no seccomp filter sees; Docker's default profile
    # refuses it too. userfaultfd is a staple of kernel exploits and of little use to tools.
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "userfaultfd": (323, 282),
}
# Denied when arg0 has CLONE_NEWUSER.
NAMESPACING: dict[str, tuple[int, int]] = {"clone": (56, 220), "unshare": (272, 97)}
CLONE3 = (435, 435)
SOCKET = (41, 198)
ARCHES = ((AUDIT_ARCH_X86_64, 0), (AUDIT_ARCH_AARCH64, 1))

Instruction = tuple[int, int | str, int | str, int]  # code, jump-if-true, jump-if-false (labels or 0), k


def _assemble(program: list[Instruction | str]) -> bytes:
    """sock_filter bytes of `program`, whose strings are labels and whose jumps may name them."""
    labels, position = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1
    out, position = [], 0
    for item in program:
        if isinstance(item, str):
            continue
        code, true, false, k = item
        offsets = [labels[target] - position - 1 if isinstance(target, str) else target for target in (true, false)]
        if not all(0 <= offset <= 255 for offset in offsets):
            raise ValueError(f"BPF jump out of range at {position}")
        out.append(struct.pack("<HBBI", code, offsets[0], offsets[1], k))
        position += 1
    return b"".join(out)


def _program(arch_rules: Iterable[tuple[int, int, list[Instruction | str]]]) -> bytes:
    """Dispatch on the architecture to each one's rules; any other architecture is killed."""
    program: list[Instruction | str] = [(LD_W_ABS, 0, 0, ARCH_OFFSET)]
    rules = list(arch_rules)
    for arch, _, _ in rules:
        program.append((JEQ_K, f"arch-{arch:x}", 0, arch))
    program.append((RET_K, 0, 0, RET_KILL_PROCESS))
    for arch, _, body in rules:
        program.append(f"arch-{arch:x}")
        program.extend(body)
    program += [
        "allow",
        (RET_K, 0, 0, RET_ALLOW),
        "eperm",
        (RET_K, 0, 0, RET_ERRNO | errno.EPERM),
        "enosys",
        (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
        "kill",
        (RET_K, 0, 0, RET_KILL_PROCESS),
    ]
    return _assemble(program)


def _base_rules(arch: int, index: int) -> list[Instruction | str]:
    body: list[Instruction | str] = [(LD_W_ABS, 0, 0, NR_OFFSET)]
    if arch == AUDIT_ARCH_X86_64:
        body.append((JGE_K, "kill", 0, X32_SYSCALL_BIT))
    for numbers in NAMESPACING.values():
        body.append((JEQ_K, f"newuser-{arch:x}", 0, numbers[index]))
    body.append((JEQ_K, "enosys", 0, CLONE3[index]))
    for numbers in DENIED.values():
        body.append((JEQ_K, "eperm", 0, numbers[index]))
    body += [
        (RET_K, 0, 0, RET_ALLOW),
        f"newuser-{arch:x}",
        (LD_W_ABS, 0, 0, ARG0_LOW_OFFSET),
        (JSET_K, "eperm", "allow", CLONE_NEWUSER),
    ]
    return body


def _unix_socket_rules(arch: int, index: int) -> list[Instruction | str]:
    body: list[Instruction | str] = [(LD_W_ABS, 0, 0, NR_OFFSET)]
    if arch == AUDIT_ARCH_X86_64:
        body.append((JGE_K, "kill", 0, X32_SYSCALL_BIT))
    return [
        *body,
        (JEQ_K, 0, "allow", SOCKET[index]),
        (LD_W_ABS, 0, 0, ARG0_LOW_OFFSET),
        (JEQ_K, "eperm", "allow", AF_UNIX),
    ]


def base_filter() -> bytes:
    """The filter of the whole sandbox (bubblewrap's `--seccomp`)."""
    return _program((arch, index, _base_rules(arch, index)) for arch, index in ARCHES)


def unix_socket_filter() -> bytes:
    """The filter stacked for the CLI and its tools: no `socket(AF_UNIX, …)`."""
    return _program((arch, index, _unix_socket_rules(arch, index)) for arch, index in ARCHES)


def write_filters(directory: Path) -> tuple[Path, Path]:
    """Both filters as files in `directory` (readable by the sandbox user): (base, unix_sockets)."""
    paths = directory / "base.bpf", directory / "unix.bpf"
    for path, program in zip(paths, (BASE, UNIX_SOCKETS), strict=True):
        path.write_bytes(program)
        path.chmod(0o644)
    return paths


BASE = base_filter()
UNIX_SOCKETS = unix_socket_filter()
