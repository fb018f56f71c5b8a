"""The examples of docs/manifest.md and docs/values.md: the input files they show, and what
`gravity manifest validate|show` and `gravity values show` print for them, run for real.
"""

from __future__ import annotations

from pathlib import Path

from transcripts import GenerationError, Session, block, fenced

BROKEN_MANIFEST = """\
apiVersion: cluster.gravitational.io/v2
kind: Cluster
metadata:
  name: my-cluster
  resourceVersion: "1.2"
  owner: ops
installer:
  setupEndpoints: [Setup]
  flavors:
    default: medium
    items:
      - name: small
        nodes:
          - profile: worker
            count: 3
nodeProfiles:
  - name: db
    requirements:
      ram:
        min: 32 gigs
      network:
        ports:
          - protocol: tcp
            ranges: ["8080", "10005-10000"]
"""

SMALL_MANIFEST = """\
apiVersion: cluster.gravitational.io/v2
kind: Cluster
metadata:
  name: Tiny
  resourceVersion: 0.1.0
nodeProfiles:
  - name: node
    requirements:
      volumes:
        - path: /var/lib/data
          createIfMissing: true
hooks:
  install:
    job: |
      apiVersion: batch/v1
      kind: Job
      metadata:
        name: install
      spec:
        template:
          spec:
            containers:
              - name: install
                image: busybox
                command: ["/bin/sh", "-c", "echo installing"]
"""

VALUES = """\
image:
  repository: nginx
  tag: "1.9"
replicas: 1
ports: [80, 443]
debug: true
"""

PROD_VALUES = """\
replicas: 3
ports: [8443]
debug: null
"""

CERT = """\
-----BEGIN CERTIFICATE-----
MIIB...
-----END CERTIFICATE-----
"""

# Malformed --set expressions, grouped by the message they get (the page's table).
BAD_EXPRESSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("--set", ("a[x]=1", "a[]=1", "a[-1]=1")),
    ("--set", ("a", "a,b=1")),
    ("--set", ("a[0]",)),
    ("--set", (".a=1", "=1", ",a=1")),
    ("--set", ("a..b=1",)),
    ("--set", ("a[0]x=1",)),
    ("--set", ("a={x",)),
    ("--set", ("a={x}y",)),
    ("--set", ("a=\\",)),
    ("--set", ("a=1,a.b=2",)),
    ("--set", ("a[65537]=1",)),
    ("--set-file", ("a=/missing",)),
)


def write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (base / name).write_text(text, encoding="utf-8")


def manifest(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/manifest.md: validate a good and a broken manifest (with and without --strict),
    then show the good one normalized."""
    work = base / "manifest"
    work.mkdir()
    paths[str(work) + "/"] = ""  # the reader runs these where the files are
    s = Session(base / "manifest-state", paths)
    write(work, {"small.yaml": SMALL_MANIFEST, "broken.yaml": BROKEN_MANIFEST})
    small, broken = str(work / "small.yaml"), str(work / "broken.yaml")
    return {
        "manifest/broken-yaml": fenced(BROKEN_MANIFEST, "yaml"),
        "manifest/small-yaml": fenced(SMALL_MANIFEST, "yaml"),
        "manifest/validate": block(
            s.gravity("manifest", "validate", small),
            s.gravity("manifest", "validate", broken, expect=2),
            s.gravity("manifest", "validate", "--strict", broken, expect=2)),
        "manifest/show": block(s.gravity("manifest", "show", small)),
    }


def values(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/values.md: a malformed --set and the table of such errors, and values files,
    --set, --set-string and --set-file merged by `gravity values show`."""
    work = base / "values"
    work.mkdir()
    paths[str(work) + "/"] = ""
    s = Session(base / "values-state", paths)
    write(work, {"values.yaml": VALUES, "prod.yaml": PROD_VALUES, "tls.crt": CERT})
    out = {"values/values-yaml": fenced(VALUES, "yaml"),
           "values/prod-yaml": fenced(PROD_VALUES, "yaml"),
           "values/tls-crt": fenced(CERT, "text"),
           "values/bad-set": block(s.gravity("values", "show", "--set", "a[x]=1", expect=2))}
    rows = ["| Expression | Error |", "|---|---|"]
    results = iter(s.batch(*(("values", "show", option, expr)
                             for option, group in BAD_EXPRESSIONS for expr in group)))
    for option, group in BAD_EXPRESSIONS:
        said = set()
        for expr in group:
            code, output = next(results)
            if code != 2:
                raise GenerationError(f"values/errors: {option} {expr!r} exited {code}, "
                                      f"expected 2:\n{output}")
            said.add(output.splitlines()[0].split(f'{option} "{expr}": ', 1)[-1])
        if len(said) != 1:
            raise GenerationError(f"values/errors: {group} no longer get one message: {said}")
        shown = ", ".join(f"`{e}`" if option == "--set" else f"`{option} {e}`" for e in group)
        rows.append(f"| {shown} | {said.pop()} |")
    out["values/errors"] = "\n".join(rows) + "\n"
    file = str(work / "values.yaml")
    out["values/show"] = block(
        s.gravity("values", "show", "--values", file, "--values", str(work / "prod.yaml"),
                  "--set", "image.tag=1.11,nodeSelector.kubernetes\\.io/role=worker",
                  "--set-string", "build=007", "--set-file",
                  f"tls.cert={work / 'tls.crt'}",
                  "--set", "servers[0].port=80,servers[0].host=a\\,b"),
        s.gravity("values", "show", "--set", "replicas=2", "--set-string", "replicas=3",
                  "-o", "json"),
        s.gravity("values", "show", "--set-string", "replicas=3", "--set", "replicas=2",
                  "-o", "json"),
        s.gravity("values", "show"))
    return out


SCENARIOS = (manifest, values)
