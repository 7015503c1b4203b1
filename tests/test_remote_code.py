"""Baichuan's remote code as users load it: every release through ``from_pretrained`` with
``trust_remote_code``, its tokenizer, imports it never runs, tensors transformers leaves
unmaterialised, and ``evalkit run`` end to end through an alias.

Runs on the stand-ins in tests/standins; with $EVALKIT_BAICHUAN_TEMPLATES pointing at
the real upstream files, on Baichuan's own code.
"""

import json
import re
import shutil
import sys

import pytest
import sentencepiece as spm
import torch
import transformers
from conftest import HF5, baichuan_checkpoint, ids, logits, tiny_baichuan
from typer.testing import CliRunner

from evalkit.errors import EvalkitError
from evalkit.loading import load_model
from evalkit.models import encoding_from_code, spec_from_config
from evalkit.patches import methods_for
from evalkit.remote_code import refuse_meta_attributes, without_missing_imports
from evalkit.sp_tokenizer import SentencePieceTokenizer
from tests.standins import ALIBI_RELEASES, RELEASES

TEXT = "The pass key is 71432. 百川大模型，上下文长度 8192 tokens!\n第二行：数字 0123 和 English. </s> tail"


def _own_tokenizer_class(folder):
    config = json.loads((folder / "tokenizer_config.json").read_text())
    ref = config["auto_map"]["AutoTokenizer"][0]
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    return get_class_from_dynamic_module(ref, str(folder))


@pytest.mark.parametrize("release", RELEASES)
def test_own_tokenizer_fails_and_evalkits_encodes_like_it_once_it_is_mended(release):
    folder = baichuan_checkpoint(release)
    with pytest.raises(Exception):  # the checkpoint's class, as shipped
        transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    loaded = load_model(
        spec_from_config(release, str(folder)),
        device="cpu",
        trust_remote_code=True,
    )
    tok = loaded.tokenizer
    assert isinstance(tok, SentencePieceTokenizer)

    own = _own_tokenizer_class(folder)

    class Mended(own):  # the original class, with its SentencePiece model read first
        def __init__(self, vocab_file, **kwargs):
            self.sp_model = spm.SentencePieceProcessor()
            self.sp_model.Load(vocab_file)
            super().__init__(vocab_file, **kwargs)

    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings = {k: v for k, v in settings.items() if k not in ("auto_map", "tokenizer_class")}
    mended = Mended(str(folder / "tokenizer.model"), **settings)
    assert tok(TEXT).input_ids == mended(TEXT).input_ids
    assert tok(TEXT, add_special_tokens=False).input_ids == mended(TEXT, add_special_tokens=False).input_ids
    # and independently of both classes: SentencePiece itself, with "</s>" read as the EOS token
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    head = TEXT.split(" </s>")[0]
    assert tok(head, add_special_tokens=False).input_ids == sp.encode(head)
    assert sp.eos_id() in tok(TEXT, add_special_tokens=False).input_ids
    assert (tok(TEXT).input_ids[0] == sp.bos_id()) == bool(settings.get("add_bos_token"))
    assert tok.decode(sp.encode(head)) == sp.decode(sp.encode(head))


def test_code_importing_a_missing_package_loads_and_any_use_of_it_is_one_clear_error():
    assert "xformers" not in sys.modules
    model = tiny_baichuan("baichuan-7b")  # its modeling file imports xformers at module level
    assert "xformers" not in sys.modules  # nothing left behind for other code
    with pytest.raises(ImportError):
        import xformers  # noqa: F401
    model.train()
    with pytest.raises(EvalkitError, match="pip install xformers"):
        model(input_ids=ids(8))


def test_a_missing_package_that_transformers_does_not_name_is_not_hidden():
    def load():
        raise ImportError("No module named 'something_else'")

    with pytest.raises(ImportError, match="something_else"):
        without_missing_imports(load)


@pytest.mark.parametrize("release", ["baichuan-7b", "baichuan2-7b"])
def test_rotary_caches_are_rebuilt_after_loading_to_equal_a_model_built_directly(release):
    """transformers 5 leaves Baichuan2-7B's plain-attribute caches on the meta device and
    Baichuan-7B's non-persistent cache buffers uninitialised; evalkit's loaded model must equal
    the same code and weights built without the meta device (from_config + state dict)."""
    from safetensors.torch import load_file

    folder = baichuan_checkpoint(release)
    loaded = tiny_baichuan(release)
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    direct = without_missing_imports(
        lambda: transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    )
    direct.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    direct.eval()
    x = ids(40)
    torch.testing.assert_close(logits(loaded, x), logits(direct, x), rtol=1e-5, atol=1e-5)
    if HF5 and release == "baichuan2-7b":  # the fact being repaired
        plain = without_missing_imports(
            lambda: transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True),
        )
        assert plain.model.layers[0].self_attn.rotary_emb.cos_cached.is_meta


