"""`gravity agent run|status|stop`: the per-node worker and how operators see and stop it.
Stopping goes through the store (a stop request the agent watches), never a signal to a PID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.context import CliContext
from engine.cli.params import Duration
from engine.durations import format_duration
from engine.errors import InputError, NotFound, Problem
from engine.names import node_name_problem
from engine.store import Store

if TYPE_CHECKING:
    from engine.agent_protocol import AgentRecord

ROOT_STATE_DIR = Path("/var/lib/gravity")


@click.group()
def agent() -> None:
    """Run, inspect and stop the per-node agents (used with an etcd store)."""


@agent.command("run")
@click.option("--node", required=True, help="The node this agent runs phases for.")
@click.option("--ttl", type=Duration(minimum=1), default="10s", show_default=True,
              help="Lease TTL (10s, 1m or seconds; at least 1s); a silent agent is declared "
              "lost after it.")
@click.option("--grace", type=Duration(), default="30s", show_default=True,
              help="On SIGTERM or `agent stop`, how long a running phase may finish before "
              "it is handed back (failed as interrupted, to be re-dispatched).")
@click.pass_obj
def run(obj: CliContext, node: str, ttl: float, grace: float) -> None:
    """Run phases dispatched to NODE until stopped (SIGTERM, Ctrl-C or `gravity agent stop`).

    All a node needs: `gravity agent run --node NODE --store etcd://HOST:2379/PREFIX`
    (plus --etcd-cacert/--etcd-cert/--etcd-key with TLS). The agent announces itself
    under a lease renewed by heartbeats, watches the active operation for phases
    assigned to it, fetches the image content they name from the coordinator's blob
    service (verified by digest, cached under the state dir), runs each executor in
    <state-dir>/nodes/NODE/ and records the result. Its state dir defaults to
    /var/lib/gravity as root (else ~/.local/state/gravity). A second agent for the same
    node is refused (exit 3).
    """
    from engine.agent import Agent

    if (bad := node_name_problem(node)) is not None:
        raise InputError("invalid --node", [Problem(bad, field="--node")])
    Agent(store=obj.store(), node=node, state_dir=agent_state_dir(obj), ttl=ttl, grace=grace,
          log_format=obj.log_format, ca_file=obj.tls.cacert).run()


def agent_state_dir(obj: CliContext) -> Path:
    """--state-dir if given; else /var/lib/gravity as root (as Gravity's), else the user's."""
    if obj.state_dir_given or os.geteuid() != 0:
        return obj.state_dir
    return ROOT_STATE_DIR


@agent.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="A table, or JSON for scripts.")
@click.pass_obj
def status(obj: CliContext, output: str) -> None:
    """Every node of the active operation, the cluster and the registered agents:
    Online/Offline, last heartbeat, running phases.

    With the embedded store no agent is used (every phase runs in the process that
    drives the operation): it says so, and `-o json` prints [].
    """
    import json
    import time

    from engine import agent_protocol as proto
    from engine.operations.cluster import cluster_state
    from engine.presentation import table
    from engine.views import load_graph, resolve_operation

    store = obj.store()
    agents = proto.agents(store)
    if not agents and not agents_used(store):
        if output == "json":
            click.echo("[]")
        click.echo(f"agents are not used with the embedded store ({store.url}): every node "
                   "runs its phases locally, in the process that drives the operation.\n"
                   "Agents run each node's phases on its own host with an etcd store: see "
                   "`gravity agent run --help`.", err=output == "json")
        return
    nodes: set[str] = set(agents)
    cluster = cluster_state(store)
    if cluster is not None:
        nodes |= {n.name for n in cluster.nodes}
    try:
        op = resolve_operation(store, None)
        graph = load_graph(store, op)
        nodes |= {graph.node_of(p) for p in graph.leaves}
    except NotFound:  # no operation yet: show what we have
        pass
    nodes.discard("local")
    rows = []
    for node in sorted(nodes):
        info = agents.get(node)
        rows.append({
            "node": node,
            "status": "Online" if info else "Offline",
            "heartbeat": last_renewal(store, info) if info else None,
            "running": list(info.running) if info else [],
            "pid": info.pid if info else None,
            "host": info.host if info else None,
        })
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no nodes known: no operation, cluster or agent yet")
        return
    now = time.time()
    click.echo(table([[r["node"], r["status"],
                       f"{now - r['heartbeat']:.1f}s ago" if r["heartbeat"] else "-",
                       ", ".join(r["running"]) or "-",
                       f"{r['pid']}@{r['host']}" if r["pid"] else "-"] for r in rows],
                     ["Node", "Status", "Last heartbeat", "Running", "Process"]))
    offline = [r["node"] for r in rows if r["status"] == "Offline"]
    if offline:
        click.echo(f"\nstart the missing agents with `gravity agent run --node NODE` on: "
                   f"{', '.join(offline)}")


def last_renewal(store: Store, info: AgentRecord) -> float:
    """When the agent last renewed its lease (its heartbeat), from the lease itself: the
    agent's record is rewritten only when what it shows changes."""
    lease = store.get_lease(info.lease)
    return lease.expires - lease.ttl if lease is not None else float(info.heartbeat)


def agents_used(store: Store) -> bool:
    """Do phases of this store go to node agents? Not on the embedded store (unless
    GRAVITY_DISPATCH=agents): there every phase runs in the driving process."""
    from engine.dispatch import dispatch_mode

    return store.capabilities.shared or dispatch_mode(store) == "agents"


@agent.command()
@click.option("--node", required=True, help="The node whose agent should stop.")
@click.pass_obj
def stop(obj: CliContext, node: str) -> None:
    """Ask NODE's agent to stop (through the store): it finishes or hands back its phase."""
    from engine import agent_protocol as proto

    store = obj.store()
    if proto.agent(store, node) is None:
        raise NotFound(f"no agent is running for node {node}",
                       hint="see `gravity agent status`")
    proto.request_stop(store, node)
    click.echo(f"stop requested for the agent on {node}")


UNIT = """\
# Written by `gravity agent install`: the gravity agent of node {node}.
[Unit]
Description=gravity agent for node {node}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
{environment}Restart=always
RestartSec=2
# SIGTERM to the agent (it finishes or hands back its phases within --grace), then SIGKILL
# to whatever is left of the unit once TimeoutStopSec runs out.
KillMode=mixed
TimeoutStopSec={stop_timeout}

[Install]
WantedBy=multi-user.target
"""


@agent.command("install")
@click.option("--node", required=True, help="The node this agent runs phases for.")
@click.option("--ttl", type=Duration(minimum=1), default="10s", show_default=True,
              help="Lease TTL, as for `agent run`.")
@click.option("--grace", type=Duration(), default="30s", show_default=True,
              help="How long a running phase may finish when the service stops.")
@click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/etc/systemd/system"), show_default=True,
              help="Where the unit file is written.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An EnvironmentFile for the unit (e.g. GRAVITY_ETCD_PASSWORD=…, kept out "
              "of the unit itself).")
