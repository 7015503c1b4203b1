"""evalkit's DCA and STRING against the authors' own code, on the embedded default (SmolLM2-135M).

    # the authors' files, fetched outside this repository (never committed):
    git --git-dir=/path/to/HKUNLP+ChunkLlama/repo show 2add4d7:chunkllama_attn_replace.py > /tmp/chunkllama.py
    git --git-dir=/path/to/justHungryMan+STRING/repo show b80b54e:string_for_llama.py > /tmp/string_ref.py
    # the transformers line they were written for (ChunkLlama's requirements.txt: 4.37.2)
    python -m venv /tmp/v437 && /tmp/v437/bin/pip install torch==2.13.0 transformers==4.37.2 safetensors
    python upstream/check_regions.py --authors-python /tmp/v437/bin/python \
        --dca /tmp/chunkllama.py --string /tmp/string_ref.py --tokens 9216 --decode 4

Both sides get the same token ids (the first built-in document, past the trained 8192) and
the same weights (evalkit's fp32 safetensors of the embedded model). The authors' side runs
their file unchanged under transformers 4.37.2 (its eager ``LlamaAttention`` replaced by
their ``forward``) with a stand-in for the CUDA-only ``flash_attn`` package: the same
functions, computed exactly in float64 (:data:`FLASH_SHIM`). evalkit's side runs
``patched(model, method)`` under the installed transformers. Compared: the logits at every
``--every``-th position and the last 64 of the prefill, every token's log-probability, and
the logits of ``--decode`` greedy steps through each side's own KV cache.

``--edits`` variants change a line or three of the authors' file in memory (the file on disk
is untouched) to show where a difference comes from (:data:`EDITS`): ``dca-fp32-merge`` drops
ChunkLlama's cast of its merge weights to bfloat16; ``-one-scale`` also keeps the temperature
of the prefill for the decode steps (the file rebuilds its caches, and the factor, for every
longer sequence, while cached keys keep the old one); ``string-decode-as-prefill`` lets
STRING's decode path count the key at d = S in the window as its prefill does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for flash-attn (CUDA only): flash_attn_func and the kv-cache kernel the authors' files
# import, computed exactly (float64, one head at a time). Causal masks align to the bottom right,
# window_size=(left, right) keeps keys i - left .. i + right, as flash-attn documents.
FLASH_SHIM = """
import math, sys, types, torch

def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, tq, h, d = q.shape
    tk, hk = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    i = torch.arange(tq)[:, None] + (tk - tq)
    j = torch.arange(tk)[None, :]
    seen = torch.ones(tq, tk, dtype=torch.bool)
    if causal:
        seen &= j <= i
    if window_size[0] >= 0:
        seen &= j >= i - window_size[0]
    if window_size[1] >= 0:
        seen &= j <= i + window_size[1]
    out = torch.zeros(b, tq, h, v.shape[-1], dtype=torch.float64)
    lse = torch.full((b, h, tq), -math.inf, dtype=torch.float64)
    for r0 in range(0, tq, 1024):  # query blocks: only the keys a block can see (exact: the rest weigh 0)
        r1 = min(tq, r0 + 1024)
        cols = seen[r0:r1].any(0).nonzero()
        if not len(cols):
            continue
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        for head in range(h):
            kv = head // (h // hk)
            s = q[:, r0:r1, head].double() @ k[:, c0:c1, kv].double().transpose(1, 2) * scale
            s = s.masked_fill(~seen[r0:r1, c0:c1], -math.inf)
            lse[:, head, r0:r1] = torch.logsumexp(s, -1)
            p = torch.exp(s - lse[:, head, r0:r1, None]).nan_to_num(0.0)
            out[:, r0:r1, head] = p @ v[:, c0:c1, kv].double()
    out = out.to(q.dtype)
    return (out, lse.float(), None) if return_attn_probs else out

def fwd_kvcache(q, k_cache, v_cache, k, v, cache_seqlens, rotary_cos, rotary_sin, cache_batch_idx,
                block_table, alibi_slopes, _out, softmax_scale, causal, left, right, interleaved, splits):
    assert k is None and v is None and rotary_cos is None and block_table is None
    n = int(cache_seqlens) if not torch.is_tensor(cache_seqlens) else int(cache_seqlens.reshape(-1)[0])
    return flash_attn_func(q, k_cache[:, :n], v_cache[:, :n], softmax_scale=softmax_scale, causal=causal,
                           window_size=(left, right), return_attn_probs=True)[:2]