def test_a_tensor_left_on_the_meta_device_is_refused_in_one_line():
    model = tiny_baichuan("baichuan2-13b")
    model.model.layers[1].self_attn.stale = torch.empty(3, device="meta")
    with pytest.raises(EvalkitError, match=r"model\.layers\.1\.self_attn\.stale .* meta device"):
        refuse_meta_attributes(model)


@pytest.mark.parametrize("release", RELEASES)
def test_encoding_is_read_from_the_modeling_code(release):
    folder = baichuan_checkpoint(release)
    config = json.loads((folder / "config.json").read_text())
    assert encoding_from_code(str(folder), config) == ("alibi" if release in ALIBI_RELEASES else "rope")


@pytest.mark.parametrize("release", RELEASES)
def test_evalkit_run_through_the_alias_with_every_method_and_both_tasks(release, tmp_path, monkeypatch):
    from evalkit.cli import app
    from evalkit.models import MODELS

    spec = MODELS.get(release)
    monkeypatch.chdir(tmp_path)  # evalkit.toml points the alias at the tiny checkpoint
    (tmp_path / "evalkit.toml").write_text(
        f'[models.{release}]\nsource = "{baichuan_checkpoint(release)}"\ntrained_len = 64\n'
    )
    from evalkit.patches import METHODS

    # every method Baichuan's layout takes with its defaults (attention hooks need separate q/k/v
    # projections: refused on W_pack; longrope needs a factors file)
    methods = ",".join(
        m
        for m in methods_for(spec.encoding)
        if not METHODS.get(m).attention and all(p.default is not None or p.derive for p in METHODS.get(m).params)
    )
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            release,
            "--trust-remote-code",
            "--method",
            methods,
            "--task",
            "passkey,ppl",
            "--len",
            "160",
            "--out",
            "res",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    import csv

    with open(tmp_path / "res" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == set(methods.split(","))
    assert {r["task"] for r in rows} == {"passkey", "ppl"}
    assert all(r["status"] == "ok" and r["model"] == release for r in rows)
    ppl = {r["method"]: float(r["ppl"]) for r in rows if r["task"] == "ppl"}
    assert all(v > 1 and v == v for v in ppl.values())
    assert len(set(round(v, 6) for v in ppl.values())) > 1  # the methods changed the model


def test_remote_code_without_the_flag_is_one_line(tmp_path, monkeypatch):
    from evalkit.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--model", str(baichuan_checkpoint("baichuan-7b")), "--len", "160"])
    assert result.exit_code == 2 and "--trust-remote-code" in result.output


def _broken_copy(tmp_path, release, edit, name):
    folder = tmp_path / name  # a folder name of its own: transformers caches remote modules by folder name
    shutil.copytree(baichuan_checkpoint(release), folder)
    edit(folder)
    return folder


@pytest.mark.parametrize(
    "damage, message",
    [
        ("syntax", "own code fails to load .* SyntaxError"),
        ("raises", "own code fails to load .* RuntimeError: broken at import"),
        ("no-modeling-file", r"modeling_baichuan\.py \(named in config\.json's auto_map\) is missing"),
        ("no-tokenizer-model", "no SentencePiece tokenizer.model"),
    ],
)
def test_broken_remote_code_is_one_line_and_exit_code_2(tmp_path, monkeypatch, damage, message):
    from evalkit.cli import app

    def edit(folder):
        code = folder / "modeling_baichuan.py"
        if damage == "syntax":
            code.write_text(code.read_text() + "\ndef broken(:\n")
        elif damage == "raises":
            code.write_text('raise RuntimeError("broken at import")\n' + code.read_text())
        elif damage == "no-modeling-file":
            code.unlink()
        else:
            (folder / "tokenizer.model").unlink()

    folder = _broken_copy(tmp_path, "baichuan2-13b", edit, f"broken-{damage}")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["run", "--model", str(folder), "--trust-remote-code", "--method", "none", "--len", "160", "--device", "cpu"],
    )
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output) and "Traceback" not in result.output


def test_a_mistyped_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    from evalkit.cli import app

    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    for given in ("ckpt/nope", "./ckpt/nope", str(tmp_path / "nope")):
        result = CliRunner().invoke(app, ["run", "--model", given, "--len", "160"])
        assert result.exit_code == 2 and "no such checkpoint folder" in result.output, (given, result.output)
