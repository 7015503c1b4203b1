"""Checkpoints that ship their own Python code (``trust_remote_code``), Baichuan's above all.

Remote code is written for one transformers version and one way of using it; an
evaluation needs only its forward pass. Three things stand in the way, and each
is handled here without changing any file evalkit does not own:

- **Imports the evaluation never runs.** transformers refuses a modeling file
  when a package it imports outside a ``try`` block is missing, even where only
  training or chat streaming uses it (Baichuan-7B: ``xformers``; Baichuan-13B:
  ``transformers_stream_generator``). :func:`without_missing_imports` loads such a
  file with stand-in modules for exactly the packages transformers named; any use
  of them raises a one-line error naming the package to install.
- **A tokenizer class that cannot be constructed** (Baichuan's reads
  ``vocab_size`` before loading its SentencePiece model): :func:`load_tokenizer`
  then builds :class:`evalkit.sp_tokenizer.SentencePieceTokenizer` from the
  checkpoint's ``tokenizer.model`` and special tokens.
- **Tensors left on the meta device**: transformers 5 builds models on the meta
  device and materialises parameters and buffers only; plain tensor attributes
  stay empty. The family's adapter rebuilds what it knows (Baichuan2-7B's rotary
  caches); :func:`refuse_meta_attributes` refuses anything left.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import re
import sys
import types
from pathlib import Path

from evalkit.errors import EvalkitError

logger = logging.getLogger(__name__)

# transformers.dynamic_module_utils.check_imports, 4.57 and 5.x alike
_MISSING = re.compile(r"requires the following packages that were not found in your environment: ([\w.\-, ]+)\.")


class _Absent(types.ModuleType):
    """A package that is not installed: any attribute is another _Absent, calling one raises."""

    def __init__(self, name: str, package: str):
        super().__init__(name)
        self.__path__ = []  # a package, so ``import pkg.sub`` works too
        self._package = package

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        child = _Absent(f"{self.__name__}.{attr}", self._package)
        setattr(self, attr, child)
        return child

    def __call__(self, *args, **kwargs):
        raise EvalkitError(
            f"this checkpoint's code called {self.__name__}, but {self._package} is not installed",
            f"pip install {self._package}",
        )


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, packages: list[str]):
        self.packages = packages

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.packages:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Absent(spec.name, spec.name.split(".")[0])

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def _absent(packages: list[str]):
    finder = _AbsentFinder(packages)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            if isinstance(sys.modules[name], _Absent):
                del sys.modules[name]


def missing_packages(error: BaseException) -> list[str]:
    """The packages named by transformers' "requires the following packages" ImportError."""
    found = _MISSING.search(str(error)) if isinstance(error, ImportError) else None
    return [p.strip() for p in found.group(1).split(",") if p.strip()] if found else []


def without_missing_imports(load):
    """``load()``; if transformers refuses remote code for missing packages, ``load()`` again
    with stand-ins for them (the loaded code keeps its references to the stand-ins)."""
    try:
        return load()
    except ImportError as e:
        packages = missing_packages(e)
        if not packages:
            raise
    logger.info(
        f"evalkit: the checkpoint's code imports {', '.join(packages)}, not installed here; loading it without "
        "them (Baichuan uses them only for training / chat streaming; any call into them stops with an error "
        "naming the package)"
    )
    with _absent(packages):
        return load()


def checkpoint_file(source: str, name: str) -> Path | None:
    """A file of a local checkpoint folder, or of a hub repo from the local cache / hub; None if absent."""
    local = Path(source) / name
    if local.is_file():
        return local
    if Path(source).exists():
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, name))
    except Exception:  # noqa: BLE001 (offline, missing file, gated: all mean "not available")
        return None


def load_tokenizer(source: str, remote_code: bool):
    """The checkpoint's own tokenizer; if its class fails to construct and the checkpoint has a
    SentencePiece ``tokenizer.model``, evalkit's equivalent built from that file."""
    from transformers import AutoTokenizer

    try:
        return without_missing_imports(lambda: AutoTokenizer.from_pretrained(source, trust_remote_code=remote_code))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 (any failure of the checkpoint's own class)
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        vocab = checkpoint_file(source, "tokenizer.model")
        if vocab is None:
            raise EvalkitError(
                f"the tokenizer of {source} fails to load ({reason}), and the checkpoint has no "
                "SentencePiece tokenizer.model for evalkit's own tokenizer to use instead",
                "check the checkpoint's config.json and tokenizer files",
            ) from None
    from evalkit.sp_tokenizer import SentencePieceTokenizer  # lazy: sentencepiece, transformers

    logger.info(
        f"evalkit: the checkpoint's own tokenizer class fails ({reason}); using evalkit's SentencePiece "
        "tokenizer over its tokenizer.model and special tokens"
    )
    return SentencePieceTokenizer.from_files(
        vocab, checkpoint_file(source, "tokenizer_config.json"), checkpoint_file(source, "special_tokens_map.json")
    )


def refuse_meta_attributes(model) -> None:
    """One line naming the first plain tensor attribute still on the meta device."""
    import torch

    for path, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and value.is_meta:
                import transformers

                where = f"{path}.{attr}" if path else attr
                raise EvalkitError(
                    f"{type(model).__name__}: {where} ({type(module).__name__}) is left on the meta device after "
                    f"loading under transformers {transformers.__version__} (a plain tensor attribute, not a buffer)",
                    "evalkit cannot rebuild it for this family; load it under transformers 4.57",
                )
