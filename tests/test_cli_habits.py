"""An operator's habits from years of Gravity, through the real CLI: global options after the
sub-command, `version`, `--debug`, `plan execute --phase /`, `-m`, `--tail`, durations for every
time, what `agent status` says on the embedded store, `join`'s help, and an example in the help
of every long-running command.
"""

from __future__ import annotations

import json
import platform
import re
import tomllib
from pathlib import Path

import click
import pytest

import engine
from tests.conftest import ROOT, Gravity

TWO_PHASES = """
kind: Plan
metadata: {name: habits}
phases:
  - id: first
    executor: command
    data: {run: "echo one >> ran"}
  - id: second
    executor: command
    data: {run: "echo two >> ran"}
"""

ON_A_NODE = """
kind: Plan
metadata: {name: on-a-node}
phases:
  - id: work
    node: node-1
    executor: command
    data: {run: "true"}
"""


def global_option_names() -> set[str]:
    """Every long name `gravity --help` lists as a global option."""
    from engine.cli.main import cli

    return {name for p in cli.params if isinstance(p, click.Option)
            for name in p.opts if name.startswith("--")}


# -- global options after the sub-command -------------------------------------------------------

def test_state_dir_store_quiet_and_log_format_after_a_nested_sub_command(
        gravity: Gravity, tmp_path: Path) -> None:
    """The operator types the global options where they think of them: after `plan execute`."""
    elsewhere = tmp_path / "elsewhere"
    plan = tmp_path / "plan.yaml"
    plan.write_text(TWO_PHASES)
    gravity("operation", "create", "--plan", str(plan), "--id", "op1",
            "--state-dir", str(elsewhere), check=0)
    assert not gravity.db.exists()  # written under --state-dir, not the default dir
    proc = gravity("plan", "execute", "--phase", "/first", "--state-dir", str(elsewhere),
                   "--log-format", "json", check=0)
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert any(rec.get("phase") == "/first" for rec in lines)
    proc = gravity("plan", "execute", "--phase", "/second", "--state-dir=" + str(elsewhere),
                   "-q", check=0)
    assert "/second" not in proc.stderr  # quiet: no transition lines
    url = f"sqlite://{elsewhere / 'gravity.db'}"
    listed = json.loads(gravity("operation", "list", "-o", "json", "--store", url,
                                check=0).stdout)
    assert [(o["id"], o["state"]) for o in listed] == [("op1", "completed")]
    listed = json.loads(gravity("operation", "list", "--quiet", "-o", "json", "--store=" + url,
                                check=0).stdout)
    assert [o["id"] for o in listed] == ["op1"]


def test_etcd_tls_files_after_the_sub_command_reach_the_agent_unit(
        gravity: Gravity, tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    unit = gravity("agent", "install", "--node", "node-2", "--dry-run",
                   "--store", "etcd://10.0.0.1:2379/prod", "--etcd-cacert", str(files["ca"]),
                   "--etcd-cert", str(files["cert"]), "--etcd-key", str(files["key"]),
                   "--state-dir", "/srv/gravity", check=0).stdout
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    for flag, path in (("--etcd-cacert", files["ca"]), ("--etcd-cert", files["cert"]),
                       ("--etcd-key", files["key"])):
        assert f"{flag} {path}" in exec_start
    assert "--store etcd://10.0.0.1:2379/prod --state-dir /srv/gravity" in exec_start


# Each global option, after a sub-command (and after a nested one), with a value it accepts.
AFTER: dict[str, list[str]] = {
    "--state-dir": ["--state-dir", "{tmp}/other"],
    "--store": ["--store", "sqlite://{tmp}/other.db"],
    "--etcd-cacert": ["--etcd-cacert", "ca.pem"],
    "--etcd-cert": ["--etcd-cert", "cert.pem"],
    "--etcd-key": ["--etcd-key", "key.pem"],
    "--advertise-addr": ["--advertise-addr", "10.0.0.1"],
    "--blob-port": ["--blob-port", "8471"],
    "--blob-cert": ["--blob-cert", "blob.pem"],
    "--blob-key": ["--blob-key", "blob.key"],
    "--quiet": ["--quiet"],
    "--log-format": ["--log-format", "json"],
    "--debug": ["--debug"],
    "--version": ["--version"],
}


def test_every_global_option_is_tried_after_the_sub_command() -> None:
    assert set(AFTER) == global_option_names()


@pytest.mark.parametrize("name", sorted(AFTER))
def test_each_global_option_is_accepted_after_the_sub_command(
        gravity: Gravity, tmp_path: Path, name: str) -> None:
    option = [arg.replace("{tmp}", str(tmp_path)) for arg in AFTER[name]]
    for command in (["status"], ["operation", "list"]):
        proc = gravity(*command, *option)
        assert proc.returncode == 0, (name, command, proc.stderr)
        if name == "--version":
            assert proc.stdout.startswith(f"gravity {engine.__version__} ")


def test_no_sub_command_has_an_option_named_like_a_global_one() -> None:
    """Global options are moved in front of the sub-command, so a sub-command's own option of
    the same name would never be seen: none may exist."""
    from engine.cli.main import cli

    globals_ = {n for p in cli.params if isinstance(p, click.Option)
                for n in (*p.opts, *p.secondary_opts)}
    ctx = click.Context(cli)
    clashes = []

    def walk(command: click.Command, path: list[str]) -> None:
        for param in command.params:
            if isinstance(param, click.Option) and globals_ & {*param.opts,
                                                               *param.secondary_opts}:
                clashes.append(f"gravity {' '.join(path)} {param.opts}")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])

    for name in cli.list_commands(ctx):
        sub = cli.get_command(ctx, name)
        assert sub is not None
        walk(sub, [name])
    assert not clashes


