"""The `gravity` command: global options, lazy sub-command loading and error-to-exit-code mapping.
Sub-commands live in sibling modules and are imported only when invoked, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import signal
import sys
from pathlib import Path

import click

from engine.errors import EXIT_INVALID, EngineError, Interrupted, interruption

GC_THRESHOLD = 50_000  # allocations between collections of the youngest generation (see main)
# name -> "module:attribute"; imported on first use only.
SUBCOMMANDS: dict[str, str] = {
    "operation": "engine.cli.operation:operation",
    "plan": "engine.cli.plan:plan",
    "status": "engine.cli.status:status",
    "rollback": "engine.cli.plan:rollback",
    "manifest": "engine.cli.manifest:manifest",
    "values": "engine.cli.values:values",
    "store": "engine.cli.store:store",
    "events": "engine.cli.events:events",
    "dashboard": "engine.cli.dashboard:dashboard",
    "install": "engine.cli.cluster:install",
    "expand": "engine.cli.cluster:expand",
    "join": "engine.cli.cluster:expand",
    "upgrade": "engine.cli.cluster:upgrade",
    "agent": "engine.cli.agent:agent",
    "remove": "engine.cli.lifecycle:remove",
    "leave": "engine.cli.lifecycle:leave",
    "uninstall": "engine.cli.lifecycle:uninstall",
    "app": "engine.cli.lifecycle:app",
    "backup": "engine.cli.appdata:backup",
    "restore": "engine.cli.appdata:restore",
    "report": "engine.cli.appdata:report",
    "license": "engine.cli.license:license_group",
    "version": "engine.cli.version:version",
}

# Each command's own short help, kept here so `gravity --help` imports nothing; a test keeps
# them equal.
SHORT_HELP: dict[str, str] = {
    "operation": "Create and list operations.",
    "plan": "Show the operation's plan: every phase with its state, node, requirements and errors.",
    "status": "Show the cluster's state and the active (or named, or most recent) operation.",
    "rollback": (
        "Roll back the whole operation: every attempted phase, in "
        "reverse dependency order."
    ),
    "manifest": "Validate and show Image Manifests (app.yaml).",
    "values": "Helm-style values as install and upgrade hooks will see them.",
    "store": "Copy operations between stores.",
    "events": "Print the operation's changelog: every phase transition, oldest first.",
    "dashboard": (
        "Serve a read-only web page of operations: the phase tree with live states, each "
        "phase's error and output log, and the transitions as they happen."
    ),
    "install": "Install the cluster image in IMAGE_DIR on the nodes of the inventory.",
    "expand": "Add a node to the installed cluster.",
    "join": "Add a node to the installed cluster.",
    "upgrade": "Upgrade the installed cluster to the image in IMAGE_DIR.",
    "agent": "Run, inspect and stop the per-node agents (used with an etcd store).",
    "remove": "Remove NODE from the installed cluster (Gravity's shrink).",
    "leave": "Remove this node from the cluster (run on the node itself).",
    "uninstall": (
        "Uninstall the application and clean every node, so `gravity install` can run "
        "again."
    ),
    "app": "The application's own hooks: status, start, stop.",
    "backup": "Back up the application's data into FILE (a tar.gz with a manifest of digests).",
    "restore": "Restore the application's data from FILE, a backup `gravity backup` wrote.",
    "report": (
        "Collect a debug report: the dump hook's output, every node's phase logs, and each "
        "operation's plan and event log, in one tar.gz."
    ),
    "license": "The cluster's license: install a new one, show the current one.",
    "version": "Print gravity's version and the Python version it runs on.",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported when first needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            module_name, attr = SUBCOMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use static short help so `gravity --help` imports no sub-command module.
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    envvar="GRAVITY_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the embedded store, logs and node work dirs "
    "[env GRAVITY_STATE_DIR; default ~/.local/state/gravity].",
)
@click.option(
    "--store",
    "store_url",
    envvar="GRAVITY_STORE",
    default=None,
    help="Store URL: sqlite:///path/gravity.db (default: <state-dir>/gravity.db) or "
    "etcd://host:2379[,host2:2379][/prefix] [env GRAVITY_STORE]. etcd credentials come "
    "from GRAVITY_ETCD_USER / GRAVITY_ETCD_PASSWORD.",
)
@click.option("--etcd-cacert", envvar="GRAVITY_ETCD_CACERT", default=None,
              help="CA certificate to verify etcd's server certificate.")
@click.option("--etcd-cert", envvar="GRAVITY_ETCD_CERT", default=None,
              help="Client certificate for etcd TLS.")
@click.option("--etcd-key", envvar="GRAVITY_ETCD_KEY", default=None,
              help="Client key for etcd TLS.")
@click.option("--advertise-addr", envvar="GRAVITY_ADVERTISE_ADDR", default=None,
              help="Address node agents reach this host at, to fetch the image from it "
              "[env GRAVITY_ADVERTISE_ADDR; default: this host's address on its route to "
              "etcd].")
@click.option("--blob-port", envvar="GRAVITY_BLOB_PORT", type=click.IntRange(0, 65535),
              default=0, help="Port of the image's blob service while this command drives "
              "agents [env GRAVITY_BLOB_PORT; default: any free port].")
@click.option("--blob-cert", envvar="GRAVITY_BLOB_CERT", default=None,
              help="TLS certificate of the blob service, signed by the cluster CA agents "
              "trust (--etcd-cacert) [default: --etcd-cert].")
@click.option("--blob-key", envvar="GRAVITY_BLOB_KEY", default=None,
              help="Key of --blob-cert [default: --etcd-key].")
@click.option("-q", "--quiet", is_flag=True, envvar="GRAVITY_QUIET",
              help="Do not print phase transitions on stderr (the log file still has them).")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Format of the event log printed on stderr (the log file is always JSON lines).",
)
@click.option("--debug", is_flag=True, envvar="GRAVITY_DEBUG",
              help="Log the engine's calls (store writes, leases and locks, the scheduler's "
              "dispatches) on stderr [env GRAVITY_DEBUG].")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _param, value: _print_version(ctx) if value else None,
              help="Print gravity's version and the Python version, and exit.")
@click.pass_context
def cli(
    ctx: click.Context,
    state_dir: Path | None,
    store_url: str | None,
    etcd_cacert: str | None,
    etcd_cert: str | None,
    etcd_key: str | None,
    advertise_addr: str | None,
    blob_port: int,
    blob_cert: str | None,
    blob_key: str | None,
    quiet: bool,
    log_format: str,
    debug: bool,
) -> None:
    """gravity: run cluster operations as resumable plans of phases.

    Exit codes: 0 success; 1 a phase or the operation failed (resumable);
    2 invalid input or usage (nothing written); 3 refused by a rule, a live
    owner or a lock; 130 interrupted with Ctrl-C (resumable).
    """
    from engine.cli.context import CliContext, default_state_dir
    from engine.serving import ServeOptions
    from engine.store import TLSConfig

    if debug:
        from engine.cli.context import debug_logging

        debug_logging()
    ctx.obj = CliContext(
        state_dir=(state_dir or default_state_dir()).expanduser().resolve(),
        state_dir_given=state_dir is not None,
        store_url=store_url,
        log_format=log_format,
        quiet=quiet,
        tls=TLSConfig(cacert=etcd_cacert, cert=etcd_cert, key=etcd_key),
        serve=ServeOptions(cert=blob_cert or etcd_cert, key=blob_key or etcd_key,
                           advertise=advertise_addr, port=blob_port),
    )
    ctx.call_on_close(ctx.obj.close)


def _print_version(ctx: click.Context) -> None:
    from engine.cli.version import version_line

    click.echo(version_line())
    ctx.exit()


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _say(text: str) -> None:
    """Print on stderr; a terminal that went away (a dropped SSH session) is not an error."""
    with contextlib.suppress(OSError):
        click.echo(text, err=True)


def hoist_global_options(argv: list[str]) -> list[str]:
    """Global options may also follow the sub-command (`gravity agent run --store URL`), as
    operators type them: move each one (with its value) in front of the sub-command."""
    takes_value: dict[str, bool] = {}
    for param in cli.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                takes_value[name] = not param.is_flag
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest += argv[i:]
            break
        name = token.split("=", 1)[0]
        if name in takes_value and rest:
            front.append(token)
            if takes_value[name] and "=" not in token and i + 1 < len(argv):
                front.append(argv[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the CLI and turns engine errors into exit codes.

    SIGTERM and SIGHUP end a command as Ctrl-C does: running phases are stopped and recorded
    interrupted, and the exit code is 128 + the signal."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    # A command reads plans in bulk: 100,000 phases are ~350,000 objects, none of them in a
    # cycle. At the default threshold (700) the collector ran ~500 times over them and took a
    # fifth of `gravity plan`'s CPU; at this one it runs a few times.
    gc.set_threshold(GC_THRESHOLD, 20, 100)
    try:
        args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
        cli.main(args=args, prog_name="gravity", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns Ctrl-C into Abort; either way nothing is half-written.
        # click wraps the KeyboardInterrupt (ours carries the signal) in an Abort.
        cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__cause__
        stop = interruption(cause if isinstance(cause, KeyboardInterrupt)
                            else KeyboardInterrupt())
        by = "" if stop.signum == signal.SIGINT else f" by {stop.name}"
        _say(f"interrupted{by}: the operation is left resumable; run `gravity plan resume` "
             "to continue or `gravity plan` to see where it stopped")
        sys.exit(stop.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID)
    except EngineError as exc:
        _say(f"error: {exc.render()}")
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
