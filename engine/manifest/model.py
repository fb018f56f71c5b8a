"""The typed Image Manifest: frozen dataclasses for both kinds (Cluster and Bundle).
Defaults here are the documented defaults; `Manifest.to_dict()` turns one back into YAML data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from engine.manifest.hooks import Hook, HookName
from engine.manifest.requirements import NodeProfile
from engine.manifest.serialize import to_plain
from engine.manifest.system import (
    DEFAULT_STORAGE_DRIVER,
    Docker,
    Etcd,
    Kubelet,
    Runtime,
    StorageDriver,
    SystemOptions,
)
from engine.manifest.units import ByteSize, FileMode, PortRange, TransferRate


class Kind(StrEnum):
    """The two manifest kinds; each has its own apiVersion (see API_VERSIONS)."""

    CLUSTER = "Cluster"
    BUNDLE = "Bundle"


API_VERSIONS: dict[Kind, str] = {
    Kind.CLUSTER: "cluster.gravitational.io/v2",
    Kind.BUNDLE: "bundle.gravitational.io/v2",
}


class CloudProvider(StrEnum):
    """Cloud integration chosen by `providers.default`; unset means auto-detect at install."""

    AWS = "aws"
    GCE = "gce"
    GENERIC = "generic"


class NetworkType(StrEnum):
    """Overlay network of the generic provider; vxlan (flannel) is the default."""

    VXLAN = "vxlan"
    WIREGUARD = "wireguard"
    CALICO = "calico"


@dataclass(frozen=True)
class Metadata:
    """Name (one alphanumeric word) and SemVer version of the image, plus free text."""

    name: str
    resource_version: str
    description: str | None = None
    author: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """A Kubernetes service shown to the user after install (or used as a setup screen)."""

    name: str
    description: str | None = None
    selector: Mapping[str, str] = field(default_factory=dict)
    protocol: str | None = None
    service_name: str | None = None
    hidden: bool = False


@dataclass(frozen=True)
class AwsTerraform:
    """Terraform scripts (already resolved from their URIs) for AWS provisioning."""

    script: str | None = None
    instance_script: str | None = None


@dataclass(frozen=True)
class AwsProvider:
    """AWS settings: allowed regions (empty means all) and Terraform scripts."""

    regions: tuple[str, ...] = ()
    terraform: AwsTerraform | None = None


@dataclass(frozen=True)
class GenericNetwork:
    """Network settings of the generic (on-premise) provider."""

    type: NetworkType = NetworkType.VXLAN


@dataclass(frozen=True)
class GenericProvider:
    """The generic provider, used for on-premise installs."""

    network: GenericNetwork = field(default_factory=GenericNetwork)


@dataclass(frozen=True)
class Providers:
    """Cloud and generic provider overrides; `default` None means auto-detect."""

    default: CloudProvider | None = None
    aws: AwsProvider | None = None
    generic: GenericProvider | None = None


@dataclass(frozen=True)
class Eula:
    """End user license agreement text, already read from its URI."""

    source: str


@dataclass(frozen=True)
class FlavorNode:
    """How many servers of one profile a flavor needs."""

    profile: str
    count: int


@dataclass(frozen=True)
class Flavor:
    """A named initial cluster size: servers per profile."""

    name: str
    description: str | None = None
    nodes: tuple[FlavorNode, ...] = ()


@dataclass(frozen=True)
class Flavors:
    """The flavor choice offered by the installer; `default` None means the first item."""

    prompt: str | None = None
    description: str | None = None
    default: str | None = None
    items: tuple[Flavor, ...] = ()


@dataclass(frozen=True)
class Installer:
    """Installer behaviour: EULA, flavors and custom setup screens (endpoint names)."""

    eula: Eula | None = None
    flavors: Flavors | None = None
    setup_endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class License:
    """Whether a license must be entered to install."""

    enabled: bool = False


@dataclass(frozen=True)
class OpenEBS:
    """OpenEBS persistent storage; off by default."""

    enabled: bool = False


@dataclass(frozen=True)
class Storage:
    """Persistent storage options."""

    openebs: OpenEBS = field(default_factory=OpenEBS)


@dataclass(frozen=True)
class Extension:
    """A pre-packaged system extension; all are enabled by default."""

    disabled: bool = False


@dataclass(frozen=True)
class Extensions:
    """The system extensions that may be switched off."""

    logs: Extension = field(default_factory=Extension)
    monitoring: Extension = field(default_factory=Extension)
    kubernetes: Extension = field(default_factory=Extension)
    catalog: Extension = field(default_factory=Extension)


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated Image Manifest with every URI field resolved to its content."""

    api_version: str
    kind: Kind
    metadata: Metadata
    base_image: str | None = None
    release_notes: str | None = None
    logo: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    providers: Providers = field(default_factory=Providers)
    installer: Installer = field(default_factory=Installer)
    node_profiles: tuple[NodeProfile, ...] = ()
    license: License = field(default_factory=License)
    storage: Storage = field(default_factory=Storage)
    system_options: SystemOptions = field(default_factory=SystemOptions)
    extensions: Extensions = field(default_factory=Extensions)
    hooks: tuple[Hook, ...] = ()

    def hook(self, name: HookName | str) -> Hook | None:
        """The defined hook of that name, or None when the manifest leaves it empty."""
        wanted = str(name.value if isinstance(name, HookName) else name)
        return next((h for h in self.hooks if h.name.value == wanted), None)

    def profile(self, name: str) -> NodeProfile | None:
        """The node profile of that name, or None."""
        return next((p for p in self.node_profiles if p.name == name), None)

    def flavor(self, name: str) -> Flavor | None:
        """The installer flavor of that name, or None."""
        flavors = self.installer.flavors
        return next((f for f in flavors.items if f.name == name), None) if flavors else None

    @property
    def default_flavor(self) -> Flavor | None:
        """`installer.flavors.default`, else the first flavor, else None."""
        flavors = self.installer.flavors
        if flavors is None or not flavors.items:
            return None
        if flavors.default is not None:
            return self.flavor(flavors.default)
        return flavors.items[0]

    def to_dict(self) -> dict[str, object]:
        """The normalized manifest (camelCase keys, defaults explicit, URIs resolved).

        Loading the result again yields an equal Manifest; `gravity manifest show` prints it.
        """
        plain = to_plain(self)
        assert isinstance(plain, dict)
        return plain


__all__ = [
    "API_VERSIONS",
    "DEFAULT_STORAGE_DRIVER",
    "AwsProvider",
    "AwsTerraform",
    "ByteSize",
    "CloudProvider",
    "Docker",
    "Endpoint",
    "Etcd",
    "Eula",
    "Extension",
    "Extensions",
    "FileMode",
    "Flavor",
    "FlavorNode",
    "Flavors",
    "GenericNetwork",
    "GenericProvider",
    "Installer",
    "Kind",
    "Kubelet",
    "License",
    "Manifest",
    "Metadata",
    "NetworkType",
    "OpenEBS",
    "PortRange",
    "Providers",
    "Runtime",
    "Storage",
    "StorageDriver",
    "SystemOptions",
    "TransferRate",
]