@click.option("--dry-run", is_flag=True, help="Print the unit; write nothing.")
@click.pass_obj
def install(obj: CliContext, node: str, ttl: float, grace: float, unit_dir: Path,
            env_file: Path | None, dry_run: bool) -> None:
    """Write a systemd unit that runs this node's agent (Restart=always) and say how to
    start it.

    The unit runs `gravity agent run` with this command's --store, --state-dir and etcd TLS
    files. Example, on the node itself:

        gravity --store etcd://10.0.0.1:2379/prod agent install --node node-2
        systemctl daemon-reload && systemctl enable --now gravity-agent-node-2
    """
    import shlex
    import sys

    if (bad := node_name_problem(node)) is not None:
        raise InputError("invalid --node", [Problem(bad, field="--node")])
    if obj.store_url is None:
        raise InputError("the agent needs the cluster's store", [Problem(
            "expected etcd://HOST:2379[/PREFIX]", field="--store")],
            hint="pass --store with the etcd URL the coordinator uses")
    argv = [sys.executable, "-m", "engine.cli.main", "--store", obj.store_url,
            "--state-dir", str(agent_state_dir(obj))]
    for flag, value in (("--etcd-cacert", obj.tls.cacert), ("--etcd-cert", obj.tls.cert),
                        ("--etcd-key", obj.tls.key)):
        if value:
            argv += [flag, str(Path(value).resolve())]
    argv += ["agent", "run", "--node", node, "--ttl", format_duration(ttl),
             "--grace", format_duration(grace)]
    unit = UNIT.format(
        node=node, exec_start=" ".join(shlex.quote(a) for a in argv),
        environment=f"EnvironmentFile={env_file.resolve()}\n" if env_file else "",
        stop_timeout=f"{int(grace) + 15}s")
    name = f"gravity-agent-{node}.service"
    if dry_run:
        click.echo(unit, nl=False)
        return
    from engine.executors.base import atomic_write

    path = unit_dir / name
    atomic_write(path, unit)
    click.echo(f"wrote {path}\nstart it with: systemctl daemon-reload && systemctl enable "
               f"--now {name.removesuffix('.service')}")
