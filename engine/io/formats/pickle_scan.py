"""Bound a pickle's structure before the C unpickler builds any of it.

The C unpickler trusts the opcode stream in ways a hostile file can turn into a crash or an
out-of-memory kill, whatever `find_class` allows:
- a tuple nested a few million deep (one byte per level) used as a dict key makes `hash()` recurse in C
  until the process segfaults (no RecursionError: tuple hashing has no recursion check);
- a memo index of 2³¹ (`LONG_BINPUT`) makes it allocate and clear a memo array of 16 GiB;
- every opcode can create an object, so the opcode count bounds the objects (and memory) unpickling makes.
`check_pickle` walks the opcodes (pickletools.genops, which builds nothing) on an abstract stack of
nesting depths and refuses a stream past these bounds. Immutable containers (tuples, frozensets) are
built bottom-up, so their depth here is exact; mutable ones can be nested further through the memo,
which is why torch_zip's walk of the result has bounds of its own.
"""

from __future__ import annotations

import pickletools
from pathlib import Path

from engine.errors import CheckpointError

MAX_OPS = 2_000_000  # a ViT-B/32 state dict pickles to ~11k opcodes, its task_vectors ImageEncoder to ~20k
MAX_DEPTH = 200  # a pickled open_clip ImageEncoder nests ~30 deep, a state dict 6
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # keep the container below
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


class _Malformed(Exception):
    """The opcode stream cannot be a well-formed pickle (stack underflow, unknown memo slot)."""


def check_pickle(data: bytes, path: Path) -> None:
    """Refuse `data` (a pickle read from `path`) if unpickling it could exhaust the stack or memory."""
    try:
        depth, ops = _scan(data)
    except (_Malformed, ValueError) as exc:  # genops raises ValueError on unknown opcodes and truncation
        raise CheckpointError(path, f"data.pkl is not a well-formed pickle ({exc})", fix="save it again") from None
    if ops > MAX_OPS:
        raise CheckpointError(
            path,
            f"data.pkl has more than {MAX_OPS} pickle opcodes, far more than any model's state",
            fix="save model.state_dict() (tensors only) with torch.save, or as safetensors",
        )
    if depth > MAX_DEPTH:
        raise CheckpointError(
            path,
            f"data.pkl nests objects more than {MAX_DEPTH} deep, far deeper than any model's state",
            fix="save model.state_dict() (tensors only) with torch.save, or as safetensors",
        )


def _scan(data: bytes) -> tuple[int, int]:
    """(deepest nesting, opcodes seen); stops early once either passes its bound."""
    stack: list[int] = []  # nesting depth of each object on the unpickler's stack
    marks: list[int] = []  # stack heights at each MARK
    memo: dict[int, int] = {}
    deepest = ops = 0
    for op, arg, _ in pickletools.genops(data):
        ops += 1
        if ops > MAX_OPS or deepest > MAX_DEPTH:
            break
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name in _MEMO_PUT:
            slot = len(memo) if name == "MEMOIZE" else int(arg)
            if slot > MAX_OPS or not stack:
                raise _Malformed(f"memo slot {slot} out of range")
            memo[slot] = stack[-1]
            continue
        if name in _MEMO_GET:
            if arg not in memo:
                raise _Malformed(f"memo slot {arg} was never stored")
            stack.append(memo[arg])
            continue
        popped = _pop(op, stack, marks)
        pushed = _pushed_depth(name, popped)
        stack.extend([pushed] * len(op.stack_after))
        deepest = max(deepest, pushed)
    return deepest, ops


def _pop(op: pickletools.OpcodeInfo, stack: list[int], marks: list[int]) -> list[int]:
    """Remove `op`'s operands from the stack; a container a mutator fills comes first."""
    before = op.stack_before
    popped: list[int] = []
    if pickletools.markobject in before:
        if not marks:
            raise _Malformed(f"{op.name} without a MARK")
        mark = marks.pop()
        popped = stack[mark:]
        del stack[mark:]
        before = before[: before.index(pickletools.markobject)]  # what lies below the mark (APPENDS' list)
    if len(before) > len(stack):
        raise _Malformed(f"{op.name} on a stack of {len(stack)}")
    below = stack[len(stack) - len(before) :] if before else []
    del stack[len(stack) - len(before) :]
    return below + popped


def _pushed_depth(name: str, popped: list[int]) -> int:
    if name in _MUTATORS:  # the container (first operand) gains its new items as children
        return max(popped[0], 1 + max(popped[1:], default=-1))
    if name == "DUP":
        return popped[0]
    return 1 + max(popped, default=-1)
