"""The executors cluster operations use, gathered for the registry: checks, bootstrap, package,
health, gc, file, hook, kubectl, teardown, forget, backup, restore, collect, license,
service-user and node-labels.
"""

from __future__ import annotations

from engine.executors.archive import (
    BackupExecutor,
    CollectExecutor,
    LicenseExecutor,
    RestoreExecutor,
)
from engine.executors.checks import ChecksExecutor
from engine.executors.hooks import HookExecutor
from engine.executors.kube import KubectlExecutor
from engine.executors.labels import NodeLabelsExecutor
from engine.executors.lifecycle import ForgetExecutor, TeardownExecutor
from engine.executors.nodes import (
    BootstrapExecutor,
    FileExecutor,
    GcExecutor,
    HealthExecutor,
    PackageExecutor,
)
from engine.executors.users import ServiceUserExecutor

EXECUTORS = (ChecksExecutor, BootstrapExecutor, PackageExecutor, HealthExecutor, GcExecutor,
             FileExecutor, HookExecutor, KubectlExecutor, TeardownExecutor, ForgetExecutor,
             BackupExecutor, RestoreExecutor, CollectExecutor, LicenseExecutor,
             ServiceUserExecutor, NodeLabelsExecutor)
