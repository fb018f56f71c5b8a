"""Shell completion of phase IDs for `--phase` options, read from the operation's stored plan.
Opens the store from the command line's global options (or their env vars) and never raises.

Enable it in bash with `eval "$(_GRAVITY_COMPLETE=bash_source gravity)"` (zsh: `zsh_source`,
fish: `fish_source`); see docs/operator-tools.md.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from engine.cli.context import default_state_dir
from engine.store import TLSConfig, default_url, open_store, would_create

# A completion must never hang the shell: past this many seconds we offer nothing.
TIMEOUT = 3.0


def _store_url(root: dict[str, Any]) -> str | None:
    """The store URL the command would use, or None when the embedded store does not exist.

    Completion must not create a database file as a side effect of pressing TAB.
    """
    url = root.get("store_url") or os.environ.get("GRAVITY_STORE")
    if not url:
        state_dir = root.get("state_dir") or os.environ.get("GRAVITY_STATE_DIR")
        state = Path(state_dir).expanduser() if state_dir else default_state_dir()
        url = default_url(state.resolve())
    return None if would_create(url) else url


def _phase_items(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    from engine.views import resolve_operation  # networkx: only when completing

    root = ctx.find_root().params
    url = _store_url(root)
    if url is None:
        return []
    tls = TLSConfig(cacert=root.get("etcd_cacert") or os.environ.get("GRAVITY_ETCD_CACERT"),
                    cert=root.get("etcd_cert") or os.environ.get("GRAVITY_ETCD_CERT"),
                    key=root.get("etcd_key") or os.environ.get("GRAVITY_ETCD_KEY"))
    prefix = incomplete if incomplete.startswith("/") else "/" + incomplete
    with open_store(url, tls=tls) as store:
        op = resolve_operation(store, ctx.params.get("operation_id"))
        specs = store.load_specs(op.id)
        states = store.load_states(op.id)
    items = []
    for spec in specs:
        if not spec.id.startswith(prefix):
            continue
        state = states[spec.id].state.value if spec.id in states else (
            "unstarted" if spec.is_leaf else "composite")
        help_text = f"{state}: {spec.description}" if spec.description else state
        items.append(CompletionItem(spec.id, help=help_text))
    return items


def complete_phase_ids(ctx: click.Context, param: click.Parameter | None,
                       incomplete: str) -> list[CompletionItem]:
    """Phase IDs of the operation the command targets that start with what was typed.

    Wire it as `shell_complete=complete_phase_ids` on a `--phase` option. It honours
    `--state-dir`/`--store` (and their env vars) and `--operation-id` typed before the
    cursor. Any error, a missing store or a slow one (over TIMEOUT seconds) yields no
    completions rather than a traceback in the operator's shell.
    """
    result: list[CompletionItem] = []

    def work() -> None:
        try:
            result.extend(_phase_items(ctx, incomplete))
        except Exception:  # completion must never raise into the shell
            result.clear()

    worker = threading.Thread(target=work, name="complete-phase-ids", daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    return [] if worker.is_alive() else list(result)
