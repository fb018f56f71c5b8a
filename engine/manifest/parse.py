"""Building a typed Manifest from the raw YAML mapping, section by section.
Problems are collected, never raised; the loader decides what to do with them.
"""

from __future__ import annotations

from engine.manifest.checks import cross_check
from engine.manifest.hooks import Hook, HookName, parse_job
from engine.manifest.model import (
    API_VERSIONS,
    AwsProvider,
    AwsTerraform,
    CloudProvider,
    Endpoint,
    Eula,
    Extension,
    Extensions,
    Flavor,
    FlavorNode,
    Flavors,
    GenericNetwork,
    GenericProvider,
    Installer,
    Kind,
    License,
    Manifest,
    Metadata,
    NetworkType,
    OpenEBS,
    Providers,
    Storage,
)
from engine.manifest.profiles import read_profiles
from engine.manifest.reader import Collector, Fields, as_string
from engine.manifest.system import read_system_options
from engine.manifest.units import is_semver, is_single_word
from engine.manifest.uri import Resolver

_KIND_BY_API = {api: kind for kind, api in API_VERSIONS.items()}


def build_manifest(c: Collector, raw: object, resolver: Resolver) -> Manifest:
    """The Manifest described by `raw`; only valid when `c.problems` stayed empty.

    Broken parts read as placeholders (an empty name, a Cluster kind) so that every later
    section and every cross-check still runs and reports its own problems.
    """
    f = Fields(c, raw, "")
    kind = _kind(f)
    metadata = _metadata(f)
    base_image = f.string("baseImage", nonempty=True)
    release_notes = _uri_text(f, "releaseNotes", resolver)
    logo = f.string("logo")
    if logo is not None:
        logo = resolver.logo(logo, f.at("logo"))
    endpoints = tuple(_endpoint(c, item, path) for item, path in f.items("endpoints"))
    providers = _providers(f.mapping("providers"), resolver)
    installer = _installer(f.mapping("installer"), resolver)
    profiles = read_profiles(f, resolver)
    license_ = f.read("license", lambda lic: License(enabled=lic.boolean("enabled", False)))
    storage = _storage(f.mapping("storage"))
    system_options = read_system_options(f.mapping("systemOptions"))
    extensions = _extensions(f.mapping("extensions"))
    hooks = _hooks(f.mapping("hooks"), resolver)
    f.finish()
    manifest = Manifest(
        api_version=API_VERSIONS[kind],
        kind=kind,
        metadata=metadata,
        base_image=base_image,
        release_notes=release_notes,
        logo=logo,
        endpoints=endpoints,
        providers=providers,
        installer=installer,
        node_profiles=profiles,
        license=license_,
        storage=storage,
        system_options=system_options,
        extensions=extensions,
        hooks=hooks,
    )
    cross_check(c, manifest)
    return manifest


def _kind(f: Fields) -> Kind:
    """The kind from apiVersion and kind; either one implies the other, neither means Cluster."""
    api_version = f.string("apiVersion", nonempty=True)
    kind_text = f.string("kind", nonempty=True)
    kind = None
    if kind_text is not None:
        kind = next((k for k in Kind if k.value == kind_text), None)
        if kind is None:
            f.c.error(f.at("kind"), f"expected Cluster or Bundle, got {kind_text!r}")
    if api_version is not None:
        by_api = _KIND_BY_API.get(api_version)
        if by_api is None:
            expected = " or ".join(API_VERSIONS.values())
            f.c.error(f.at("apiVersion"), f"expected {expected}, got {api_version!r}")
        elif kind is not None and kind is not by_api:
            f.c.error(
                f.at("kind"),
                f"expected {by_api.value} (apiVersion {api_version} is for that kind), "
                f"got {kind.value!r}",
            )
        else:
            kind = by_api
    return kind or Kind.CLUSTER


def _metadata(root: Fields) -> Metadata:
    if not root.require("metadata", "the image name and resourceVersion"):
        return Metadata(name="", resource_version="")
    f = root.mapping("metadata")
    if not f.present:
        return Metadata(name="", resource_version="")
    name = f.string("name", required=True)
    if name is not None and not is_single_word(name):
        f.c.error(
            f.at("name"), f"expected a single alphanumeric word (A-Z, a-z, 0-9), got {name!r}"
        )
        name = None
    version = f.string("resourceVersion", required=True)
    if version is not None and not is_semver(version):
        f.c.error(
            f.at("resourceVersion"),
            f"expected a SemVer 2.0 version like 1.2.3 or 1.2.3-alpha.1, got {version!r}",
        )
        version = None
    description = f.string("description")
    author = f.string("author")
    f.finish()
    return Metadata(
        name=name or "", resource_version=version or "", description=description, author=author
    )