# -- version ------------------------------------------------------------------------------------

def test_version_says_the_engine_and_python_versions(gravity: Gravity) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert engine.__version__ == pyproject
    text = gravity("version", check=0).stdout
    assert re.search(rf"^Version: +{re.escape(engine.__version__)}$", text, re.MULTILINE)
    assert re.search(rf"^Python: +{re.escape(platform.python_version())} ", text, re.MULTILINE)
    facts = json.loads(gravity("version", "-o", "json", check=0).stdout)
    assert facts == {"version": engine.__version__, "python": platform.python_version(),
                     "python_implementation": platform.python_implementation()}
    line = gravity("--version", check=0).stdout
    assert line == f"gravity {engine.__version__} (Python {platform.python_version()})\n"


# -- --debug ------------------------------------------------------------------------------------

@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_debug_logs_store_and_scheduler_calls_on_stderr_and_leaves_stdout_alone(
        gravity: Gravity, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(TWO_PHASES)
    quiet_dir, debug_dir = tmp_path / "plain", tmp_path / "debug"
    runs = {}
    for state, extra in ((quiet_dir, []), (debug_dir, ["--debug"])):
        created = gravity("operation", "create", "--plan", str(plan), "--id", "op1",
                          "--state-dir", str(state), *extra, check=0)
        resumed = gravity("plan", "resume", "--state-dir", str(state), *extra, check=0)
        shown = gravity("--state-dir", str(state), *extra, "plan", "-o", "json", check=0)
        runs[bool(extra)] = (created, resumed, shown)
    def same(text: str, state: Path) -> str:  # times and durations differ from run to run
        return re.sub(r"\d+\.\d+", "N", text.replace(str(state), "STATE"))

    for plain, debug in zip(runs[False], runs[True], strict=True):
        assert same(plain.stdout, quiet_dir) == same(debug.stdout, debug_dir)
        assert " DEBUG " not in plain.stderr
    created, resumed, _ = runs[True]
    assert re.search(r"DEBUG gravity\.store .*create_operation op1 \(plan, 2 phase spec",
                     created.stderr)
    log = resumed.stderr
    for pattern in (r"gravity\.store .*opened store sqlite://",
                    r"gravity\.store .*grant_lease owner 'coordinator:op1'",
                    r"gravity\.store .*acquire_lock 'coordinator/op1'",
                    r"gravity\.store .*apply op1: 1 transition\(s\): /first "
                    r"unstarted→in_progress v1; fence=\d+ -> seq 1",
                    r"gravity\.scheduler .*dispatch /first \(execute, attempt 1\) to node local",
                    r"gravity\.scheduler .*result of /second after [\d.]+s: ok",
                    r"gravity\.store .*finish_operation op1 -> completed",
                    r"gravity\.store .*revoke_lease lease \d+"):
        assert re.search(pattern, log), pattern
    # The environment turns it on too, for a process the operator does not start by hand.
    again = gravity("status", "--state-dir", str(debug_dir), GRAVITY_DEBUG="1", check=0)
    assert "DEBUG gravity.store [MainThread] opened store sqlite://" in again.stderr


def test_every_backend_logs_every_write() -> None:
    """Each store backend's writes and reads go through the debug log, wherever the backend
    defines them (its own class or a mixin), so --debug shows the same calls on SQLite and
    etcd (and what an agent asks the store can be counted)."""
    from engine.store.calllog import DESCRIBE, READS
    from engine.store.etcd import EtcdStore
    from engine.store.sqlite import SQLiteStore

    for backend in (SQLiteStore, EtcdStore):
        unlogged = [name for name in (*DESCRIBE, *READS)
                    if not getattr(getattr(backend, name), "__gravity_logged__", False)]
        assert unlogged == [], backend.__name__


# -- plan execute --phase / ---------------------------------------------------------------------

@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_execute_phase_root_runs_the_whole_plan(gravity: Gravity) -> None:
    gravity.create(TWO_PHASES)
    dry = gravity("plan", "execute", "--phase", "/", "--dry-run", check=0).stdout
    assert dry.splitlines()[1:] == ["  /first", "  /second"]
    gravity("plan", "execute", "--phase", "/first", check=0)
    out = gravity("plan", "execute", "--phase", "/", check=0).stdout
    assert "operation op1 is completed" in out
    assert gravity.node_file("local", "ran").read_text() == "one\ntwo\n"  # /first did not run again
    again = gravity("plan", "execute", "--phase", "/", check=0).stdout
    assert "phase / is already completed; nothing to do" in again
    assert gravity.node_file("local", "ran").read_text() == "one\ntwo\n"



def test_plan_rollback_of_the_root_points_to_gravity_rollback(gravity: Gravity) -> None:
    """`--phase /` runs the whole plan forward; backward, the whole operation is `gravity
    rollback`'s (it asks first), so `plan rollback --phase /` says so and undoes nothing."""
    gravity.create(TWO_PHASES)
    gravity("plan", "resume", check=0)
    proc = gravity("plan", "rollback", "--phase", "/", check=2)
    assert "--phase / names the whole operation" in proc.stderr
    assert "`gravity rollback`" in proc.stderr
    assert set(gravity.states().values()) == {"completed"}

# -- -m, --tail -----------------------------------------------------------------------------------

def test_m_is_short_for_manual(gravity: Gravity, tmp_path: Path) -> None:
    import shutil

    images = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", images, symlinks=True)
    out = gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"), "-m",
                  "--id", "install", check=0).stdout
    assert "the plan is ready; nothing has run" in out
    assert set(gravity.states().values()) == {"unstarted"}
    for command in ("install", "upgrade", "expand", "join"):
        assert "-m, --manual" in gravity(command, "--help", check=0).stdout, command


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_tail_is_follow(gravity: Gravity) -> None:
    gravity.create(TWO_PHASES)
    gravity("plan", "resume", check=0)
    tail = gravity("plan", "--tail", check=0)  # as --follow: the plan, then the ending
    assert re.search(r"^✓ /second ", tail.stdout, re.MULTILINE)
    assert tail.stderr == "operation op1 completed\n"
    assert gravity("plan", "display", "--tail", check=0).stderr == "operation op1 completed\n"


