"""The typed node profiles of an Image Manifest: labels, expand policy and the requirements a
server must meet (cpu, ram, os, volumes, devices, network, custom checks) to take a profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from engine.manifest.units import ByteSize, FileMode, PortRange, TransferRate


class ExpandPolicy(StrEnum):
    """Whether nodes of a profile may be added after install; unset (None) allows it."""

    FIXED = "fixed"
    FIXED_INSTANCE = "fixed-instance"


class Protocol(StrEnum):
    """Transport of a port requirement."""

    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class CPURequirement:
    """Minimum number of CPU cores."""

    min: int


@dataclass(frozen=True)
class RAMRequirement:
    """Minimum amount of RAM."""

    min: ByteSize


@dataclass(frozen=True)
class OSRequirement:
    """An allowed OS: `name` matches ID in /etc/os-release; empty `versions` allows any."""

    name: str
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume:
    """A directory requirement (capacity, rate); with `target_path` also a container mount."""

    path: str
    name: str | None = None
    target_path: str | None = None
    capacity: ByteSize | None = None
    filesystems: tuple[str, ...] = ()
    min_transfer_rate: TransferRate | None = None
    create_if_missing: bool = True
    skip_if_missing: bool = False
    uid: int | None = None
    gid: int | None = None
    mode: FileMode | None = None
    recursive: bool = False


@dataclass(frozen=True)
class Device:
    """Host devices (a glob) made available inside the container."""

    path: str
    permissions: str = "rw"
    file_mode: FileMode = field(default_factory=lambda: FileMode(0o666))
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class PortRequirement:
    """Ports that must be free on the node."""

    protocol: Protocol = Protocol.TCP
    ranges: tuple[PortRange, ...] = ()


@dataclass(frozen=True)
class NetworkRequirement:
    """Network speed and free ports a node needs."""

    min_transfer_rate: TransferRate | None = None
    ports: tuple[PortRequirement, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CustomCheck:
    """A preflight shell script (already resolved) that must exit 0 on the node."""

    description: str | None = None
    script: str


@dataclass(frozen=True)
class Requirements:
    """What a server must offer to take a profile; everything is optional."""

    cpu: CPURequirement | None = None
    ram: RAMRequirement | None = None
    os: tuple[OSRequirement, ...] = ()
    volumes: tuple[Volume, ...] = ()
    devices: tuple[Device, ...] = ()
    network: NetworkRequirement | None = None
    custom_checks: tuple[CustomCheck, ...] = ()


@dataclass(frozen=True)
class ProfileAws:
    """AWS instance types a profile is restricted to (empty means any)."""

    instance_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileProviders:
    """Per-profile provider restrictions."""

    aws: ProfileAws | None = None


@dataclass(frozen=True)
class ProfileSystemOptions:
    """Per-profile system options: a custom base (planet) image."""

    base_image: str | None = None


@dataclass(frozen=True)
class NodeProfile:
    """A server role with its labels, requirements and expansion policy."""

    name: str
    description: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    requirements: Requirements = field(default_factory=Requirements)
    expand_policy: ExpandPolicy | None = None
    providers: ProfileProviders | None = None
    system_options: ProfileSystemOptions | None = None


__all__ = [
    "CPURequirement",
    "CustomCheck",
    "Device",
    "ExpandPolicy",
    "NetworkRequirement",
    "NodeProfile",
    "OSRequirement",
    "PortRequirement",
    "ProfileAws",
    "ProfileProviders",
    "ProfileSystemOptions",
    "Protocol",
    "RAMRequirement",
    "Requirements",
    "Volume",
]
