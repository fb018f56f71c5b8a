"""The `hook` executor: runs a manifest hook Job — locally, each container's command as a process
on the node (honouring restartPolicy, backoffLimit, activeDeadlineSeconds), or via `kubectl`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.blobs import BlobRef
from engine.errors import ExecutionError, PhaseTimeout
from engine.executors.base import ExecContext, Executor, run_process
from engine.executors.hookenv import TOOLS, build_resources, job_manifest, prepare, service_ids


def kubeconfig(ctx: ExecContext) -> str | None:
    """The kubeconfig to use, if the Kubernetes API is configured for this operation.

    Explicit opt-in only: `--kubeconfig` stored with the operation, or env
    GRAVITY_KUBECONFIG. A stray KUBECONFIG never sends hooks to some other cluster.
    """
    path = ctx.operation_data.get("kubeconfig") or os.environ.get("GRAVITY_KUBECONFIG")
    return str(path) if path else None


def values_file(ctx: ExecContext) -> Path:
    """Write the operation's merged Helm values where hooks read them (mode 0600)."""
    from engine.values import write_values_file

    path = ctx.workdir / "helm" / "values.yaml"
    write_values_file(path, ctx.operation_data.get("values") or {})
    return path


def parse_hook_job(name: str, source: str) -> Any:
    """The typed HookJob from a hook's job YAML (validated when the manifest was loaded)."""
    from engine.manifest.hooks import parse_job
    from engine.manifest.reader import Collector

    c = Collector(file=f"hook {name}")
    job = parse_job(c, source, f"hooks.{name}.job")
    if job is None:
        raise ExecutionError(f"hook {name}: job does not parse: "
                             + "; ".join(p.render() for p in c.problems), retryable=False)
    return job


def resources_dir(ctx: ExecContext) -> Path | None:
    """The image's files (the manifest and everything beside it) built on this node from the
    image's digest; None for a phase that names no image."""
    if not isinstance(ctx.data.get("image"), Mapping) or ctx.content is None:
        return None
    image = BlobRef.from_dict(ctx.data["image"], where=f"phase {ctx.phase_id} data.image")
    return ctx.content.materialize(image, ctx.workdir / "image")


def phase_env(ctx: ExecContext) -> dict[str, str]:
    """The phase's own additions (e.g. GRAVITY_TARGET_NODE, GRAVITY_BACKUP_DIR)."""
    extra = ctx.data.get("env")
    return {str(k): str(v) for k, v in extra.items()} if isinstance(extra, Mapping) else {}


def run_local(ctx: ExecContext, name: str, job: Any) -> str:
    """Run the job's containers in order as local processes; retry per the Job's policy.

    restartPolicy OnFailure restarts the failed container; Never starts the pod again from
    its first container. At most backoffLimit retries; activeDeadlineSeconds bounds it all.
    """
    setup = prepare(ctx, name, values_file(ctx), resources_dir(ctx))
    base_env = {**setup.env, **phase_env(ctx)}
    deadline = (time.monotonic() + job.active_deadline_seconds
                if job.active_deadline_seconds else None)
    failures = 0
    index = 0
    while index < len(job.containers):
        container = job.containers[index]
        if not container.argv:
            raise ExecutionError(f"hook {name}: container {container.name} has no command; "
                                 "the local runner cannot use the image's entrypoint",
                                 retryable=False)
        env = dict(base_env)
        env.update({e.name: e.value for e in container.env})
        cwd = Path(container.working_dir) if container.working_dir and Path(
            container.working_dir).is_dir() else ctx.workdir
        sub = ctx
        if deadline is not None:
            from dataclasses import replace

            sub = replace(ctx, deadline=min(deadline, ctx.deadline or deadline),
                          timeout=job.active_deadline_seconds)
        try:
            run_process(sub, setup.wrap(ctx, name, list(container.argv)), env=env, cwd=cwd,
                        what=f"container {container.name}")
            index += 1
        except PhaseTimeout as exc:
            raise ExecutionError(f"hook {name}: job exceeded activeDeadlineSeconds="
                                 f"{job.active_deadline_seconds}", exc.tail) from exc
        except ExecutionError as exc:
            failures += 1
            if failures > job.backoff_limit:
                raise ExecutionError(
                    f"hook {name} failed: {exc.message} (backoffLimit {job.backoff_limit} "
                    "reached)", exc.tail) from exc
            ctx.output(f"hook {name}: container {container.name} failed ({exc.message}); "
                       f"retry {failures} of {job.backoff_limit}")
            if job.restart_policy.value == "Never":
                index = 0
            time.sleep(min(10.0, 0.5 * 2 ** (failures - 1)))
    return f"hook {name} ran {len(job.containers)} container(s) locally"


