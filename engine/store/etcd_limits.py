"""etcd's per-request limits and how many transitions one `apply` transaction holds within them.
The limits are etcd's defaults; a transition's largest size follows from names' and texts' bounds.
"""

from __future__ import annotations

from engine.model import (
    MAX_ERROR_BYTES,
    MAX_NOTE_BYTES,
    Action,
    ChangeRecord,
    PhaseState,
    State,
    Transition,
)
from engine.names import MAX_OPERATION_ID, MAX_PHASE_ID, MAX_SEGMENT
from engine.store.etcd_keys import AGE_WIDTH, SLOTS, Keys, encode, esc, ix_value, log_value

# etcd's defaults. --max-txn-ops bounds the compares, the success ops and the failure ops of
# one transaction, each list on its own (checked against etcd 3.5); --max-request-bytes bounds
# the whole request as etcd proposes it to raft.
MAX_TXN_OPS = 128
MAX_REQUEST_BYTES = 1_572_864  # 1.5 MiB
# Protobuf framing of one compare, put or get beyond its key and value (tags, lengths, the
# RequestOp wrapper, a version or lease number): ~15 bytes, counted double.
OP_FRAMING = 32
# The request's own framing and raft's header (request ID, user name, auth revision).
ENVELOPE = 4096
# Writes that are not `apply` (specs, an import's states and records) go in batches of at most
# this many puts and bytes, well inside both limits.
SPEC_BATCH = 100
MAX_TXN_BYTES = 1_000_000

_BIG_INT = 10**19  # wider than any version, attempt or lease ID (etcd's are int64)
_NODE = "n" * 63  # the longest node name (engine.names.NODE_NAME)


def _widest_phase_id() -> str:
    """Longer in a key than any valid phase ID: each of its characters is percent-encoded to
    three bytes (valid IDs start every segment with a letter or digit, kept as one)."""
    return "/" + ":" * (MAX_PHASE_ID - 1)


def _largest_transition() -> Transition:
    """A transition whose state and record are as large as the engine can make them."""
    new = PhaseState(
        phase_id=_widest_phase_id(), state=State.ROLLED_BACK, version=_BIG_INT,
        attempt=_BIG_INT, action=Action.ROLLBACK, owner=_BIG_INT, node=_NODE,
        error="x" * MAX_ERROR_BYTES, note="x" * MAX_NOTE_BYTES,
        updated=-1.2345678901234567e-300)
    return Transition(expected=_BIG_INT - 1, new=new, from_state=State.IN_PROGRESS)


def transition_bytes(prefix: str) -> int:
    """The most bytes one transition adds to an `apply` transaction under `prefix`: a compare
    and a failure-branch get of its state key, a put of the state, a put of its record, a put
    of its state index key and a delete of the old one."""
    keys = Keys(prefix)
    op_id = "o" * MAX_OPERATION_ID
    t = _largest_transition()
    state_key = keys.state(op_id, t.phase_id)
    log_key = keys.log(op_id, t.new.node, t.phase_id, t.new.version, t.new.state)
    record = log_value(ChangeRecord.of(op_id, t), SLOTS - 1)
    compare = get = len(state_key) + OP_FRAMING
    put_state = len(state_key) + len(encode(t.new.to_dict())) + OP_FRAMING
    put_record = len(log_key) + len(record) + OP_FRAMING
    # The index key holds the ID twice: whole, and its top-level segment (a segment is at most
    # MAX_SEGMENT long; the widest ID here is one segment, longer than any valid one).
    ix_key = (keys.ixs(op_id, "/" + ":" * MAX_SEGMENT, t.new.state) + b"0" * AGE_WIDTH + b"/"
              + esc(t.phase_id).encode())
    move_ix = 2 * (len(ix_key) + OP_FRAMING) + len(ix_value(t.new.updated))
    return compare + get + put_state + put_record + move_ix


def fixed_bytes(prefix: str) -> int:
    """What every `apply` transaction carries besides its transitions: the compare and get of
    the operation record and of the writer's lease record (the fence), and the envelope."""
    keys = Keys(prefix)
    op_key = keys.op("o" * MAX_OPERATION_ID)
    lease_key = keys.lease(_BIG_INT)
    return 2 * (len(op_key) + OP_FRAMING) + 2 * (len(lease_key) + OP_FRAMING) + ENVELOPE


def max_transitions(prefix: str) -> int:
    """How many transitions one `apply` takes under `prefix`: as many as fit etcd's default
    limits when every one of them is as large as it can be.

    By operations: 4 each on success (puts of the state, its record and its index key, the
    delete of its old index key), against 1 compare each plus the operation's and the fence's
    on the compare side, and 1 get each plus those two on failure.
    By bytes: see `transition_bytes` and `fixed_bytes`. The smaller one wins; 1 at least.
    """
    by_ops = min(MAX_TXN_OPS // 4, MAX_TXN_OPS - 2)
    by_bytes = (MAX_REQUEST_BYTES - fixed_bytes(prefix)) // transition_bytes(prefix)
    return max(1, min(by_ops, by_bytes, SLOTS))


__all__ = ["MAX_REQUEST_BYTES", "MAX_TXN_BYTES", "MAX_TXN_OPS", "SPEC_BATCH", "fixed_bytes",
           "max_transitions", "transition_bytes"]
