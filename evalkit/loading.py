"""Loading a model once: device, dtype, attention kernel, quantisation, a merged adapter,
and the checks that it is what its spec says.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from evalkit.embedded import smollm2_dir
from evalkit.errors import EvalkitError
from evalkit.family import adapter_for
from evalkit.models import USER_FILE, ModelSpec, _looks_like_a_path, resolve_model
from evalkit.remote_code import load_tokenizer, refuse_meta_attributes, without_missing_imports

logger = logging.getLogger(__name__)

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


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
        if (
            not eq
            or not size
            or not (key.isdigit() or key in ("cpu", "disk"))
            or not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B)?", size, re.IGNORECASE)
        ):
            raise EvalkitError(
                f"--max-memory {item!r} is not DEVICE=SIZE", "e.g. --max-memory 0=70GiB,1=70GiB,cpu=200GiB"
            )
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
            raise EvalkitError(
                f"--max-memory names GPU {max(gpus)}, but this machine has no GPU",
                "name only cpu here, or run on a machine with GPUs",
            )
        raise EvalkitError(
            f"--max-memory names GPU {max(gpus)}, but this machine has {have} GPU(s)", f"name GPUs 0 to {have - 1}"
        )
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


def check_quantize(quantize: str | None) -> None:
    """``--quantize`` names a known kind (or is not given)."""
    if quantize is not None and quantize not in QUANTIZE:
        raise EvalkitError(f"--quantize {quantize}: unknown", "use 4bit or 8bit")


def check_adapter(adapter: str | None) -> None:
    """``--adapter`` is a folder a PEFT adapter was saved to (or is not given)."""
    if adapter is None:
        return
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise EvalkitError(
            f"--adapter {adapter}: no adapter_config.json there",
            "give the folder a PEFT adapter was saved to (save_pretrained)",
        )
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise EvalkitError(
            f"--adapter {adapter}: no adapter_model.safetensors or .bin there",
            "give the folder a PEFT adapter was saved to (save_pretrained)",
        )


def _quantization(quantize: str | None, device: str, dtype: str):
    """bitsandbytes' config for 4-/8-bit weights, which need a CUDA GPU."""
    check_quantize(quantize)
    if not quantize:
        return None
    if not device.startswith("cuda"):
        raise EvalkitError(
            f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device}",
            "leave --quantize out on the CPU",
        )
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise EvalkitError(f"--quantize {quantize} needs the bitsandbytes package", "pip install bitsandbytes")
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_compute_dtype=getattr(torch, dtype), bnb_4bit_quant_type="nf4"
    )


def apply_adapter(model, adapter: str):
    """A PEFT adapter (LoRA, ...) on the base model, merged into its weights so that every patch
    sees a plain transformers model."""
    check_adapter(adapter)
    path = Path(adapter).expanduser()
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
        raise EvalkitError(
            f"cannot apply the adapter {adapter}: {type(e).__name__}: {detail}",
            "check its adapter_config.json and that it was trained on this base model",
        ) from None
    logger.info(f"evalkit: adapter {path.name} merged into the base model")
    return merged


def load_model(
    spec: ModelSpec | str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    adapter: str | None = None,
    quantize: str | None = None,
    max_memory: dict | None = None,
) -> Loaded:
    """Load model and tokenizer once; ``device_map="auto"`` (accelerate) on GPUs, within
    ``max_memory`` per device when given; an ``adapter`` (PEFT) merged in; ``quantize`` 4bit /
    8bit through bitsandbytes (GPU only)."""
    spec = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    if spec.remote_code and not trust_remote_code:
        raise EvalkitError(
            f"{spec.name} runs Python code shipped with its checkpoint ({spec.source})",
            "pass --trust-remote-code if you trust that code",
        )
    device, dtype = pick_device(device), pick_dtype(dtype, device)
    kwargs = _load_kwargs(spec, device, dtype, quantize, max_memory)
    source = str(smollm2_dir()) if spec.source == "embedded:smollm2" else spec.source
    if _looks_like_a_path(source) and not Path(source).expanduser().is_dir():  # never a hub id
        raise EvalkitError(
            f"{spec.name}: its source {source} is not a folder here",
            f"fix the path in {USER_FILE}, or give an existing checkpoint folder",
        )
    t0 = time.perf_counter()
    tokenizer, model = _load_files(spec, source, kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    if adapter:
        model = apply_adapter(model, adapter)
    model.eval()
    prepare_loaded(model, spec)
    return Loaded(model, tokenizer, spec, device, dtype, time.perf_counter() - t0)


def _load_kwargs(spec: ModelSpec, device: str, dtype: str, quantize: str | None, max_memory: dict | None) -> dict:
    """``from_pretrained``'s arguments: dtype, attention kernel, device map, memory, quantisation."""
    import torch

    quantization = _quantization(quantize, device, dtype)
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
    return kwargs


def _load_files(spec: ModelSpec, source: str, kwargs: dict):
    """(tokenizer, model) from ``source``; a checkpoint that cannot be loaded is one line."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # evalkit shows one progress bar of its own
    try:
        tokenizer = load_tokenizer(source, spec.remote_code)
        return tokenizer, without_missing_imports(lambda: _from_pretrained(AutoModelForCausalLM, source, kwargs))
    except OSError as e:
        raise EvalkitError(
            f"cannot load {spec.name} from {source}: {str(e).splitlines()[0]}",
            "check the path / hub id, or point the alias to a local copy in evalkit.toml",
        ) from None
    except ImportError as e:  # a missing package transformers did not name as such
        raise EvalkitError(
            f"cannot load {spec.name}'s code: {str(e).splitlines()[0]}", "install the package it names"
        ) from None
    except EvalkitError:
        raise
    except Exception as e:  # noqa: BLE001 (a checkpoint transformers cannot load: its files, not evalkit)
        import transformers

        what = "own code" if spec.remote_code else "checkpoint"
        raise EvalkitError(
            f"{spec.name}'s {what} fails to load under transformers {transformers.__version__}: "
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}",
            "check its config.json, weights and .py files" + (", or try transformers 4.57" if spec.remote_code else ""),
        ) from None


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


def prepare_loaded(model, spec: ModelSpec) -> None:
    """Make a loaded model usable and check it is what the spec says: the family's adapter
    repairs what it knows (tensors transformers 5 left on the meta device), anything still
    on the meta device is refused, and the position encoding must match the spec's."""
    adapter = adapter_for(model)
    adapter.after_load(model)
    refuse_meta_attributes(model)
    try:
        stated = adapter.trained_len(model)
    except (AttributeError, TypeError, ValueError):  # the config states no length
        stated = spec.trained_len
    if stated != spec.trained_len:
        logger.info(
            f"evalkit: {spec.name}: using trained length {spec.trained_len} (the registry, evalkit.toml or "
            f"--trained-len) although its config says {stated}; scaling factors derive from {spec.trained_len}"
        )
    if adapter.encoding != spec.encoding:
        raise EvalkitError(
            f"{spec.name} was described as {spec.encoding} but its code uses {adapter.encoding}",
            f'fix encoding = "{adapter.encoding}" for it in {USER_FILE}',
        )


def ensure_length(model, length: int) -> None:
    """Let the model take inputs of ``length`` tokens where its family caps them (MPT)."""
    adapter_for(model).ensure_length(model, length)