def flash_attn_with_kvcache(*args, **kwargs):
    raise NotImplementedError("not used by the files checked")

pkg = types.ModuleType("flash_attn")
pkg.__path__ = []
pkg.flash_attn_func = flash_attn_func
pkg.flash_attn_with_kvcache = flash_attn_with_kvcache
iface = types.ModuleType("flash_attn.flash_attn_interface")
iface.flash_attn_func = flash_attn_func
iface.flash_attn_qkvpacked_func = flash_attn_with_kvcache
losses = types.ModuleType("flash_attn.losses")
losses.__path__ = []
ce = types.ModuleType("flash_attn.losses.cross_entropy")
ce.CrossEntropyLoss = torch.nn.CrossEntropyLoss
cuda = types.ModuleType("flash_attn_2_cuda")
cuda.fwd_kvcache = fwd_kvcache
for name, mod in {"flash_attn": pkg, "flash_attn.flash_attn_interface": iface, "flash_attn.losses": losses,
                  "flash_attn.losses.cross_entropy": ce, "flash_attn_2_cuda": cuda}.items():
    sys.modules[name] = mod
"""

EDITS = {  # variant -> (file, [(old line, new line), ...]): changed in memory only, to show a difference's cause
    "dca-fp32-merge": ("dca", [("lse_s = lse_s.to(torch.bfloat16)", "lse_s = lse_s")]),
    "dca-fp32-merge-one-scale": ("dca", [
        ("lse_s = lse_s.to(torch.bfloat16)", "lse_s = lse_s"),
        ("if seq_len > self.max_seq_len:",  # rebuild the caches (and the temperature) at the prefill only
         "if seq_len > self.max_seq_len and self.max_seq_len == self.max_position_embeddings:"),
    ]),
    "string-decode-as-prefill": ("string", [  # its decode counts the key at d = S in the window too
        ("k_cache_diag = key_cache[:, shifted_size:kv_seq_len, :, :]",
         "k_cache_diag = key_cache[:, shifted_size - 1:kv_seq_len, :, :]"),
        ("v_cache_diag = value_cache[:, shifted_size:kv_seq_len, :, :]",
         "v_cache_diag = value_cache[:, shifted_size - 1:kv_seq_len, :, :]"),
        ("cache_seqlens=diag_size,", "cache_seqlens=diag_size + 1,"),
    ]),
}  # fmt: skip

# Runs under the authors' transformers (4.37.2): their file replaces LlamaAttention.forward and
# the rotary class before the model is built, as their README does.
AUTHORS_SIDE = """
import json, sys, torch, transformers
import transformers.models.llama.modeling_llama, transformers.models.mistral.modeling_mistral  # before the stand-in: they probe for flash_attn
exec(compile(open(sys.argv[1]).read(), "flash_shim", "exec"))
job = json.load(open(sys.argv[2]))
source = open(job["file"]).read()
for old, new in job["edits"]:
    assert source.count(old) == 1, old
    source = source.replace(old, new)
ref = type(sys)("authors_reference")
exec(compile(source, job["file"], "exec"), ref.__dict__)
L = job["trained_len"]
if job["method"] == "dca":
    ref.replace_with_chunkllama(pretraining_length=L)
else:
    ref.replace_with_string(max_test_length=job["tokens"] + job["decode"], shifted_offset=int(0.33 * L),
                            small_local_value=128)
cfg = json.load(open(job["model"] + "/config.json"))
config = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("rope_parameters", "dtype")},
                                  rope_theta=cfg["rope_parameters"]["rope_theta"])
config.max_position_embeddings = L  # ChunkLlama's temperature reads it
config._attn_implementation = "eager"  # the class whose forward the authors replace (not 4.37's sdpa default)
model = transformers.LlamaForCausalLM.from_pretrained(job["model"], config=config, torch_dtype=torch.float32,
                                                      attn_implementation="eager").eval()
