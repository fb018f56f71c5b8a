"""`gravity agent run|status|stop`: the per-node worker and how operators see and stop it.
Stopping goes through the store (a stop request the agent watches), never a signal to a PID.
"""

from __future__ import annotations

import click

from engine.cli.context import CliContext


@click.group()
def agent() -> None:
    """Run, inspect and stop the per-node agents (used with an etcd store)."""


@agent.command("run")
@click.option("--node", required=True, help="The node this agent runs phases for.")
@click.option("--ttl", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Lease TTL in seconds; a silent agent is declared lost after it.")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM or `agent stop`, how long a running phase may finish before "
              "it is handed back (failed as interrupted, to be re-dispatched).")
@click.pass_obj
def run(obj: CliContext, node: str, ttl: float, grace: float) -> None:
    """Run phases dispatched to NODE until stopped (SIGTERM, Ctrl-C or `gravity agent stop`).

    The agent announces itself under a lease renewed by heartbeats, watches the active
    operation for phases assigned to it, runs each executor in <state-dir>/nodes/NODE/
    and records the result. A second agent for the same node is refused (exit 3).
    """
    from engine.agent import Agent
    from engine.names import node_name_problem

    if (bad := node_name_problem(node)) is not None:
        from engine.errors import InputError, Problem

        raise InputError("invalid --node", [Problem(bad, field="--node")])
    Agent(store=obj.store(), node=node, state_dir=obj.state_dir, ttl=ttl, grace=grace,
          log_format=obj.log_format).run()


@agent.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="A table, or JSON for scripts.")
@click.pass_obj
def status(obj: CliContext, output: str) -> None:
    """Every node of the active operation, the cluster and the registered agents:
    Online/Offline, last heartbeat, running phases."""
    import json
    import time

    from engine import agent_protocol as proto
    from engine.cli.render import table
    from engine.errors import NotFound
    from engine.operations.cluster import cluster_state
    from engine.views import load_graph, resolve_operation

    store = obj.store()
    agents = proto.agents(store)
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
            "heartbeat": info.heartbeat if info else None,
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


@agent.command()
@click.option("--node", required=True, help="The node whose agent should stop.")
@click.pass_obj
def stop(obj: CliContext, node: str) -> None:
    """Ask NODE's agent to stop (through the store): it finishes or hands back its phase."""
    from engine import agent_protocol as proto
    from engine.errors import NotFound

    store = obj.store()
    if proto.agent(store, node) is None:
        raise NotFound(f"no agent is running for node {node}",
                       hint="see `gravity agent status`")
    proto.request_stop(store, node)
    click.echo(f"stop requested for the agent on {node}")