# -- durations ----------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["3s", "90s", "2m", "1h30m", "250ms", "45", "1.5"])
def test_agent_timeout_takes_durations(gravity: Gravity, given: str) -> None:
    gravity.create(TWO_PHASES)
    gravity("plan", "execute", "--phase", "/first", "--agent-timeout", given, check=0)
    assert gravity.states()["/first"] == "completed"


def test_agent_timeout_as_a_duration_is_the_time_a_phase_waits(gravity: Gravity) -> None:
    """Phases dispatched to agents (forced here on the embedded store) wait `--agent-timeout`
    for the node's agent, then fail naming the command that starts it."""
    gravity.create(ON_A_NODE)
    proc = gravity("plan", "resume", "--agent-timeout", "1s", GRAVITY_DISPATCH="agents",
                   check=1)
    assert "gravity agent run --node node-1" in proc.stderr


@pytest.mark.parametrize(("args", "option", "expected"), [
    (["plan", "resume", "--agent-timeout", "3x"], "--agent-timeout",
     "expected a duration like 30s, 2m, 1h30m or a number of seconds, got '3x'"),
    (["plan", "execute", "--phase", "/first", "--agent-timeout", "-1"], "--agent-timeout",
     "expected a duration like 30s, 2m, 1h30m or a number of seconds"),
    (["rollback", "--agent-timeout", "soon"], "--agent-timeout", "got 'soon'"),
    (["agent", "run", "--node", "node-1", "--ttl", "500ms"], "--ttl",
     "expected at least 1s, got '500ms'"),
    (["agent", "run", "--node", "node-1", "--grace", "1d"], "--grace",
     "expected a duration like 30s, 2m, 1h30m or a number of seconds, got '1d'"),
    (["manifest", "validate", ".", "--fetch-timeout", "fast"], "--fetch-timeout",
     "got 'fast'"),
])
def test_a_bad_duration_is_exit_2_naming_the_option_and_the_form(
        gravity: Gravity, args: list[str], option: str, expected: str) -> None:
    gravity.create(TWO_PHASES)
    before = gravity.changelog("op1")
    proc = gravity(*args, check=2)
    assert f"Invalid value for '{option}'" in proc.stderr
    assert expected in proc.stderr
    assert gravity.changelog("op1") == before


