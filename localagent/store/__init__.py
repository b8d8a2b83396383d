"""The model store: get a verified GGUF onto this disk and find it again with the network off.

Layout under settings.models_dir():
    manifests/<alias>/<quant>.json   one per installed model (written atomically)
    hub/<repo>/<file>                pulled files (of catalog entries and `hf.co/` names; the
                                     parts of a split GGUF side by side, as llama.cpp wants)
    imported/<name>/<file>           copies of `models import`
    bundled/<alias>/<file>           bundled models shipped in chunks, assembled once
    .partial/<sha256>.part           an interrupted pull, continued by the next one
    .paths/<key>.json                sha256 and header of .gguf files used by path

A manifest records where the file is and what it was when verified (sha256, size, mtime). A
file whose size and mtime still match is trusted without re-hashing; one that changed is
hashed again. Bundled models are registered where pip put them, not copied, and so are the
models of other tools (Ollama, LM Studio, the Hugging Face and llama.cpp caches) that
`models scan` finds: `models rm` unregisters those and never deletes their files.

The parts, each a module here: manifests (the records and their files), bundled (models pip
installed), resolve and download (a name to a verified file), installed (list and remove),
importing, verify, footprint (the RAM a model needs), overview (`models list`, the fit
check), hubnames (hf.co/ and other tools' names, the choice of a repository's quant) and scan
(other tools' models, registered in place). Callers use what this module exports:
`from localagent import store; store.resolve(...)`.
"""

from localagent.store.bundled import bundled_source
from localagent.store.disk import sha256_file
from localagent.store.footprint import Footprint, default_context, footprint
from localagent.store.importing import import_file
from localagent.store.installed import InstalledModel, installed, remove
from localagent.store.manifests import BrokenManifest, Manifest, Source
from localagent.store.overview import HostedStatus, ModelStatus, check_fits, hosted_overview, model_status, overview
from localagent.store.resolve import ResolvedModel, pull, resolve, split_quant
from localagent.store.scan import Found, ScanRow, discover, scan_all
from localagent.store.verify import Verification, verify

__all__ = [
    "BrokenManifest",
    "Found",
    "Footprint",
    "HostedStatus",
    "InstalledModel",
    "Manifest",
    "ModelStatus",
    "ResolvedModel",
    "ScanRow",
    "Source",
    "Verification",
    "bundled_source",
    "check_fits",
    "default_context",
    "discover",
    "footprint",
    "hosted_overview",
    "import_file",
    "installed",
    "model_status",
    "overview",
    "pull",
    "remove",
    "resolve",
    "scan_all",
    "sha256_file",
    "split_quant",
    "verify",
]