def run_kubectl(ctx: ExecContext, name: str, job: Any, source: str, config: str) -> str:
    """Apply the Job with kubectl and wait for it to complete (the real cluster path), with
    the hook contract added to it (engine.executors.hookenv.job_manifest)."""
    import json

    import yaml


    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ExecutionError("kubectl not found on PATH but a kubeconfig is configured",
                             retryable=False)
    uid, gid = service_ids(ctx)
    base = [kubectl, "--kubeconfig", config, "--namespace", job.namespace]
    hooks_dir = ctx.workdir / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    secret = f"{job.name}-values"
    values = values_file(ctx)
    secret_doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": secret, "namespace": job.namespace}, "type": "Opaque",
        "stringData": {"values.yaml": values.read_text()}}
    resources = resources_dir(ctx)
    view = (build_resources(resources, hooks_dir / "resources", uid, gid)
            if resources is not None else None)
    tools = {t: os.path.realpath(p) for t in TOOLS if (p := shutil.which(t)) is not None}
    manifest = job_manifest(yaml.safe_load(source), name=name, node=ctx.node, uid=uid,
                            gid=gid, values_secret=secret,
                            resources_host_path=str(view) if view else None, tools=tools)
    spec = hooks_dir / f"{name}-{ctx.operation_id}.json"
    spec.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                "items": [secret_doc, manifest]}, indent=2))
    run_process(ctx, [*base, "delete", "job", job.name, "--ignore-not-found"],
                what=f"kubectl delete job {job.name}")
    run_process(ctx, [*base, "apply", "-f", str(spec)], what=f"kubectl apply hook {name}")
    wait = job.active_deadline_seconds or int(ctx.timeout or 600)
    run_process(ctx, [*base, "wait", "--for=condition=complete", f"job/{job.name}",
                      f"--timeout={wait}s"], what=f"kubectl wait hook {name}")
    return f"hook {name} completed as Kubernetes job {job.namespace}/{job.name}"


def run_hook(ctx: ExecContext, name: str, source: str) -> str:
    job = parse_hook_job(name, source)
    config = kubeconfig(ctx)
    if config:
        return run_kubectl(ctx, name, job, source, config)
    return run_local(ctx, name, job)


def run_rollback_hook(ctx: ExecContext) -> str | None:
    """Run the hook a phase names for its rollback (`data.rollback_hook`), if any."""
    spec = ctx.data.get("rollback_hook")
    if not spec:
        return None
    return run_hook(ctx, spec["hook"], spec["source"])


class HookExecutor(Executor):
    """Runs one (or several, in order) manifest hooks; rollback runs `rollback_hook` if set."""

    name = "hook"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        hooks = data.get("hooks")
        if not isinstance(hooks, list) or not hooks or not all(
            isinstance(h, Mapping) and isinstance(h.get("hook"), str)
            and isinstance(h.get("source"), str) for h in hooks
        ):
            return ["`hooks` must be a non-empty list of {hook, source}"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        notes = [run_hook(ctx, h["hook"], h["source"]) for h in ctx.data["hooks"]]
        return "; ".join(notes)

    def rollback(self, ctx: ExecContext) -> str | None:
        return run_rollback_hook(ctx) or "no rollback hook defined"
