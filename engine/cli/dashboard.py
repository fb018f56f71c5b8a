"""`gravity dashboard`: serve the read-only operation dashboard until SIGINT or SIGTERM.
Parses --listen, warns when it is not loopback, and stops the server cleanly on a signal.
"""

from __future__ import annotations

from typing import Any

import click


def bind_failure(host: str, port: int, exc: OSError) -> str:
    """Why the dashboard could not listen on host:port, in an operator's words."""
    import errno
    import socket

    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name {host!r}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use by another process"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"permission denied (ports below 1024 need root; port {port} was asked)"
    return exc.strerror or str(exc)


@click.command()
@click.option("--listen", default="127.0.0.1:8470", show_default=True, metavar="HOST:PORT",
              help="Address to serve on. Port 0 picks a free port. Anything but loopback "
              "exposes every operation's plan, errors and logs without authentication.")
@click.option("--operation-id", default=None,
              help="Operation the page opens with (default: the active operation, else the "
              "most recent).")
@click.pass_obj
def dashboard(obj: Any, listen: str, operation_id: str | None) -> None:
    """Serve a read-only web page of operations: the phase tree with live states, each
    phase's error and output log, and the transitions as they happen.

    \b
    Prints `dashboard: http://HOST:PORT/` once it is listening. It only
    answers GET requests (anything else gets 405) and binds to 127.0.0.1
    unless told otherwise. JSON API: /api/operations, /api/plan?op=ID,
    /api/log?op=ID&phase=/x, /api/events?op=ID&after=SEQ (server-sent events).
    Stop it with Ctrl-C or SIGTERM.
    """
    import signal
    import threading

    from engine.dashboard.server import DashboardServer, is_loopback, parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    store = obj.store()
    if operation_id:
        store.get_operation(operation_id)  # an unknown ID fails now (exit 2), not per request
    try:
        server = DashboardServer((host, port), store, obj.state_dir, operation_id)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {listen}: {bind_failure(host, port, exc)}; pick another "
            "address with --listen 127.0.0.1:PORT (port 0 picks a free one)") from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}, not loopback: anyone who can reach this "
                   "port can read every operation's plan, errors and phase logs (there is no "
                   "authentication); prefer the default 127.0.0.1 with an SSH tunnel",
                   err=True)

    def stop(signum: int, _frame: Any) -> None:
        # shutdown() waits for serve_forever, which runs on this very thread: hand it off.
        threading.Thread(target=server.stop, name="dashboard-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    click.echo(f"dashboard: {server.url}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("dashboard: stopped", err=True)