def test_bad_agent_timeout_from_the_environment_is_exit_2(gravity: Gravity) -> None:
    gravity.create(TWO_PHASES)
    proc = gravity("plan", "resume", GRAVITY_AGENT_TIMEOUT="later", check=2)
    assert "'--agent-timeout'" in proc.stderr and "got 'later'" in proc.stderr
    gravity("plan", "resume", GRAVITY_AGENT_TIMEOUT="2m", check=0)


@pytest.mark.parametrize("name", ["GRAVITY_LEASE_TTL", "GRAVITY_LEASE_GRACE"])
def test_lease_settings_from_the_environment_take_durations(gravity: Gravity, name: str) -> None:
    """A lease TTL or grace written as a duration works; one that is not is exit 2 naming the
    variable, and no phase is started."""
    gravity.create(TWO_PHASES)
    proc = gravity("plan", "resume", **{name: "ten"}, check=2)
    assert f"{name}='ten' is not a duration" in proc.stderr and "Traceback" not in proc.stderr
    assert set(gravity.states().values()) == {"unstarted"}
    gravity("plan", "resume", **{name: "3s"}, check=0)
    assert gravity.node_file("local", "ran").read_text() == "one\ntwo\n"


def test_agent_unit_keeps_the_durations_as_written(gravity: Gravity) -> None:
    unit = gravity("agent", "install", "--node", "node-2", "--dry-run", "--ttl", "1m30s",
                   "--grace", "2m", "--store", "etcd://10.0.0.1:2379", check=0).stdout
    assert "agent run --node node-2 --ttl 1m30s --grace 2m" in unit
    assert "TimeoutStopSec=135s" in unit


def test_every_time_option_takes_a_duration() -> None:
    """No option that takes a time is left a plain number of seconds."""
    from engine.cli.main import cli
    from engine.cli.params import Duration

    ctx = click.Context(cli)
    found: dict[str, type] = {}

    def walk(command: click.Command, path: str) -> None:
        for param in command.params:
            if isinstance(param, click.Option) and re.search(
                    r"timeout|ttl|grace|interval|wait|delay", param.name or ""):
                found[f"{path} {param.opts[0]}"] = type(param.type)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, f"{path} {name}")

    walk(cli, "gravity")
    assert "gravity plan execute --agent-timeout" in found
    assert "gravity agent run --ttl" in found
    assert {k: v for k, v in found.items() if v is not Duration} == {}


# -- agent status on the embedded store ---------------------------------------------------------

def test_agent_status_on_the_embedded_store_says_agents_are_not_used(gravity: Gravity) -> None:
    gravity.create(ON_A_NODE)
    out = gravity("agent", "status", check=0).stdout
    assert out.startswith("agents are not used with the embedded store (sqlite://")
    assert "every node runs its phases locally" in out
    assert "Offline" not in out and "node-1" not in out
    proc = gravity("agent", "status", "-o", "json", check=0)
    assert json.loads(proc.stdout) == []
    assert "agents are not used with the embedded store" in proc.stderr
    # Forced to dispatch to agents, the embedded store lists the nodes that need one.
    forced = gravity("agent", "status", GRAVITY_DISPATCH="agents", check=0).stdout
    assert re.search(r"^node-1 +Offline", forced, re.MULTILINE)


# -- help ---------------------------------------------------------------------------------------

def test_join_help_names_expand_as_what_it_is_an_alias_of(gravity: Gravity) -> None:
    join = gravity("join", "--help", check=0).stdout
    assert join.startswith("Usage: gravity join [OPTIONS]")
    assert "`gravity join` is an alias of `gravity expand`." in join
    assert "alias: `gravity join`" not in join and "alias of `gravity join`" not in join
    examples = join.split("Example:", 1)[1].split("Options:", 1)[0].split()
    assert "expand" not in examples and "join" in examples
    expand = gravity("expand", "--help", check=0).stdout
    assert "alias" not in expand and "gravity expand --node node-4" in expand


LONG_RUNNING = [["install"], ["expand"], ["join"], ["upgrade"], ["remove"], ["leave"],
                ["uninstall"], ["plan", "execute"], ["plan", "resume"], ["rollback"],
                ["backup"], ["restore"]]


@pytest.mark.parametrize("command", LONG_RUNNING, ids=" ".join)
def test_long_running_commands_show_examples_as_written(
        gravity: Gravity, command: list[str]) -> None:
    text = gravity(*command, "--help", check=0).stdout
    section = text.split("\n  Example:\n", 1)[1].split("\n\n", 1)[0]
    examples = section.splitlines()
    assert examples, text
    for line in examples:  # one example per line, indented under the heading, never rewrapped
        assert f"{line} ".startswith(f"    gravity {' '.join(command)} "), line
        assert len(line) <= 80, line
