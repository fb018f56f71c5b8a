"""Lifecycle hooks: the hook names and the `batch/v1` Job each defined hook runs.
A hook's job is parsed into a typed HookJob so its containers can later run as local processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import yaml

from engine import yamlinput
from engine.manifest.reader import Collector, Fields, as_string, describe
from engine.manifest.units import shown


class HookName(StrEnum):
    """Every hook a manifest may define, in the order they are documented and listed."""

    INSTALL = "install"
    POST_INSTALL = "postInstall"
    UNINSTALL = "uninstall"
    PRE_UNINSTALL = "preUninstall"
    PRE_NODE_ADD = "preNodeAdd"
    POST_NODE_ADD = "postNodeAdd"
    PRE_NODE_REMOVE = "preNodeRemove"
    POST_NODE_REMOVE = "postNodeRemove"
    UPDATE = "update"
    POST_UPDATE = "postUpdate"
    ROLLBACK = "rollback"
    POST_ROLLBACK = "postRollback"
    STATUS = "status"
    LICENSE_UPDATED = "licenseUpdated"
    START = "start"
    STOP = "stop"
    DUMP = "dump"
    BACKUP = "backup"
    RESTORE = "restore"
    NETWORK_INSTALL = "networkInstall"
    NETWORK_UPDATE = "networkUpdate"
    NETWORK_ROLLBACK = "networkRollback"
    CLUSTER_PROVISION = "clusterProvision"
    CLUSTER_DEPROVISION = "clusterDeprovision"
    NODES_PROVISION = "nodesProvision"
    NODES_DEPROVISION = "nodesDeprovision"


class RestartPolicy(StrEnum):
    """Pod restart policy of a hook job; Kubernetes rejects `Always` for Jobs."""

    ON_FAILURE = "OnFailure"
    NEVER = "Never"


JOB_API_VERSION = "batch/v1"
JOB_KIND = "Job"
DEFAULT_NAMESPACE = "default"
DEFAULT_BACKOFF_LIMIT = 6  # the Kubernetes default for spec.backoffLimit


@dataclass(frozen=True)
class EnvVar:
    """An environment variable of a hook container (literal values only)."""

    name: str
    value: str = ""


@dataclass(frozen=True)
class Container:
    """A hook container: what to run (command + args), where, and with which environment."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    working_dir: str | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        """command followed by args: the process a local run starts (empty means the image's)."""
        return self.command + self.args


@dataclass(frozen=True)
class HookJob:
    """The parts of a hook's Kubernetes Job the engine uses; other Job fields are ignored."""

    name: str
    containers: tuple[Container, ...]
    namespace: str = DEFAULT_NAMESPACE
    restart_policy: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_seconds: int | None = None


@dataclass(frozen=True)
class Hook:
    """A defined hook: its name, its parsed job and the job's YAML text (after URI resolution)."""

    name: HookName
    job: HookJob
    source: str


def parse_job(c: Collector, text: str, path: str, origin: str | None = None) -> HookJob | None:
    """Parse a hook's job YAML; problems are recorded under `path` (e.g. `hooks.install.job`).

    `origin` names the file or URL the text came from, so messages can point at it.
    """
    where = f" (read from {origin})" if origin else ""
    try:
        raw = yamlinput.load(text)
    except yamlinput.TooLarge as exc:
        c.error(path, f"the job is too large{where}: {exc} (see Limits in docs/manifest.md)")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        c.error(path, f"the job is not valid YAML{where}{at}: {reason}")
        return None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML constructors can raise these for odd scalars (e.g. a bad !!timestamp).
        c.error(path, f"the job is not valid YAML{where}: {exc}")
        return None
    if not isinstance(raw, dict):
        c.error(path, f"expected a Kubernetes Job{where}, got {describe(raw)}")
        return None
    job = Fields(c, raw, path)
    ok = True
    for key, expected in (("apiVersion", JOB_API_VERSION), ("kind", JOB_KIND)):
        if job.raw(key) != expected:
            c.error(job.at(key), f"expected {expected!r}{where}, got {shown(job.raw(key))}")
            ok = False
    meta = job.mapping("metadata")
    name = meta.string("name", required=True)
    namespace = meta.string("namespace", nonempty=True) or DEFAULT_NAMESPACE
    spec = job.mapping("spec")
    backoff = spec.integer("backoffLimit", default=DEFAULT_BACKOFF_LIMIT)
    deadline = spec.integer("activeDeadlineSeconds", minimum=1)
    pod = spec.mapping("template").mapping("spec")
    restart = _restart_policy(pod)
    items = pod.items("containers")
    containers = tuple(
        found for item, item_path in items if (found := _container(c, item, item_path)) is not None
    )
    if not items and isinstance(pod.raw("containers"), list | None):
        c.error(pod.at("containers"), f"is required: a job needs at least one container{where}")
        ok = False
    if not ok or name is None or not containers:
        return None
    return HookJob(
        name=name,
        containers=containers,
        namespace=namespace,
        restart_policy=restart,
        backoff_limit=backoff if backoff is not None else DEFAULT_BACKOFF_LIMIT,
        active_deadline_seconds=deadline,
    )


def _restart_policy(pod: Fields) -> RestartPolicy:
    value = pod.raw("restartPolicy")
    if value is None:
        return RestartPolicy.ON_FAILURE
    for policy in RestartPolicy:
        if value == policy.value:
            return policy
    pod.c.error(
        pod.at("restartPolicy"),
        "expected OnFailure or Never (Kubernetes rejects other policies for a Job), "
        f"got {shown(value)}",
    )
    return RestartPolicy.ON_FAILURE


def _container(c: Collector, raw: object, path: str) -> Container | None:
    f = Fields.item(c, raw, path)
    if not f.present:
        return None
    name = f.string("name", required=True)
    image = f.string("image", required=True)
    env: list[EnvVar] = []
    for item, item_path in f.items("env"):
        var = Fields.item(c, item, item_path)
        var_name = var.string("name", required=True)
        if var.has("valueFrom") and not var.has("value"):
            var.raw("valueFrom")
            c.warn(
                var.at("valueFrom"),
                "valueFrom is not supported when hooks run as local processes; "
                "the variable is set to an empty string",
            )
        value = var.raw("value")
        text = "" if value is None else as_string(c, value, var.at("value"))
        if var_name is not None and text is not None:
            env.append(EnvVar(name=var_name, value=text))
    command = f.strings("command")
    args = f.strings("args")
    working_dir = f.string("workingDir")
    if name is None or image is None:
        return None
    return Container(
        name=name,
        image=image,
        command=command,
        args=args,
        env=tuple(env),
        working_dir=working_dir,
    )
