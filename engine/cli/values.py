"""`gravity values show` and the reusable --values/--set/--set-string/--set-file options.
`values_options` + `values_from_params` let install and upgrade take the same flags.

How command-line order is kept across the three --set kinds: click hands each option its own
list of values, which loses how they were interleaved. Each override option therefore wraps
the process step of its parser entry so every occurrence is also appended, as (kind, text),
to one shared list in the parse state; the option's handle_parse_result then copies that list
into `ctx.meta`. `values_from_params` reads it from there and checks it against the per-kind
lists; if the two ever disagree (say a future click changes its parser), it falls back to
Helm's order: all --set, then all --set-string, then all --set-file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.cli.params import YAML_OR_JSON

F = TypeVar("F", bound=Callable[..., Any])

ORDER_META_KEY = "engine.values.overrides"
"""ctx.meta key holding the (kind, text) overrides in command-line order."""

PARAM_FILES = "values_files"
PARAM_BY_KIND: dict[str, str] = {
    "set": "set_values",
    "set-string": "set_string_values",
    "set-file": "set_file_values",
}
"""Parameter names the options use, so callers can read them from ctx.params."""

OVERRIDE_HELP: dict[str, tuple[str, str]] = {
    "set": ("KEY=VALUE", "Set values (Helm syntax: a.b=1,list={x,y},l[0].k=v); repeatable."),
    "set-string": ("KEY=VALUE", "Like --set, but every value stays a string; repeatable."),
    "set-file": ("KEY=PATH", "Set a value to the content of a file; repeatable."),
}
"""Each override option's metavar and help, in the order --help lists them."""


class _OverrideOption(click.Option):
    """A repeatable --set-style option that records each occurrence in command-line order."""

    def __init__(self, *args: Any, override_kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.override_kind = override_kind

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        kind = self.override_kind
        for opt in self.opts:
            entry = getattr(parser, "_long_opt", {}).get(opt) or getattr(
                parser, "_short_opt", {}
            ).get(opt)
            if entry is None or not hasattr(entry, "process"):
                continue
            original = entry.process

            def process(value: Any, state: Any, _original: Any = original) -> None:
                _original(value, state)
                state.opts.setdefault(ORDER_META_KEY, []).append((kind, value))

            entry.process = process

    def handle_parse_result(
        self, ctx: click.Context, opts: Mapping[str, Any], args: list[str]
    ) -> tuple[Any, list[str]]:
        ctx.meta[ORDER_META_KEY] = list(opts.get(ORDER_META_KEY, ()))
        return super().handle_parse_result(ctx, opts, args)


def values_options(func: F) -> F:
    """Add --values, --set, --set-string and --set-file to a click command.

    The command receives them as `values_files`, `set_values`, `set_string_values` and
    `set_file_values`; call `values_from_params(ctx)` to get the merged values.
    """
    decorators = [
        click.option(
            "--values",
            PARAM_FILES,
            multiple=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="YAML file of values; repeatable, later files win.",
        ),
        *(click.option(f"--{kind}", PARAM_BY_KIND[kind], multiple=True, cls=_OverrideOption,
                       override_kind=kind, metavar=metavar, help=text)
          for kind, (metavar, text) in OVERRIDE_HELP.items()),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _overrides(params: Mapping[str, Any], order: Sequence[Any] | None) -> list[tuple[str, str]]:
    grouped = [
        (kind, str(text)) for kind, name in PARAM_BY_KIND.items() for text in params.get(name) or ()
    ]
    if order is None:
        return grouped
    ordered = [(str(kind), str(text)) for kind, text in order]
    for kind, name in PARAM_BY_KIND.items():
        mine = [text for k, text in ordered if k == kind]
        if mine != [str(t) for t in params.get(name) or ()]:
            return grouped
    return ordered


def values_from_params(source: click.Context | Mapping[str, Any]) -> dict[str, Any]:
    """The merged values for a command decorated with `values_options`.

    Pass the click context (keeps the command-line order across --set kinds) or a mapping of
    its params (then overrides apply in Helm's order: --set, --set-string, --set-file; a
    mapping may carry an ordered "value_overrides" list of (kind, text) pairs instead).
    """
    from engine.values import merge_values

    if isinstance(source, click.Context):
        params: Mapping[str, Any] = source.params
        order = source.meta.get(ORDER_META_KEY)
    else:
        params = source
        order = source.get("value_overrides")
    files = [Path(p) for p in params.get(PARAM_FILES) or ()]
    if order is not None and not isinstance(source, click.Context):
        overrides = [(str(kind), str(text)) for kind, text in order]
    else:
        overrides = _overrides(params, order)
    return merge_values(files, overrides)


@click.group()
def values() -> None:
    """Helm-style values as install and upgrade hooks will see them."""


@values.command()
@values_options
@click.option("--operation-id", default=None,
              help="Show the values operation ID ran with (recorded when it was created).")
@click.option("--reveal", is_flag=True,
              help="Show the values themselves; without it every value is *** (keys kept), as "
              "everywhere else: values files and --set may carry passwords.")
@YAML_OR_JSON
@click.pass_context
def show(ctx: click.Context, operation_id: str | None, reveal: bool, output: str,
         **_: Any) -> None:
    """Print values, redacted unless --reveal: those an operation ran with (--operation-id),
    else the merge of the given files and --set* options (files in order, then each --set*
    in command-line order), else the installed cluster's current values.

    \b
    Example:
      gravity values show --operation-id install-1 --reveal
      gravity values show -f values.yaml --set image.tag=1.2
    """
    from engine.redact import redact_values

    given = bool(ctx.params.get(PARAM_FILES)) or any(
        ctx.params.get(name) for name in PARAM_BY_KIND.values())
    if operation_id is not None:
        from engine.views import resolve_operation

        shown = dict(resolve_operation(ctx.obj.store(), operation_id).data.get("values") or {})
    elif given:
        shown = values_from_params(ctx)
    else:
        from engine.operations.cluster import cluster_state

        cluster = cluster_state(ctx.obj.store())
        shown = dict(cluster.values) if cluster is not None else {}
    if not reveal:
        shown = redact_values(shown)
    if output == "json":
        import json

        click.echo(json.dumps(shown, indent=2, ensure_ascii=False, default=str))
        return
    from engine.values import to_yaml

    click.echo(to_yaml(shown), nl=False)
