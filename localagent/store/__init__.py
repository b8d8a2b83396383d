"""The model store: get a verified GGUF onto this disk and find it again with the network off.

Layout under settings.models_dir():
    manifests/<alias>/<quant>.json   one per installed model (written atomically)
    hub/<repo>/<file>                pulled files
    imported/<name>/<file>           copies of `models import`
    bundled/<alias>/<file>           bundled models shipped in chunks, assembled once
    .partial/<sha256>.part           an interrupted pull, continued by the next one
    .paths/<key>.json                sha256 and header of .gguf files used by path

A manifest records where the file is and what it was when verified (sha256, size, mtime). A
file whose size and mtime still match is trusted without re-hashing; one that changed is
hashed again. Bundled models are registered where pip put them, not copied.

The parts, each a module here: manifests (the records and their files), bundled (models pip
installed), resolve and download (a name to a verified file), installed (list and remove),
importing, verify, footprint (the RAM a model needs) and overview (`models list`, the fit
check). Callers use what this module exports: `from localagent import store; store.resolve(...)`.
"""

from localagent.store.bundled import bundled_source
from localagent.store.disk import sha256_file
from localagent.store.footprint import Footprint, default_context, footprint
from localagent.store.importing import import_file
from localagent.store.installed import InstalledModel, installed, remove
from localagent.store.manifests import BrokenManifest, Manifest, Source
from localagent.store.overview import ModelStatus, check_fits, model_status, overview
from localagent.store.resolve import ResolvedModel, pull, resolve, split_quant
from localagent.store.verify import Verification, verify

__all__ = [
    "BrokenManifest",
    "Footprint",
    "InstalledModel",
    "Manifest",
    "ModelStatus",
    "ResolvedModel",
    "Source",
    "Verification",
    "bundled_source",
    "check_fits",
    "default_context",
    "footprint",
    "import_file",
    "installed",
    "model_status",
    "overview",
    "pull",
    "remove",
    "resolve",
    "sha256_file",
    "split_quant",
    "verify",
]