def _uri_text(f: Fields, key: str, resolver: Resolver) -> str | None:
    value = f.string(key)
    if value is None:
        return None
    resolved = resolver.text(value, f.at(key))
    return resolved.text if resolved is not None else None


def _endpoint(c: Collector, raw: object, path: str) -> Endpoint:
    f = Fields.item(c, raw, path)
    endpoint = Endpoint(
        name=(f.string("name", required=True) if f.present else None) or "",
        description=f.string("description"),
        selector=f.string_map("selector"),
        protocol=f.string("protocol", nonempty=True),
        service_name=f.string("serviceName", nonempty=True),
        hidden=f.boolean("hidden", False),
    )
    f.finish()
    return endpoint


def _providers(f: Fields, resolver: Resolver) -> Providers:
    default = f.choice("default", CloudProvider)
    aws = f.section("aws", lambda aws_f: _aws(aws_f, resolver))
    generic = f.section("generic", lambda gen_f: GenericProvider(network=gen_f.read(
        "network", lambda net_f: GenericNetwork(
            type=net_f.choice("type", NetworkType) or NetworkType.VXLAN))))
    f.finish()
    return Providers(default=default, aws=aws, generic=generic)


def _aws(f: Fields, resolver: Resolver) -> AwsProvider:
    terraform = f.section("terraform", lambda tf: AwsTerraform(
        script=_uri_text(tf, "script", resolver),
        instance_script=_uri_text(tf, "instanceScript", resolver),
    ))
    return AwsProvider(regions=f.strings("regions"), terraform=terraform)


def _installer(f: Fields, resolver: Resolver) -> Installer:
    eula = f.section("eula", lambda eula_f: _eula(eula_f, resolver))
    flavors = f.section("flavors", lambda fl: _flavors(fl, resolver))
    # Broken items keep their slot (as "") so cross-check paths keep their indexes.
    setup = tuple(
        as_string(f.c, item, path, nonempty=True) or "" for item, path in f.items("setupEndpoints")
    )
    f.finish()
    return Installer(eula=eula, flavors=flavors, setup_endpoints=setup)


def _eula(f: Fields, resolver: Resolver) -> Eula | None:
    if not (f.present and f.require("source", "the EULA text or its file:// / https:// URI")):
        return None
    source = _uri_text(f, "source", resolver)
    return Eula(source=source) if source is not None else None


def _flavors(f: Fields, resolver: Resolver) -> Flavors:
    items = tuple(_flavor(f.c, raw, path) for raw, path in f.items("items"))
    if f.present and not items:
        f.c.error(f.at("items"), "is required: at least one flavor when flavors are defined")
    return Flavors(
        prompt=f.string("prompt"),
        description=_uri_text(f, "description", resolver),
        default=f.string("default", nonempty=True),
        items=items,
    )


def _flavor(c: Collector, raw: object, path: str) -> Flavor:
    f = Fields.item(c, raw, path)
    name = (f.string("name", required=True) if f.present else None) or ""
    description = f.string("description")
    nodes: list[FlavorNode] = []
    for item, item_path in f.items("nodes"):
        node_f = Fields.item(c, item, item_path)
        profile = node_f.string("profile", required=True) if node_f.present else None
        count = node_f.integer("count", minimum=1, required=node_f.present)
        node_f.finish()
        nodes.append(FlavorNode(profile=profile or "", count=count or 0))
    if f.present and not nodes:
        c.error(f.at("nodes"), "is required: at least one {profile, count} entry")
    f.finish()
    return Flavor(name=name, description=description, nodes=tuple(nodes))


def _storage(f: Fields) -> Storage:
    storage = Storage(openebs=f.read(
        "openebs", lambda openebs: OpenEBS(enabled=openebs.boolean("enabled", False))))
    f.finish()
    return storage


def _extensions(f: Fields) -> Extensions:
    found: dict[str, Extension] = {}
    for name in ("logs", "monitoring", "kubernetes", "catalog"):
        ext = f.mapping(name)
        found[name] = Extension(disabled=ext.boolean("disabled", False))
        ext.finish()
    f.finish()
    return Extensions(**found)


def _hooks(f: Fields, resolver: Resolver) -> tuple[Hook, ...]:
    """The defined hooks in HookName order; an empty hook (or an empty job) is not defined."""
    hooks: list[Hook] = []
    for name in HookName:
        if not f.has(name.value):
            f.raw(name.value)
            continue
        hook_f = f.mapping(name.value)
        job_value = hook_f.string("job")
        hook_f.finish()
        if not job_value:
            continue
        resolved = resolver.text(job_value, hook_f.at("job"))
        if resolved is None:
            continue
        job = parse_job(f.c, resolved.text, hook_f.at("job"), resolved.origin)
        if job is not None:
            hooks.append(Hook(name=name, job=job, source=resolved.text))
    f.finish()
    return tuple(hooks)
