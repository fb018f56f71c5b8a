"""Leases, claims and retry backoff under a frozen clock: a lease lives exactly its TTL unless
renewed, a dead owner's phase is recoverable, and retry delays follow the policy.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from freezegun import freeze_time

from engine.errors import LeaseExpired, LockHeld
from engine.leases import lease_alive
from engine.model import Operation, PhaseSpec, PhaseState, RetryPolicy, State
from engine.retry import delay_after, should_retry
from engine.store.sqlite import SQLiteStore
from tests.helpers import wait_for


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "g.db")
    yield s
    s.close()


def test_lease_lives_its_ttl_and_renewal_extends_it(store) -> None:
    with freeze_time("2026-01-01 00:00:00") as clock:
        lease = store.grant_lease("coordinator:op1", ttl=10)
        clock.tick(9)
        assert store.get_lease(lease.id) is not None
        store.keepalive(lease.id)  # renewed at t=9: now alive until t=19
        clock.tick(9)
        assert store.get_lease(lease.id) is not None
        clock.tick(2)
        assert store.get_lease(lease.id) is None
        with pytest.raises(LeaseExpired):
            store.keepalive(lease.id)


def test_lock_bound_to_an_expired_lease_can_be_taken(store) -> None:
    with freeze_time("2026-01-01 00:00:00") as clock:
        old = store.grant_lease("coordinator:op1", ttl=10)
        store.acquire_lock("coordinator/op1", old)
        new = store.grant_lease("coordinator:op1", ttl=10)
        with pytest.raises(LockHeld) as err:
            store.acquire_lock("coordinator/op1", new)
        assert f"lease {old.id}" in str(err.value)
        clock.tick(11)
        new = store.grant_lease("coordinator:op1", ttl=10)
        store.acquire_lock("coordinator/op1", new)
        assert store.lock_holder("coordinator/op1").id == new.id


def test_a_dead_local_owner_is_not_alive_even_before_its_ttl(store) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    lease = store.grant_lease("coordinator:op1", ttl=3600)
    # Pretend the lease belongs to the child process, which has exited.
    store._conn().execute("UPDATE leases SET pid=? WHERE id=?", (child.pid, lease.id))
    assert store.get_lease(lease.id) is not None
    assert lease_alive(store, lease.id) is None
    assert store.get_lease(lease.id) is None, "the dead owner's lease is revoked"
    mine = store.grant_lease("coordinator:op2", ttl=3600)
    assert lease_alive(store, mine.id) == store.get_lease(mine.id)


def test_in_progress_phase_of_an_expired_owner_is_interrupted(store, tmp_path) -> None:
    from engine import fsm
    from engine.model import Action

    with freeze_time("2026-01-01 00:00:00") as clock:
        store.create_operation(Operation("op1", "plan", "p", created=1, updated=1),
                               [PhaseSpec("/a", "", executor="noop")])
        lease = store.grant_lease("coordinator:op1", ttl=10)
        start = fsm.transition(PhaseState("/a"), State.IN_PROGRESS, action=Action.EXECUTE,
                               owner=lease.id, attempt=1)
        store.apply("op1", [start])
        st = store.get_state("op1", "/a")
        def verdict() -> fsm.Recovery:
            return fsm.recovery(st, owner_alive=lease_alive(store, st.owner) is not None,
                                owner_is_agent=False, can_adopt=False)

        assert verdict() is fsm.Recovery.REFUSE
        clock.tick(11)
        assert verdict() is fsm.Recovery.INTERRUPT


@pytest.mark.parametrize(("policy", "delays"), [
    (RetryPolicy(attempts=5, initial=1, factor=2, max=5, jitter=0), [1, 2, 4, 5]),
    (RetryPolicy(attempts=4, initial=0.1, factor=3, max=60, jitter=0), [0.1, 0.3, 0.9]),
    (RetryPolicy(attempts=3, initial=2, factor=1, max=60, jitter=0), [2, 2]),
])
def test_backoff_follows_the_policy(policy: RetryPolicy, delays: list[float]) -> None:
    got = [delay_after(policy, n) for n in range(1, policy.attempts)]
    assert got == pytest.approx(delays)
    assert [should_retry(policy, n) for n in range(1, policy.attempts + 1)] == (
        [True] * (policy.attempts - 1) + [False])


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(attempts=10, initial=1, factor=2, max=8, jitter=0.5)
    for n in range(1, 10):
        base = min(8, 2 ** (n - 1))
        for _ in range(20):
            d = delay_after(policy, n)
            assert base <= d <= base + 0.5


def test_heartbeat_keeps_a_lease_alive_and_reports_loss(store) -> None:
    from engine.leases import LeaseKeeper

    lease = store.grant_lease("coordinator:op1", ttl=0.6)

    def renewed_after_its_first_ttl() -> bool:
        # A renewal at time t moves `expires` to t + ttl; an expired lease is never renewed.
        now = store.get_lease(lease.id)
        return now is None or now.expires >= lease.expires + lease.ttl

    with LeaseKeeper(store, lease) as keeper:
        wait_for(renewed_after_its_first_ttl, timeout=10,
                 what="a renewal after the lease's first TTL")
        assert store.get_lease(lease.id) is not None
        assert not keeper.lost.is_set()
        store.revoke_lease(lease.id)
        assert keeper.lost.wait(2.0)


def test_an_agent_record_vanishes_with_its_lease(store) -> None:
    with freeze_time("2026-01-01 00:00:00") as clock:
        lease = store.grant_lease("agent:node-1", ttl=10)
        store.kv_put("agents/node-1", {"node": "node-1", "lease": lease.id}, lease.id)
        store.kv_put("agent-stop/node-9", {"at": 1})
        assert set(store.kv_list("agents/")) == {"agents/node-1"}
        clock.tick(6)
        store.keepalive(lease.id)  # the heartbeat keeps the record
        clock.tick(6)
        assert store.kv_get("agents/node-1") == {"node": "node-1", "lease": lease.id}
        clock.tick(11)
        assert store.kv_get("agents/node-1") is None
        assert store.kv_list("agents/") == {}
        assert store.kv_get("agent-stop/node-9") == {"at": 1}  # not bound to a lease
