"""`gravity values show` through real subprocesses, and the reusable `values_options`
decorator keeping command-line order across --set, --set-string and --set-file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
import yaml
from click.testing import CliRunner

from engine.cli.values import values_from_params, values_options

if TYPE_CHECKING:
    from conftest import Gravity


def test_values_show_merges_files_and_overrides(gravity: Gravity, tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("image: {repo: nginx, tag: '1.9'}\nreplicas: 1\n")
    (tmp_path / "prod.yaml").write_text("replicas: 5\nextra: null\n")
    (tmp_path / "motd.txt").write_text("hello\nworld\n")
    proc = gravity(
        "values", "show",
        "--values", "base.yaml",
        "--set", "image.tag=1.11,debug=true",
        "--values", "prod.yaml",
        "--set-file", "motd=motd.txt",
        "--set-string", "replicas=7",
        "--reveal",
        check=0,
    )  # fmt: skip
    assert proc.stderr == ""
    assert yaml.safe_load(proc.stdout) == {
        "image": {"repo": "nginx", "tag": "1.11"},
        "replicas": "7",
        "debug": True,
        "motd": "hello\nworld\n",
    }
    # Without --reveal the same merge shows its keys, every value hidden.
    hidden = gravity("values", "show", "--values", "base.yaml", "--set", "image.tag=1.11",
                     check=0)
    assert yaml.safe_load(hidden.stdout) == {"image": {"repo": "***", "tag": "***"},
                                             "replicas": "***"}


def test_values_show_follows_command_line_order_across_kinds(gravity: Gravity) -> None:
    a = gravity("values", "show", "--set", "x=1", "--set-string", "x=2", "-o", "json",
                "--reveal", check=0)
    b = gravity("values", "show", "--set-string", "x=2", "--set", "x=1", "-o", "json",
                "--reveal", check=0)
    assert json.loads(a.stdout) == {"x": "2"}
    assert json.loads(b.stdout) == {"x": 1}


def test_values_show_reports_malformed_set_with_position(gravity: Gravity) -> None:
    proc = gravity("values", "show", "--set", "a[x]=1", check=2)
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[0] == (
        'error: --set "a[x]=1": expected a number inside [] at position 2'
    )


def test_values_show_reports_bad_values_file(gravity: Gravity, tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- a\n")
    proc = gravity("values", "show", "--values", "list.yaml", check=2)
    assert "error: values file list.yaml: the top level must be a mapping" in proc.stderr


def test_values_show_empty_is_an_empty_mapping(gravity: Gravity) -> None:
    assert gravity("values", "show", check=0).stdout == "{}\n"


@click.command()
@values_options
@click.pass_context
def _install(ctx: click.Context, **_: Any) -> None:
    """Stands in for `gravity install`, which will reuse the options the same way."""
    click.echo(json.dumps(values_from_params(ctx)))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "a=1", "--set-string", "a=2", "--set", "a=3"], {"a": 3}),
        (["--set-string", "a=2", "--set", "a=1", "--set-string", "a=4"], {"a": "4"}),
        (["--set=a=1", "--set-string=a=2"], {"a": "2"}),
        (["--set", "l={1,2}", "--set", "l[0]=9"], {"l": [9, 2]}),
        ([], {}),
    ],
)
def test_values_options_keep_order(args: list[str], expected: dict[str, Any]) -> None:
    result = CliRunner().invoke(_install, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


def test_set_file_order_against_set(tmp_path: Path) -> None:
    content = tmp_path / "c.txt"
    content.write_text("from file")
    args = ["--set", "a=1", "--set-file", f"a={content}", "--set", "b=2"]
    result = CliRunner().invoke(_install, args, catch_exceptions=False)
    assert json.loads(result.output) == {"a": "from file", "b": 2}
    args = ["--set-file", f"a={content}", "--set", "a=1"]
    result = CliRunner().invoke(_install, args, catch_exceptions=False)
    assert json.loads(result.output) == {"a": 1}


def test_values_from_params_mapping(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("a: 0\nb: 0\n")
    params = {
        "values_files": (values,),
        "set_values": ("a=1",),
        "set_string_values": ("a=2",),
        "set_file_values": (),
    }
    # Without an order, Helm's order applies: --set, then --set-string, then --set-file.
    assert values_from_params(params) == {"a": "2", "b": 0}
    ordered = {**params, "value_overrides": [("set-string", "a=2"), ("set", "a=1")]}
    assert values_from_params(ordered) == {"a": 1, "b": 0}
