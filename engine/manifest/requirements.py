"""The typed node profiles of an Image Manifest: labels, expand policy and the requirements a
server must meet (cpu, ram, os, volumes, devices, network, custom checks) to take a profile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from engine.manifest.system import ProfileSystemOptions
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


class TaintEffect(StrEnum):
    """What a Kubernetes taint does to pods that do not tolerate it."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


@dataclass(frozen=True)
class Taint:
    """A taint a profile's nodes carry (Gravity's nodeProfiles[].taints)."""

    key: str
    effect: TaintEffect
    value: str = ""

    @property
    def text(self) -> str:
        """As `kubectl taint` takes it: `key[=value]:Effect`."""
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect.value}"


# Kubernetes' syntax for label (and taint) keys and values: an optional DNS-subdomain prefix
# and a slash, then a name of at most 63 characters; values at most 63, possibly empty.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
LABEL_VALUE = re.compile(rf"^({_NAME})?$")
LABEL_FORM = ("a key of letters, digits, '-', '_', '.' (at most 63, optionally after a DNS "
              "prefix and '/') and a value of the same characters (at most 63)")


def label_problem(key: str, value: str) -> str | None:
    """Why `key: value` is not a valid Kubernetes label, or None."""
    if not LABEL_KEY.match(key):
        return f"label key {key!r} is not valid: expected {LABEL_FORM}"
    if not LABEL_VALUE.match(value):
        return f"label value {value!r} of {key} is not valid: expected {LABEL_FORM}"
    return None


@dataclass(frozen=True)
class NodeProfile:
    """A server role with its labels, requirements and expansion policy."""

    name: str
    description: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    requirements: Requirements = field(default_factory=Requirements)
    expand_policy: ExpandPolicy | None = None
    providers: ProfileProviders | None = None
    system_options: ProfileSystemOptions | None = None


__all__ = [
    "LABEL_KEY",
    "LABEL_VALUE",
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
    "Taint",
    "TaintEffect",
    "Volume",
    "label_problem",
]
