"""The Image Manifest (app.yaml): typed model, loader with all-at-once validation, hooks.
Import from here: `load_manifest`, `Manifest`, `HookName`, `HookJob` and the model types.
"""

from engine.manifest.hooks import (
    Container,
    EnvVar,
    Hook,
    HookJob,
    HookName,
    RestartPolicy,
)
from engine.manifest.loader import (
    MANIFEST_FILE,
    LoadedManifest,
    ManifestInvalid,
    find_manifest,
    load_manifest,
    parse_manifest,
)
from engine.manifest.model import *  # noqa: F403 - the model's __all__ is the public surface
from engine.manifest.model import __all__ as _model_all
from engine.manifest.requirements import *  # noqa: F403 - node profiles and their requirements
from engine.manifest.requirements import __all__ as _requirements_all

__all__ = [
    "MANIFEST_FILE",
    "Container",
    "EnvVar",
    "Hook",
    "HookJob",
    "HookName",
    "LoadedManifest",
    "ManifestInvalid",
    "RestartPolicy",
    "find_manifest",
    "load_manifest",
    "parse_manifest",
    *_model_all,
    *_requirements_all,
]
