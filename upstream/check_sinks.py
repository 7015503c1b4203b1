"""evalkit's lm-infinite and streaming-llm against the authors' code, on the embedded default.

    git --git-dir=/path/to/Glaciohound+LM-Infinite/repo show a0ce64c:models/lambda_attention.py > /tmp/lambda_attention.py
    git --git-dir=/path/to/mit-han-lab+streaming-llm/repo show 2e50426:streaming_llm/kv_cache.py > /tmp/kv_cache.py
    python upstream/check_sinks.py --lambda-file /tmp/lambda_attention.py --kv-cache-file /tmp/kv_cache.py

Both files are plain PyTorch, so this compares attention outputs, not whole models: the real
queries, keys and values of SmolLM2's first decoder layer on the first built-in document
(``--tokens`` tokens, past the trained 8192), rotated with transformers' own rotary embedding
and ``rotate_half``.

- LM-Infinite: ``lambda_matmul`` (their ``Lambda_Attention_Matrix``, "long_seq" mode for the
  prefill and "single_query" for one decode step) fed as ``models/llama.py`` feeds it: rotated
  queries and keys, the "stationary" query rotated at ``limit_distance`` and unrotated keys;
  float64, one head at a time (their own headwise path).
- StreamingLLM: their ``StartRecentKVCache`` evicting after every token, as
  ``examples/eval_long_ppl.py`` does, with ``pos_shift/modify_llama.py``'s positions (the query
  at its position in the cache, the cached, unrotated keys at 0 .. len-1); float64.

evalkit's side is its region attention with the method's layout at the defaults the method
derives for L = 8192 (fp32, the fused CPU kernel).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(path: str):
    mod = type(sys)(Path(path).stem)
    exec(compile(Path(path).read_text(), path, "exec"), mod.__dict__)
    return mod


def layer0_qkv(tokens: int):
    """Real q (1, H, T, D), k / v (1, H_kv, T, D) of layer 0, unrotated; the model's rotary and scale."""
    import torch
    from check_regions import default_model_and_ids

    model, ids = default_model_and_ids(tokens)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        h = model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.tensor([ids])))
        shape = (1, tokens, -1, attn.head_dim)
        q, k, v = (proj(h).view(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    return q, k, v, model.model.rotary_emb, float(attn.scaling)


def rotate(x, positions, rotary):
    """transformers' rotation: cos / sin from the model's own rotary embedding, rotate_half."""
    import torch
    from transformers.models.llama.modeling_llama import rotate_half

    cos, sin = rotary(x.float(), torch.as_tensor(positions).view(1, -1))
    return x * cos[:, None].to(x.dtype) + rotate_half(x) * sin[:, None].to(x.dtype)


def lm_infinite(lam, q, k, v, rotary, scaling, local, sinks, limit):
    """LM-Infinite's prefill and one decode step (the last query over every key), head by head."""
    import torch

    n = q.shape[-2]
    pos = torch.arange(n)
    rq, rk = rotate(q, pos, rotary), rotate(k, pos, rotary)
    sq = rotate(q, torch.full((n,), min(limit, n - 1)), rotary)  # llama.py: the stationary query
    heads = []
    for h in range(q.shape[1]):
        m = lam.lambda_matmul(rk[:, h], k[:, h], rq[:, h], sq[:, h], local, sinks)
        heads.append((m / math.sqrt(q.shape[-1])).softmax().matmul(v[:, h]))  # as llama.py scales
    prefill = torch.stack(heads, 1)
    last = [
        (lam.lambda_matmul(rk[:, h], k[:, h], rq[:, h, -1:], sq[:, h, -1:], local, sinks) / math.sqrt(q.shape[-1]))
        .softmax()
        .matmul(v[:, h])
        for h in range(q.shape[1])
    ]
    return prefill, torch.stack(last, 1)


def streaming(kvc, q, k, v, rotary, scaling, start, recent):
    """StreamingLLM token by token: evict after each step, query at its cache position, cached keys
    (unrotated) rotated at 0 .. len-1."""
    import torch
    from transformers.models.llama.modeling_llama import rotate_half

    cos, sin = rotary(q.float(), torch.arange(start + recent + 1).view(1, -1))  # cache positions 0 .. s + r
    cos, sin = cos[:, None].to(q.dtype), sin[:, None].to(q.dtype)
    cache, evict, out = None, kvc.StartRecentKVCache(start_size=start, recent_size=recent), []
    for i in range(q.shape[-2]):
        keys = k[:, :, i : i + 1] if cache is None else torch.cat([cache[0][0], k[:, :, i : i + 1]], 2)
        vals = v[:, :, i : i + 1] if cache is None else torch.cat([cache[0][1], v[:, :, i : i + 1]], 2)
        n = keys.shape[-2]
        qi = q[:, :, i : i + 1] * cos[:, :, n - 1 : n] + rotate_half(q[:, :, i : i + 1]) * sin[:, :, n - 1 : n]
        ki = keys * cos[:, :, :n] + rotate_half(keys) * sin[:, :, :n]  # the query at the cache's length - 1
        out.append(torch.softmax(qi @ ki.transpose(2, 3) * scaling, -1) @ vals)
        cache = evict([[keys, vals]])
    return torch.cat(out, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lambda-file", required=True, help="LM-Infinite's models/lambda_attention.py")
    p.add_argument("--kv-cache-file", required=True, help="StreamingLLM's streaming_llm/kv_cache.py")
    p.add_argument("--tokens", type=int, default=9216)
    p.add_argument("--report", default=str(ROOT / "upstream" / "SINKS.md"))
    a = p.parse_args()
    import torch

    from evalkit.patches import parse_call
    from evalkit.patches.regions import region_attention

    q, k, v, rotary, scaling = layer0_qkv(a.tokens)
    groups = q.shape[1] // k.shape[1]
    k64, v64 = (x.repeat_interleave(groups, 1).double() for x in (k, v))
    inv_freq = rotary.inv_freq
    n, rows = a.tokens, []
    for name in ("lm-infinite", "streaming-llm"):
        call = parse_call(name)
        values = call.resolve(8192, n)
        layout = call.method.attention(trained_len=8192, **values)
        t0 = time.perf_counter()
        if name == "lm-infinite":
            theirs, their_last = lm_infinite(_module(a.lambda_file), q.double(), k64, v64, rotary, scaling,
                                             values["local_branch"], values["global_branch"], values["limit_distance"])  # fmt: skip
        else:
            theirs = streaming(_module(a.kv_cache_file), q.double(), k64, v64, rotary, scaling,
                               values["start_size"], values["recent_size"])  # fmt: skip
            their_last = theirs[:, :, -1:]
        seconds = time.perf_counter() - t0
        pos = torch.arange(n)
        with torch.no_grad():
            ours = region_attention(q, k, v, pos, layout.regions, inv_freq, 1.0, scaling, groups)
            last = region_attention(q[:, :, -1:], k, v, pos[-1:], layout.regions, inv_freq, 1.0,
                                    scaling, groups)  # fmt: skip
        rows.append(dict(method=name, values=values, seconds=seconds, scale=float(theirs.abs().max()),
                         prefill=float((ours.double() - theirs).abs().max()),
                         decode=float((last.double() - their_last).abs().max())))  # fmt: skip
        print(rows[-1], flush=True)
    lines = [
        "# LM-Infinite and StreamingLLM: evalkit against the authors' code",
        "",
        f"Command: `python upstream/check_sinks.py --tokens {n}` (files as in the script's docstring)  ",
        f"Inputs: SmolLM2-135M-Instruct's layer-0 queries, keys and values on the first built-in document, {n} "
        f"tokens; the authors' side in float64, evalkit's region attention in fp32; date {time.strftime('%Y-%m-%d')}",
        "",
        "| method | evalkit parameters (L = 8192) | max abs output diff, all positions | one decode step | max abs output |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        params = ", ".join(f"{key}={val}" for key, val in r["values"].items())
        lines.append(f"| {r['method']} | {params} | {r['prefill']:.2e} | {r['decode']:.2e} | {r['scale']:.3f} |")
    Path(a.report).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.report}")
    if max(max(r["prefill"], r["decode"]) for r in rows) > 1e-4 * max(1.0, max(r["scale"] for r in rows)):
        raise SystemExit("a difference beyond fp32 rounding")


if __name__ == "__main__":
    sys.exit(main())
