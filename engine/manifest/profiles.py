"""Reading `nodeProfiles`: labels, taints, requirements (cpu, ram, os, volumes, devices, network,
customChecks), expandPolicy and per-profile providers and system options.
"""

from __future__ import annotations

import re

from engine.manifest.reader import Collector, Fields, child, describe
from engine.manifest.requirements import (
    CPURequirement,
    CustomCheck,
    Device,
    ExpandPolicy,
    NetworkRequirement,
    NodeProfile,
    OSRequirement,
    PortRequirement,
    ProfileAws,
    ProfileProviders,
    Protocol,
    RAMRequirement,
    Requirements,
    Taint,
    TaintEffect,
    Volume,
    label_problem,
)
from engine.manifest.system import read_profile_options
from engine.manifest.units import FileMode, PortRange, parse_mode, parse_port_range, parse_rate
from engine.manifest.units import parse_size as _parse_size
from engine.manifest.uri import Resolver

_PERMISSIONS_RE = re.compile(r"[rwm]{1,3}", re.ASCII)
MAX_ID = 2**32 - 1


def read_profiles(f: Fields, resolver: Resolver) -> tuple[NodeProfile, ...]:
    """Every item of `nodeProfiles`, in order; a broken item keeps its slot (name "")."""
    return tuple(_profile(f.c, raw, path, resolver) for raw, path in f.items("nodeProfiles"))


def _profile(c: Collector, raw: object, path: str, resolver: Resolver) -> NodeProfile:
    f = Fields.item(c, raw, path)
    name = f.string("name", required=True) if f.present else None
    description = f.string("description")
    labels = f.string_map("labels")
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem:
            c.error(child(f.at("labels"), key), problem)
    taints = tuple(t for t in (_taint(c, raw, p) for raw, p in f.items("taints")) if t)
    requirements = _requirements(f.mapping("requirements"), resolver)
    expand_policy = f.choice("expandPolicy", ExpandPolicy)
    providers = f.section("providers", lambda prov: ProfileProviders(aws=prov.section(
        "aws", lambda aws_f: ProfileAws(instance_types=aws_f.strings("instanceTypes")))))
    system_options = f.section("systemOptions", read_profile_options)
    f.finish()
    return NodeProfile(
        name=name or "",
        description=description,
        labels=labels,
        taints=taints,
        requirements=requirements,
        expand_policy=expand_policy,
        providers=providers,
        system_options=system_options,
    )


def _taint(c: Collector, raw: object, path: str) -> Taint | None:
    f = Fields.item(c, raw, path)
    if not f.present:
        return None
    key = f.string("key", required=True)
    value = f.string("value") or ""
    effect = f.choice("effect", TaintEffect)
    if f.raw("effect") is None:
        c.error(f.at("effect"), "is required: one of "
                + ", ".join(e.value for e in TaintEffect))
    f.finish()
    if key is not None:
        problem = label_problem(key, value)
        if problem:
            c.error(path, problem.replace("label", "taint"))
            return None
    return Taint(key=key, value=value, effect=effect) if key and effect else None


def _requirements(f: Fields, resolver: Resolver) -> Requirements:
    c = f.c
    cpu = f.section("cpu", _cpu)
    ram = f.section("ram", _ram)
    os_list = []
    for raw, path in f.items("os"):
        os_f = Fields.item(c, raw, path)
        os_name = os_f.string("name", required=True) if os_f.present else None
        versions = os_f.strings("versions")
        os_f.finish()
        if os_name is not None:
            os_list.append(OSRequirement(name=os_name, versions=versions))
    volumes = [v for raw, path in f.items("volumes") if (v := _volume(c, raw, path)) is not None]
    devices = [d for raw, path in f.items("devices") if (d := _device(c, raw, path)) is not None]
    network = _network(f.mapping("network")) if f.has("network") else None
    checks = []
    for raw, path in f.items("customChecks"):
        check_f = Fields.item(c, raw, path)
        description = check_f.string("description")
        script = check_f.string("script", required=True) if check_f.present else None
        check_f.finish()
        if script is not None:
            resolved = resolver.text(script, check_f.at("script"))
            if resolved is not None:
                checks.append(CustomCheck(script=resolved.text, description=description))
    f.finish()
    return Requirements(
        cpu=cpu,
        ram=ram,
        os=tuple(os_list),
        volumes=tuple(volumes),
        devices=tuple(devices),
        network=network,
        custom_checks=tuple(checks),
    )