assert all(type(layer.self_attn).forward is ref.forward for layer in model.model.layers), "not the authors' forward"
ids = torch.tensor([job["ids"]])
with torch.no_grad():
    out = model(input_ids=ids, use_cache=True)
    steps, cache, last = [], out.past_key_values, out.logits[:, -1]
    for t in range(job["decode"]):
        nxt = last.argmax(-1, keepdim=True)
        pos = torch.tensor([[ids.shape[1] + t]])
        step = model(input_ids=nxt, past_key_values=cache, position_ids=pos, use_cache=True)
        cache, last = step.past_key_values, step.logits[:, -1]
        steps.append(last[0])
logits = out.logits[0].double()
torch.save({"rows": logits[job["rows"]], "logprobs": torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None])[:, 0],
            "decode": torch.stack(steps) if steps else None, "transformers": transformers.__version__}, job["out"])
"""


def default_model_and_ids(tokens: int):
    """The embedded default (fp32, CPU) and the first ``tokens`` tokens of the first built-in
    document that has that many (each document tokenised once)."""
    from evalkit.loading import load_model
    from evalkit.tasks.data import documents

    loaded = load_model("smollm2-135m", device="cpu", dtype="float32")
    tok = loaded.tokenizer
    ids = next(x for x in (tok(d.text).input_ids for d in documents("stdlib")) if len(x) >= tokens)
    return loaded.model, ids[:tokens]


def evalkit_side(model, method: str, ids, rows, decode: int, trained_len: int) -> dict:
    """The same summary of evalkit's patched model: prefill logits at ``rows``, every token's
    log-probability, and ``decode`` greedy steps through its KV cache."""
    import torch

    from evalkit.forward import next_token_logits
    from evalkit.patches import patched

    x = torch.tensor([ids])
    with torch.no_grad(), patched(model, method, trained_len=trained_len) as resolved:
        out = model(input_ids=x, use_cache=True)
        steps, cache, last = [], out.past_key_values, out.logits[:, -1]
        for _ in range(decode):
            last, cache = next_token_logits(model, last.argmax(-1, keepdim=True), cache)
            steps.append(last[0])
    logits = out.logits[0].double()
    logprobs = torch.log_softmax(logits[:-1], -1).gather(1, x[0, 1:, None])[:, 0]
    return {"rows": logits[rows], "logprobs": logprobs, "decode": torch.stack(steps) if steps else None,
            "params": resolved.values}  # fmt: skip


def compare(mine: dict, theirs: dict, rows) -> dict:
    import torch

    a, b = mine["rows"].double(), theirs["rows"].double()
    lp_a, lp_b = mine["logprobs"], theirs["logprobs"]
    out = {
        "positions compared": len(rows),
        "max |logit diff|": float((a - b).abs().max()),
        "max |logit| (scale)": float(b.abs().max()),
        "max |token log-prob diff|": float((lp_a - lp_b).abs().max()),
        "ppl evalkit": float(torch.exp(-lp_a.mean())),
        "ppl authors": float(torch.exp(-lp_b.mean())),
        "same argmax": float((a.argmax(-1) == b.argmax(-1)).double().mean()),
    }
    if mine["decode"] is not None and theirs["decode"] is not None:
        da, db = mine["decode"].double(), theirs["decode"].double()
        out["decode max |logit diff|"] = float((da - db).abs().max())
        out["decode same tokens"] = bool((da.argmax(-1) == db.argmax(-1)).all())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-python", required=True, help="a Python with the authors' transformers (4.37.2)")
    p.add_argument("--dca", help="ChunkLlama's chunkllama_attn_replace.py")
    p.add_argument("--string", help="STRING's string_for_llama.py")
    p.add_argument("--tokens", type=int, default=9216, help="prefill length (past the trained 8192)")
    p.add_argument("--trained-len", type=int, default=8192, help="L for both sides (smaller: a quick smoke run)")
    p.add_argument("--decode", type=int, default=4, help="greedy decode steps compared after the prefill")
    p.add_argument("--every", type=int, default=64, help="compare the logits of every N-th position")
    p.add_argument("--edits", default=",".join(EDITS), help=f"variants also run: {', '.join(EDITS)} (or '')")
    p.add_argument("--report", default=str(ROOT / "upstream" / "REGIONS.md"))
    args = p.parse_args()
    import torch
    import transformers

    from evalkit.embedded import smollm2_dir

    model, ids = default_model_and_ids(args.tokens)
    files = {"dca": args.dca, "string": args.string}
    variants = [(m, m, []) for m in ("dca", "string") if files[m]]
    variants += [(v, EDITS[v][0], EDITS[v][1]) for v in filter(None, args.edits.split(",")) if files[EDITS[v][0]]]
    rows = sorted(set(range(0, len(ids), args.every)) | set(range(len(ids) - 64, len(ids))))
    results, tmp = [], Path(tempfile.mkdtemp(prefix="evalkit-upstream-"))
    (tmp / "shim.py").write_text(FLASH_SHIM)
    (tmp / "authors.py").write_text(AUTHORS_SIDE)
    mine = {}
    for name, method, edits in variants:
        job = dict(file=files[method], edits=edits, method=method, trained_len=args.trained_len, tokens=args.tokens,
                   decode=args.decode, ids=ids, rows=rows, model=str(smollm2_dir()), out=str(tmp / f"{name}.pt"))  # fmt: skip
        (tmp / f"{name}.json").write_text(json.dumps(job))
        t0 = time.perf_counter()
        run = subprocess.run([args.authors_python, str(tmp / "authors.py"), str(tmp / "shim.py"), str(tmp / f"{name}.json")],
                             capture_output=True, text=True)  # fmt: skip
        if run.returncode:
            raise SystemExit(f"{name}: the authors' side failed:\n{run.stderr[-3000:]}")
        theirs = torch.load(job["out"])
        t1 = time.perf_counter()
        if method not in mine:
            mine[method] = evalkit_side(model, method, ids, rows, args.decode, args.trained_len)
        row = dict(variant=name, edits=edits, authors_s=round(t1 - t0, 1), authors_transformers=theirs["transformers"],
                   params=mine[method]["params"], **compare(mine[method], theirs, rows))  # fmt: skip
        print(json.dumps(row, default=str), flush=True)
        results.append(row)
    write_report(args, results, transformers.__version__, torch.__version__)


def write_report(args, results: list[dict], tf: str, torch_version: str) -> None:
    lines = [
        "# DCA and STRING: evalkit against the authors' code",
        "",
        f"Command: `python upstream/check_regions.py --tokens {args.tokens} --trained-len {args.trained_len} "
        f"--decode {args.decode} --every {args.every}"
        f" --edits {args.edits or chr(39) * 2}` (files as in the script's docstring)  ",
        f"Model: the embedded SmolLM2-135M-Instruct, fp32, CPU; evalkit under transformers {tf}, torch {torch_version}; "
        f"the authors' files under transformers {results[0]['authors_transformers'] if results else '?'}"
        f" with the float64 flash-attn stand-in; date {time.strftime('%Y-%m-%d')}",
        "",
        "| variant | evalkit parameters | max abs logit diff | max abs log-prob diff | ppl evalkit | ppl authors "
        "| same argmax | decode max abs diff | decode same tokens |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        params = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(
            f"| {r['variant']} | {params} | {r['max |logit diff|']:.2e} | {r['max |token log-prob diff|']:.2e} "
            f"| {r['ppl evalkit']:.4f} | {r['ppl authors']:.4f} | {r['same argmax']:.4f} "
            f"| {r.get('decode max |logit diff|', float('nan')):.2e} | {r.get('decode same tokens', '')} |"
        )
    lines += [
        "",
        f"{results[0]['positions compared'] if results else 0} positions' logits compared per variant "
        f"(every {args.every}th and the last 64 of {args.tokens}); log-probabilities at every position; "
        f"logits scale: max |logit| {max((r['max |logit| (scale)'] for r in results), default=0):.1f}.",
        "",
    ]
    for r in results:
        for old, new in r["edits"]:
            lines.append(f"- `{r['variant']}`: the line `{old}` read as `{new}` (in memory; the file is unchanged).")
    Path(args.report).write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    sys.exit(main())
