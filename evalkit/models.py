"""Model aliases and resolution of ``--model`` (loading is :mod:`evalkit.loading`).

``--model`` takes an alias from :data:`MODELS` (or from ``evalkit.toml`` in the
working directory), a local checkpoint directory, or a Hugging Face id. For the
last two, family, position encoding and trained length are read from the
config; ``trained_len`` overrides the latter (some configs state it wrongly).

The embedded default, ``smollm2-135m``, needs no hub (:mod:`evalkit.embedded`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.family import families_for, rope_lengths, stated_length, supported_types
from evalkit.registry import Registry
from evalkit.remote_code import checkpoint_file

DEFAULT_MODEL = "smollm2-135m"
USER_FILE = "evalkit.toml"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # Hugging Face id, local directory, or "embedded:smollm2"
    family: str  # llama | baichuan | bloom | mpt | mistral | qwen2 | ...
    encoding: str  # rope | alibi
    trained_len: int
    remote_code: bool = False

    def __post_init__(self):
        for name, kind in (
            ("source", str),
            ("family", str),
            ("encoding", str),
            ("trained_len", int),
            ("remote_code", bool),
        ):
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise EvalkitError(
                    f"model {self.name!r}: {name} must be a {kind.__name__}, got {value!r}", f"fix it in {USER_FILE}"
                )
        if self.encoding not in ("rope", "alibi"):
            raise EvalkitError(
                f"model {self.name!r}: encoding must be rope or alibi, got {self.encoding!r}", f"fix it in {USER_FILE}"
            )
        if self.trained_len <= 0:
            raise EvalkitError(f"model {self.name!r}: trained length must be positive", "pass --trained-len")


MODELS: Registry[ModelSpec] = Registry("model")
for _spec in [
    ModelSpec("smollm2-135m", "embedded:smollm2", "llama", "rope", 8192),
    ModelSpec("llama-7b", "huggyllama/llama-7b", "llama", "rope", 2048),
    ModelSpec("llama-13b", "huggyllama/llama-13b", "llama", "rope", 2048),
    ModelSpec("llama2-7b", "meta-llama/Llama-2-7b-hf", "llama", "rope", 4096),
    ModelSpec("llama2-13b", "meta-llama/Llama-2-13b-hf", "llama", "rope", 4096),
    ModelSpec("baichuan-7b", "baichuan-inc/Baichuan-7B", "baichuan", "rope", 4096, remote_code=True),
    ModelSpec("baichuan-13b", "baichuan-inc/Baichuan-13B-Base", "baichuan", "alibi", 4096, remote_code=True),
    ModelSpec("baichuan2-7b", "baichuan-inc/Baichuan2-7B-Base", "baichuan", "rope", 4096, remote_code=True),
    ModelSpec("baichuan2-13b", "baichuan-inc/Baichuan2-13B-Base", "baichuan", "alibi", 4096, remote_code=True),
    ModelSpec("bloom-560m", "bigscience/bloom-560m", "bloom", "alibi", 2048),
    ModelSpec("bloom-1b7", "bigscience/bloom-1b7", "bloom", "alibi", 2048),
    ModelSpec("bloom-7b1", "bigscience/bloom-7b1", "bloom", "alibi", 2048),
    ModelSpec("mpt-7b", "mosaicml/mpt-7b", "mpt", "alibi", 2048),
]:
    MODELS.add(_spec.name, _spec)


def user_models(path: Path | None = None) -> dict[str, ModelSpec]:
    """Aliases from ``evalkit.toml`` ([models.NAME] tables); an existing alias
    named there keeps the fields that are not given (e.g. only ``source``)."""
    path = path or Path.cwd() / USER_FILE
    if not path.is_file():
        return {}
    import tomllib

    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("models", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EvalkitError(f"{path} is not valid TOML: {e}", "fix the file or move it away") from None
    if not isinstance(tables, dict):
        raise EvalkitError(f"{path}: models must be a table of [models.NAME] tables", "see docs/models.md")
    out = {}
    for name, fields in tables.items():
        if not isinstance(fields, dict):
            raise EvalkitError(f"{path}: models.{name} must be a table", f'e.g. [models.{name}] source = "/data/x"')
        known = {f.name for f in dataclasses.fields(ModelSpec)} - {"name"}
        unknown = set(fields) - known
        if unknown:
            raise EvalkitError(
                f"{path}: unknown field(s) {sorted(unknown)} in [models.{name}]", f"allowed: {', '.join(sorted(known))}"
            )
        if not isinstance(fields.get("source", ""), str):
            raise EvalkitError(
                f"{path}: [models.{name}] source must be a string, got {fields['source']!r}",
                'e.g. source = "/data/llama-7b"',
            )
        if name in MODELS:
            out[name] = dataclasses.replace(MODELS.get(name), **fields)
        else:
            missing = {"source"} - set(fields)
            if missing:
                raise EvalkitError(f"{path}: [models.{name}] needs a source", 'e.g. source = "/data/llama-7b"')
            given = {k: v for k, v in fields.items() if k != "source"}
            if {"encoding", "trained_len"} <= set(given):  # all stated: no need to read the config
                out[name] = ModelSpec(name, fields["source"], given.pop("family", "custom"), **given)
            else:
                out[name] = spec_from_config(name, fields["source"], **given)
    return out


def all_models() -> dict[str, ModelSpec]:
    return {**dict(MODELS.items()), **user_models()}


def resolve_model(name: str | None, trained_len: int | None = None) -> ModelSpec:
    """An alias, a local directory or a Hugging Face id -> a ModelSpec."""
    name = name or DEFAULT_MODEL
    models = all_models()
    if name in models:
        spec = models[name]
    elif Path(name).expanduser().is_dir():
        spec = spec_from_config(name, str(Path(name).expanduser()))
    elif _looks_like_a_path(name):
        raise EvalkitError(
            f"--model {name}: no such checkpoint folder",
            "give an existing folder with a config.json, an alias (evalkit models) or a hub id",
        )
    elif "/" in name:
        spec = spec_from_config(name, name)
    else:
        MODELS.get(name)  # raises "unknown model ... did you mean"
        raise AssertionError
    return dataclasses.replace(spec, trained_len=trained_len) if trained_len else spec


def _looks_like_a_path(name: str) -> bool:
    """Not a hub id ("owner/name"): starts like a path, has more than one slash, or its
    first part is a local folder."""
    path = Path(name).expanduser()
    return "/" in name and (
        name.startswith(("/", ".", "~")) or name.count("/") > 1 or (path.parent != Path(".") and path.parent.is_dir())
    )


def spec_from_config(name: str, source: str, **given) -> ModelSpec:
    """Family, encoding and trained length read from a checkpoint's config.json, through the
    family table (:mod:`evalkit.families`)."""
    config = _read_config(source)
    model_type = config.get("model_type", "")
    if not isinstance(model_type, str):
        raise EvalkitError(
            f"{source}: config.json says model_type = {model_type!r}, not a string", "fix the checkpoint's config.json"
        )
    candidates = families_for(model_type, config)
    if len(candidates) > 1:  # Baichuan: 7B releases RoPE, 13B ALiBi, one model_type
        encoding = given.get("encoding") or encoding_from_code(source, config)
        candidates = [f for f in candidates if f.encoding == encoding]
    if candidates:
        family, encoding = candidates[0].name, candidates[0].encoding
    else:
        family, encoding = model_type or "custom", given.get("encoding") or ""
        if not encoding:
            raise EvalkitError(
                f"{source}: model type {model_type!r} is not supported", f"supported model types: {supported_types()}"
            )
    trained = _config_length(source, config, candidates[0] if candidates else None)
    if encoding == "rope":
        trained = rope_lengths(config, trained)[0]  # a shipped scaling's extended length
    fields = dict(family=family, encoding=encoding, trained_len=trained, remote_code=bool(config.get("auto_map")))
    fields.update(given)
    return ModelSpec(name, source, **fields)


def _config_length(source: str, config: dict, family=None) -> int:
    """The trained length a config states (the first of the family's length fields), else 2048."""
    value = stated_length(config, family)
    if value is None:
        return 2048
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise EvalkitError(
            f"{source}: config.json states its length as {value!r}, not a positive whole number",
            "fix the config, or give the length with --trained-len / evalkit.toml",
        )
    return value


def encoding_from_code(source: str, config: dict) -> str:
    """RoPE or ALiBi, read from the checkpoint's own modeling file (``auto_map``): the ALiBi
    releases define ``_get_interleave`` / ``_gen_alibi_mask``, the RoPE ones a ``RotaryEmbedding``."""
    ref = (config.get("auto_map") or {}).get("AutoModelForCausalLM", "")
    path = checkpoint_file(source, ref.split(".")[0] + ".py") if "." in ref else None
    if "." in ref and path is None:
        raise EvalkitError(
            f"{source}: its modeling file {ref.split('.')[0]}.py (named in config.json's auto_map) is missing",
            "copy the checkpoint's .py files into the folder",
        )
    code = path.read_text(encoding="utf-8", errors="replace") if path else ""
    if "_get_interleave" in code or "_gen_alibi_mask" in code:
        return "alibi"
    if "RotaryEmbedding" in code:
        return "rope"
    raise EvalkitError(
        f"{source}: cannot tell from its modeling code whether it uses RoPE or ALiBi",
        f'state it in {USER_FILE}: [models.NAME] source = "{source}", encoding = "rope" or "alibi"',
    )


def _read_config(source: str) -> dict:
    path = Path(source) / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvalkitError(f"{path} is not valid JSON ({e})", "fix the checkpoint's config.json") from None
        if not isinstance(config, dict):
            raise EvalkitError(
                f"{path} holds a JSON {type(config).__name__}, not an object", "fix the checkpoint's config.json"
            )
        return config
    if Path(source).exists():
        raise EvalkitError(f"{source} has no config.json", "point --model at a Hugging Face checkpoint directory")
    if _looks_like_a_path(source):
        raise EvalkitError(f"{source}: no such checkpoint folder", "give an existing folder, an alias or a hub id")
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source, "config.json")).read_text())
    except Exception as e:  # offline, unknown repo, gated: all the same to the user
        raise EvalkitError(
            f"cannot read the config of {source!r}: {type(e).__name__}",
            "use a local directory, an alias (evalkit models), or check the hub id / network",
        ) from None