def _cpu(f: Fields) -> CPURequirement | None:
    minimum = f.integer("min", minimum=1, required=True)
    return CPURequirement(min=minimum) if minimum is not None else None


def _ram(f: Fields) -> RAMRequirement | None:
    if not f.require("min"):
        return None
    size = f.parsed("min", _parse_size)
    return RAMRequirement(min=size) if size is not None else None


def _volume(c: Collector, raw: object, path: str) -> Volume | None:
    f = Fields.item(c, raw, path)
    if not f.present:
        return None
    vol_path = f.string("path", required=True)
    volume = Volume(
        path=vol_path or "",
        name=f.string("name", nonempty=True),
        target_path=f.string("targetPath", nonempty=True),
        capacity=f.parsed("capacity", _parse_size),
        filesystems=f.strings("filesystems"),
        min_transfer_rate=f.parsed("minTransferRate", parse_rate),
        create_if_missing=f.boolean("createIfMissing", True),
        skip_if_missing=f.boolean("skipIfMissing", False),
        uid=f.integer("uid", maximum=MAX_ID),
        gid=f.integer("gid", maximum=MAX_ID),
        mode=f.parsed("mode", parse_mode),
        recursive=f.boolean("recursive", False),
    )
    f.finish()
    return volume if vol_path is not None else None


def _device(c: Collector, raw: object, path: str) -> Device | None:
    f = Fields.item(c, raw, path)
    if not f.present:
        return None
    dev_path = f.string("path", required=True)
    permissions = f.string("permissions", nonempty=True) or "rw"
    if not _PERMISSIONS_RE.fullmatch(permissions) or len(set(permissions)) != len(permissions):
        c.error(
            f.at("permissions"),
            f"expected a combination of r (read), w (write) and m (mknod), got {permissions!r}",
        )
    device = Device(
        path=dev_path or "",
        permissions=permissions,
        file_mode=f.parsed("fileMode", parse_mode) or FileMode(0o666),
        uid=f.integer("uid", default=0, maximum=MAX_ID) or 0,
        gid=f.integer("gid", default=0, maximum=MAX_ID) or 0,
    )
    f.finish()
    return device if dev_path is not None else None


def _network(f: Fields) -> NetworkRequirement:
    rate = f.parsed("minTransferRate", parse_rate)
    ports: list[PortRequirement] = []
    for raw, path in f.items("ports"):
        port_f = Fields.item(f.c, raw, path)
        protocol = port_f.choice("protocol", Protocol) or Protocol.TCP
        ranges: list[PortRange] = []
        items = port_f.items("ranges")
        if port_f.present and not items:
            f.c.error(port_f.at("ranges"), 'is required: a list like ["8080", "10000-10005"]')
        for item, item_path in items:
            if isinstance(item, str | int) and not isinstance(item, bool):
                try:
                    ranges.append(parse_port_range(item))
                except ValueError as exc:
                    f.c.error(item_path, str(exc))
            else:
                f.c.error(
                    item_path,
                    f'expected a port or a range like "10000-10005", got {describe(item)}',
                )
        port_f.finish()
        if port_f.present:
            ports.append(PortRequirement(protocol=protocol, ranges=tuple(ranges)))
    f.finish()
    return NetworkRequirement(min_transfer_rate=rate, ports=tuple(ports))
