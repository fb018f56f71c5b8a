"""`systemOptions`, cluster-wide and per node profile: the runtime version, docker's storage driver
and args, etcd's and kubelet's args, the runtime's own args, allowPrivileged — model and reading.

A profile's options are the same fields, each optional: what a profile sets replaces the
cluster-wide part (docker, etcd, kubelet, args, ...) for the nodes of that profile, as in Gravity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from engine.manifest.reader import Fields


class StorageDriver(StrEnum):
    """Docker storage drivers the runtime supports (the seeds: overlay, overlay2)."""

    OVERLAY = "overlay"
    OVERLAY2 = "overlay2"


DEFAULT_STORAGE_DRIVER = StorageDriver.OVERLAY2


@dataclass(frozen=True)
class Runtime:
    """Override of the Kubernetes runtime version (None means the latest available)."""

    version: str | None = None


@dataclass(frozen=True)
class Docker:
    """Docker daemon options; `storage_driver` None means the default (overlay2)."""

    storage_driver: StorageDriver | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Etcd:
    """Extra etcd command line arguments."""

    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kubelet:
    """Extra kubelet arguments and its hairpin mode."""

    args: tuple[str, ...] = ()
    hairpin_mode: str | None = None


@dataclass(frozen=True)
class SystemOptions:
    """Cluster-wide runtime behaviour of the system daemons."""

    runtime: Runtime | None = None
    docker: Docker = field(default_factory=Docker)
    etcd: Etcd = field(default_factory=Etcd)
    kubelet: Kubelet = field(default_factory=Kubelet)
    args: tuple[str, ...] = ()  # extra arguments to the runtime itself
    allow_privileged: bool = False


@dataclass(frozen=True)
class ProfileSystemOptions:
    """A profile's own system options; None (or empty args) means the cluster-wide one."""

    base_image: str | None = None
    runtime: Runtime | None = None
    docker: Docker | None = None
    etcd: Etcd | None = None
    kubelet: Kubelet | None = None
    args: tuple[str, ...] = ()
    allow_privileged: bool | None = None


def _docker(f: Fields) -> Docker:
    return Docker(storage_driver=f.choice("storageDriver", StorageDriver),
                  args=f.strings("args"))


def _kubelet(f: Fields) -> Kubelet:
    return Kubelet(args=f.strings("args"),
                   hairpin_mode=f.string("hairpinMode", nonempty=True))


def _runtime(f: Fields) -> Runtime:
    return Runtime(version=f.string("version", nonempty=True))


def _etcd(f: Fields) -> Etcd:
    return Etcd(args=f.strings("args"))


def read_system_options(f: Fields) -> SystemOptions:
    """The manifest's top-level `systemOptions` (missing parts read as their defaults)."""
    options = SystemOptions(
        runtime=f.section("runtime", _runtime),
        docker=f.read("docker", _docker),
        etcd=f.read("etcd", _etcd),
        kubelet=f.read("kubelet", _kubelet),
        args=f.strings("args"),
        allow_privileged=bool(f.boolean("allowPrivileged", False)),
    )
    f.finish()
    return options


def read_profile_options(f: Fields) -> ProfileSystemOptions:
    """A node profile's `systemOptions`: only what it sets."""
    privileged = f.boolean("allowPrivileged", False) if f.has("allowPrivileged") else None
    return ProfileSystemOptions(
        base_image=f.string("baseImage", nonempty=True),
        runtime=f.section("runtime", _runtime),
        docker=f.section("docker", _docker),
        etcd=f.section("etcd", _etcd),
        kubelet=f.section("kubelet", _kubelet),
        args=f.strings("args"),
        allow_privileged=privileged,
    )


__all__ = [
    "DEFAULT_STORAGE_DRIVER",
    "Docker",
    "Etcd",
    "Kubelet",
    "ProfileSystemOptions",
    "Runtime",
    "StorageDriver",
    "SystemOptions",
    "read_profile_options",
    "read_system_options",
]
