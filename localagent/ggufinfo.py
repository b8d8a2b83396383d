"""What a GGUF file says about itself, read from its header.

The header is parsed in place from a memory map, without touching the weights, so this is how
`models info`, `import` and every pull check that a file is a whole, readable GGUF. The reader
is ours, not `gguf.GGUFReader`: that one builds a numpy view per array element (3 s for the
bundled model's 49k-token vocabulary, 54 s for a 262k one) and trusts declared counts, so a
133-byte file declaring a 2**40-element array kept it looping and growing for minutes. Here
every count is checked against the bytes left before it is used, numeric arrays are skipped
in one step, and the items walked are capped. `gguf` supplies only the type tables.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from localagent.engines.toolcalls import template_handles_tools
from localagent.errors import IntegrityError
from localagent.hardware import kv_cache_bytes


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    name: str | None
    parameters: int  # sum of the tensors' elements: exact, unlike the size label
    size_label: str | None
    quant: str | None  # from general.file_type, else the most common tensor type
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    tensor_count: int
    has_chat_template: bool
    template_knows_tools: bool
    # layers that keep a KV cache: all of them, except in recurrent and hybrid models (Mamba:
    # none; Qwen3.5: one in full_attention_interval; LFM2, Granite 4.0-H: those whose
    # per-layer head_count_kv is not 0). None: not known from the header.
    attention_layers: int | None = None

    @property
    def kv_bytes_per_token(self) -> int | None:
        """f16 K and V for one token across the layers that keep them; None when the header
        lacks the shape."""
        layers = self.block_count if self.attention_layers is None else self.attention_layers
        if layers == 0:
            return 0
        if not (layers and self.head_count):
            return None
        kv_heads = self.head_count_kv or self.head_count
        if self.key_length and self.value_length:
            head_dim = (self.key_length + self.value_length) / 2
        elif self.embedding_length:
            head_dim = self.embedding_length / self.head_count
        else:
            return None
        return kv_cache_bytes(layers, 1, kv_heads, head_dim)


# value types of the GGUF key-value section (ggml's gguf.h): scalars as struct codes
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_SMALLEST = {**{t: struct.calcsize(c) for t, c in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}
# numeric arrays this long or shorter are read (per-layer values: one per layer); longer ones
# (token scores and types, 150k+ elements) are skipped in one step, never element by element
SMALL_ARRAY = 4096
# keys, tensors and array elements read one at a time (strings, nested arrays, short numeric
# arrays): a real header has about 1M (a 262k-token vocabulary and its merges); counts that
# fit a large file could still ask for billions
MAX_ITEMS = 10_000_000
MAX_NESTING = 4  # arrays of arrays: none of llama.cpp's keys nest
MAX_TEXT = 1024 * 1024  # the most of one string value decoded (a chat template is ~10 KB)


class _Damaged(Exception):
    """The header contradicts itself or the file; the reason names where."""


@dataclass(frozen=True)
class _Tensor:
    type: int  # GGMLQuantizationType
    dims: tuple[int, ...]
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)


@dataclass(frozen=True)
class _Header:
    fields: dict[str, object]  # str, int, float, bool, a list of numbers, or None (skipped)
    tensors: list[_Tensor]
    data_end: int  # where the last tensor's data ends


class _Cursor:
    """Reads the header front to back, checking every declared length and count against the
    bytes left before it is used: a 133-byte file cannot declare 2**40 array elements."""

    def __init__(self, buf, order: str):
        self.buf, self.order, self.pos, self.items = buf, order, 0, 0

    def take(self, n: int, what: str) -> int:
        if n > len(self.buf) - self.pos:
            raise _Damaged(
                f"{what} at byte {self.pos}: {n} bytes declared, {len(self.buf) - self.pos} left in the file"
            )
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, code: str, what: str, n: int = 1) -> tuple:
        fmt = f"{self.order}{n}{code}"
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))

    def count(self, n: int, smallest: int, what: str) -> None:
        """`n` items of at least `smallest` bytes each are declared next: they must fit in the
        bytes left, and the items walked so far must stay under MAX_ITEMS."""
        left = len(self.buf) - self.pos
        if n * smallest > left:
            raise _Damaged(f"{what} at byte {self.pos} declares {n} items, more than the {left} bytes left can hold")
        self.items += n
        if self.items > MAX_ITEMS:
            raise _Damaged(f"the header holds more than {MAX_ITEMS} items, far more than a model's")

    def text(self, what: str) -> str:
        (n,) = self.unpack("Q", what)
        start = self.take(n, what)
        return bytes(self.buf[start : start + min(n, MAX_TEXT)]).decode("utf-8", "replace")

    def skip_strings(self, n: int) -> None:
        # the one loop per element left, over an 8-byte length each: ~0.3 s for 1M strings
        buf, pos, end = self.buf, self.pos, len(self.buf)
        length = struct.Struct(self.order + "Q")
        for _ in range(n):
            if pos + 8 > end:
                break
            pos += 8 + length.unpack_from(buf, pos)[0]
        else:
            if pos <= end:
                self.pos = pos
                return
        raise _Damaged(f"the array of {n} strings at byte {self.pos} runs past the end of the file")

    def value(self, vtype: int, what: str, depth: int = 0) -> object:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)[0]
        if vtype == _STRING:
            return self.text(what)
        if vtype != _ARRAY:
            raise _Damaged(f"{what} has the unknown value type {vtype}")
        sub, n = self.unpack("I", what)[0], self.unpack("Q", what)[0]
        if sub not in _SMALLEST:
            raise _Damaged(f"{what} is an array of the unknown value type {sub}")
        if sub in _SCALARS and n > SMALL_ARRAY:
            self.take(_SMALLEST[sub] * n, what)  # skipped by seeking past it
            return None
        self.count(n, _SMALLEST[sub], what)
        if sub in _SCALARS:
            return list(self.unpack(_SCALARS[sub], what, n))
        if sub == _STRING:
            self.skip_strings(n)
        else:
            if depth >= MAX_NESTING:
                raise _Damaged(f"{what} nests arrays more than {MAX_NESTING} deep")
            for _ in range(n):
                self.value(_ARRAY, what, depth + 1)
        return None


def _parse(buf) -> _Header:
    """The key-value section and the tensor table of the GGUF in `buf` (v2 or v3, either byte
    order), as `gguf.GGUFReader` reads them, bounded by the file's size."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    order = "<"
    (version,) = struct.unpack_from("<I", buf, 4) if len(buf) >= 8 else (0,)
    if version and version & 0xFFFF == 0:  # written on a big-endian machine
        order, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        raise _Damaged(f"GGUF version {version} is not one this reader knows (2 or 3)")
    cur = _Cursor(buf, order)
    cur.pos = 8
    n_tensors, n_kv = cur.unpack("Q", "the tensor and key counts", 2)
    cur.count(n_kv, 8 + 4 + 1, "the key-value section")
    fields: dict[str, object] = {}
    for _ in range(n_kv):
        key = cur.text("a key")
        (vtype,) = cur.unpack("I", f"the type of {key!r}")
        if key in fields:
            raise _Damaged(f"the key {key!r} appears twice")
        if key == "general.alignment" and vtype != 4:
            raise _Damaged("general.alignment is not a uint32")
        fields[key] = cur.value(vtype, repr(key))
    cur.count(n_tensors, 8 + 4 + 4 + 8, "the tensor table")
    tensors, names = [], set()
    for _ in range(n_tensors):
        name = cur.text("a tensor name")
        (n_dims,) = cur.unpack("I", f"the shape of tensor {name!r}")
        if n_dims > 8 or name in names:
            raise _Damaged(
                f"tensor {name!r} has {n_dims} dimensions" if n_dims > 8 else f"tensor {name!r} appears twice"
            )
        names.add(name)
        dims = cur.unpack("Q", f"the shape of tensor {name!r}", n_dims)
        ttype, offset = cur.unpack("I", f"the type of tensor {name!r}")[0], cur.unpack("Q", f"tensor {name!r}")[0]
        tensors.append(_Tensor(ttype, dims, offset))
    alignment = fields.get("general.alignment", 32)
    assert isinstance(alignment, int)  # checked above to be a uint32
    if alignment == 0 or alignment & (alignment - 1):
        raise _Damaged(f"general.alignment {alignment} is not a power of two")
    data_offset = -(-cur.pos // alignment) * alignment
    data_end = data_offset
    for t in tensors:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.type)]
        except (ValueError, KeyError):
            raise _Damaged(f"a tensor has the unknown type {t.type}") from None
        data_end = max(data_end, data_offset + t.offset + t.n_elements * size // block)
    return _Header(fields, tensors, data_end)


def _text(header: _Header, key: str) -> str | None:
    value = header.fields.get(key)
    return value if isinstance(value, str) else None


def _field(header: _Header, key: str):
    value = header.fields.get(key)
    # some converters store per-layer arrays (e.g. head_count_kv in OpenELM); take the largest
    if isinstance(value, list):
        return max(value) if value else None
    return value


def _attention_layers(header: _Header, arch: str, block_count: int | None) -> int | None:
    """How many layers keep a KV cache (see GGUFInfo.attention_layers)."""
    per_layer = header.fields.get(f"{arch}.attention.head_count_kv")
    if isinstance(per_layer, list):
        return sum(1 for v in per_layer if v)
    interval = _field(header, f"{arch}.full_attention_interval")
    if isinstance(interval, int) and interval > 0 and block_count:
        return block_count // interval
    if arch in ("mamba", "mamba2", "rwkv6", "rwkv7"):  # recurrent only: a state, no KV cache
        return 0
    return block_count


def _quant_name(header: _Header) -> str | None:
    from gguf import GGMLQuantizationType, LlamaFileType

    file_type = _field(header, "general.file_type")
    if isinstance(file_type, int):
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            name = None
        if name and name != "GUESSED":
            return {"ALL_F32": "F32"}.get(name, name.removeprefix("MOSTLY_"))
    counts = Counter(t.type for t in header.tensors if len(t.dims) > 1)
    if not counts:
        return None
    return GGMLQuantizationType(counts.most_common(1)[0][0]).name


def _header(path: Path) -> _Header:
    """The parsed header of `path`; IntegrityError if it is not a whole, readable GGUF."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
            if magic != b"GGUF":
                raise IntegrityError(f"{path} is not a GGUF file", hint="local models are single .gguf files")
            # mapped, not read: the header is read in place and the weights are never touched
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _parse(buf)
    except (OSError, ValueError) as exc:  # ValueError: mmap of a file emptied since its stat
        raise IntegrityError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    except _Damaged as exc:
        raise IntegrityError(
            f"{path} is not a whole GGUF file: it is truncated or damaged ({size} bytes): {exc}",
            hint="download or copy the file again",
        ) from exc
    if header.data_end > size:
        raise IntegrityError(
            f"{path} is truncated: its tensors need {header.data_end} bytes, the file has {size}",
            hint="download or copy the file again",
        )
    return header


def chat_templates(path: Path) -> dict[str, str]:
    """Every chat template in the header (`tokenizer.chat_template` and its named variants),
    read before llama-cpp-python compiles them while loading: a template is code from
    whoever made the file (engines/templates.py checks it first)."""
    header = _header(Path(path))
    return {
        key: value
        for key, value in header.fields.items()
        if key.startswith("tokenizer.chat_template") and isinstance(value, str)
    }


def read(path: Path) -> GGUFInfo:
    """The header facts of `path`. IntegrityError if it is not a whole, readable GGUF."""
    header = _header(Path(path))
    arch = _text(header, "general.architecture") or "unknown"

    def arch_int(key: str) -> int | None:
        value = _field(header, f"{arch}.{key}")
        # a count: a float one (some converters) is taken whole; negative, NaN or inf is no count
        if isinstance(value, float) and math.isfinite(value):
            value = int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    template = _text(header, "tokenizer.chat_template") or ""
    return GGUFInfo(
        architecture=arch,
        name=_text(header, "general.name"),
        parameters=sum(t.n_elements for t in header.tensors),
        size_label=_text(header, "general.size_label"),
        quant=_quant_name(header),
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=arch_int("attention.head_count_kv"),
        key_length=arch_int("attention.key_length"),
        value_length=arch_int("attention.value_length"),
        tensor_count=len(header.tensors),
        has_chat_template=bool(template),
        template_knows_tools=template_handles_tools(template),
        attention_layers=_attention_layers(header, arch, arch_int("block_count")),
    )
