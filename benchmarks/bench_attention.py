"""Benchmark the attention-level methods against a plain forward of the same length.

    python benchmarks/bench_attention.py                        # CPU: SmolLM2-135M at 16k tokens
    python benchmarks/bench_attention.py --device cuda --skip 1 --gpu-lengths 32768,65536,131072   # a GPU

Every measurement runs in a fresh child process (peak RSS on CPU, torch.cuda.max_memory_allocated
on a GPU, so peaks do not leak between rows), all in one run of this script, side by side.
Writes a markdown report (default benchmarks/ATTENTION.md).

Sections:
1. the embedded default at ``--length`` tokens (fp32): evalkit's perplexity forward with
   ``none`` and with each attention method on the region mechanism's fused kernel; the same
   methods with every region call on the eager kernel (the reference the fused one is tested
   against); Self-Extend on evalkit 0.3's eager two-region path. Target on this CPU: each
   attention method at most 1.3× the time and 1.2× the peak memory of ``none``.
3. one attention layer at ``--length`` tokens: the memory the region mechanism's keys take
   against PyTorch's SDPA (``--skip 1,2`` runs it alone, in seconds).
2. (GPU) a LLaMA-7B-shaped random-init model (``--gpu-layers`` decoder layers, bf16), plain
   flash attention (flash-attn's when installed, else PyTorch's SDPA) against each attention
   method at ``--gpu-lengths``: tokens/s and peak memory; first, the CUDA kernel against the
   eager one on random inputs with masks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_ppl import (  # run as a script: its folder is on sys.path
    LLAMA7B,
    _document_ids,
    llama7b_shaped,
    report_lines,
    timed,
)

ROOT = Path(__file__).resolve().parents[1]

METHODS = "self-extend,rerope,leaky-rerope,dca,string,lm-infinite,streaming-llm"


def child(*args) -> dict:
    """One measurement in a fresh process: its JSON line, or {"error": last line of stderr}."""
    done = subprocess.run([sys.executable, __file__, "_measure", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _legacy_two_region() -> None:
    """Route the region methods' hook through evalkit 0.3's eager two-region path (near/far layouts only)."""
    import torch

    from evalkit.patches import attention

    def old(q, k, v, q_pos, regions, inv_freq, factor, scaling, groups=1, kernel=None):
        near, far = regions
        region = attention.TwoRegion(near.hi + 1, far.q_pos, far.k_pos)
        k_pos = torch.arange(k.shape[-2], device=q.device, dtype=torch.float64)
        return attention.two_region_attention(q, k, v, q_pos.double(), k_pos, region, inv_freq, factor, scaling, groups)

    attention.region_attention = old


def _timed_forward(model, ids, device: str) -> dict:
    """Warm up on 256 tokens, then time evalkit's perplexity forward of ``ids`` and read the peak."""
    from evalkit.forward import token_nll

    token_nll(model, ids[:, :256])
    nll, seconds, peak, before = timed(lambda: token_nll(model, ids), device)
    return dict(seconds=seconds, tok_s=ids.shape[1] / seconds, peak_mb=peak, before_mb=before,
                loss=float(nll.float().mean()))  # fmt: skip


def measure(method: str, way: str, model_name: str, length: int, device: str) -> dict:
    """Section 1: one forward of ``length`` tokens of the first built-in document with ``method``;
    ``way``: fused (the default kernel), eager (every region call on the eager kernel) or legacy."""
    from evalkit.loading import load_model
    from evalkit.patches import patched, regions

    if way == "eager":
        regions.FORCED[:] = ["eager"]
    elif way == "legacy":
        _legacy_two_region()
    loaded = load_model(model_name, device=device, dtype="auto")
    ids = _document_ids(loaded.tokenizer, length).to(loaded.device)
    with patched(loaded.model, method, target_len=length):
        return dict(method=method, way=way, length=length, **_timed_forward(loaded.model, ids, device))


def measure_gpu(method: str, layers: int, length: int) -> dict:
    """Section 2: the LLaMA-7B-shaped model, bf16; ``none`` on flash-attn's kernel when installed."""
    import importlib.util

    import torch

    from evalkit.patches import patched

    model = llama7b_shaped(layers, "cuda")
    plain = "flash-attn" if importlib.util.find_spec("flash_attn") else "sdpa"
    if method == "none" and plain == "flash-attn":
        model.config._attn_implementation = "flash_attention_2"
    torch.manual_seed(1)
    ids = torch.randint(0, LLAMA7B["vocab_size"], (1, length), device="cuda")
    try:
        with patched(model, method, trained_len=LLAMA7B["max_position_embeddings"], target_len=length):
            r = _timed_forward(model, ids, "cuda")
    except torch.cuda.OutOfMemoryError:
        return dict(method=method, length=length, status="out of memory")
    return dict(method=method, length=length, kernel=plain, status="ok", **r)


def measure_layer(way: str, length: int) -> dict:
    """Section 3: one SmolLM2-shaped attention layer (9 query heads on 3 KV heads, head dim 64,
    fp32, random inputs) at ``length`` tokens with Self-Extend's regions: the rise of the peak RSS
    and the time of PyTorch's causal SDPA (keys repeated to the query heads, as transformers does
    on CPU), of the region mechanism (keys kept per KV head) and of the regions fed repeated keys
    (evalkit before it stacked a group's queries instead)."""
    import resource

    import torch

    from evalkit.patches import attention, regions

    torch.manual_seed(0)
    heads, kv_heads, dim = 9, 3, 64
    q = torch.randn(1, heads, length, dim)
    k, v = torch.randn(1, kv_heads, length, dim), torch.randn(1, kv_heads, length, dim)
    inv_freq = 1.0 / (1e5 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    layout = attention.self_extend(window=1024, group=8).layout()
    groups = heads // kv_heads
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if way == "sdpa":
        repeat = regions.repeat_kv
        out = torch.nn.functional.scaled_dot_product_attention(q, repeat(k, groups), repeat(v, groups), is_causal=True)
    else:
        if way == "repeated":
            k, v, groups = regions.repeat_kv(k, groups), regions.repeat_kv(v, groups), 1
        out = regions.region_attention(q, k, v, torch.arange(length), layout.regions, inv_freq, 1.0, dim**-0.5, groups)
    seconds = time.perf_counter() - t0
    rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return dict(way=way, seconds=seconds, rise_mb=rise, mean_abs=float(out.abs().mean()))


def check_cuda_kernel() -> dict:
    """The CUDA region kernel against the eager one (bf16 inputs, a mask with an empty row)."""
    import torch

    from evalkit.patches import regions

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16) for n in (96, 300, 300))
    mask = torch.rand(96, 300, device="cuda") > 0.3
    mask[5] = False
    worst = 0.0
    for m in (None, mask):
        o_e, l_e = regions.eager(q, k, v, m, 128**-0.5)
        o_c, l_c = regions.sdpa_cuda(q, k, v, m, 128**-0.5)
        seen = torch.isfinite(l_e)
        worst = max(worst, float((o_c.float() - o_e).abs().max()), float((l_c - l_e)[seen].abs().max()))
        assert bool((torch.isinf(l_c) == ~seen).all()), "rows that see no key"
    return dict(max_abs_diff=worst)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        kind, *rest = sys.argv[2:]
        out = (measure(rest[0], rest[1], rest[2], int(rest[3]), rest[4]) if kind == "forward"
               else measure_gpu(rest[0], int(rest[1]), int(rest[2])) if kind == "gpu"
               else measure_layer(rest[0], int(rest[1])) if kind == "layer" else check_cuda_kernel())  # fmt: skip
        print(json.dumps(out))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--length", type=int, default=16384, help="section 1: tokens")
    p.add_argument("--methods", default=METHODS)
    p.add_argument(
        "--eager",
        default="self-extend",
        help="section 1: methods also run on the eager kernel (about 12 min each at 16k on 2 CPU cores)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--gpu-lengths", default="32768,65536,131072")
    p.add_argument("--gpu-layers", type=int, default=8, help="section 2: decoder layers (each costs the same)")
    p.add_argument("--gpu-methods", default="self-extend,dca,string")
    p.add_argument("--skip", default="", help="sections to skip, e.g. 2")
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "ATTENTION.md"))
    a = p.parse_args()
    from evalkit.loading import pick_device

    device = pick_device(a.device)
    title = "Attention-level methods: speed and memory against a plain forward"
    lines, emit = report_lines(title, Path(__file__).name, f"device {device}")

    if "1" not in a.skip:
        section_one(a, device, emit)
    if "2" not in a.skip:
        section_two(a, device, emit)
    if "3" not in a.skip:
        section_three(a, emit)
    Path(a.report).write_text("\n".join(lines) + "\n")
    print(f"report written to {a.report}")


def section_one(a, device: str, emit) -> None:
    emit(f"## 1. {a.model} at {a.length} tokens: evalkit's perplexity forward ({device})\n")
    runs = [("none", "fused")] + [(m, "fused") for m in a.methods.split(",")]
    runs += [(m, "eager") for m in filter(None, a.eager.split(","))]
    runs += [("self-extend", "legacy")] if "self-extend" in a.methods else []
    rows = [child("forward", m, way, a.model, a.length, device) | {"method": m, "way": way} for m, way in runs]
    base = rows[0]
    emit("| method | attention | seconds | tokens/s | peak MB | above the loaded model MB | time × none "
         "| peak × none | target (≤ 1.3× time, ≤ 1.2× peak) | mean NLL |")  # fmt: skip
    emit("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    way_text = {"fused": "region mechanism, fused kernel", "eager": "region mechanism, eager kernel",
                "legacy": "evalkit 0.3's eager two-region path"}  # fmt: skip
    for r in rows:
        if "error" in r or "error" in base:
            emit(f"| {r['method']} | {way_text[r['way']]} | error: {r.get('error', base.get('error'))} | | | | | | | |")
            continue
        tr, mr = r["seconds"] / base["seconds"], r["peak_mb"] / base["peak_mb"]
        target = (
            "" if r["method"] == "none" or r["way"] != "fused" else ("met" if tr <= 1.3 and mr <= 1.2 else "**missed**")
        )
        emit(f"| {r['method']} | {way_text[r['way']] if r['method'] != 'none' else 'transformers SDPA'} "
             f"| {r['seconds']:.1f} | {r['tok_s']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['before_mb']:.0f} "
             f"| {tr:.2f}× | {mr:.2f}× | {target} | {r['loss']:.5f} |")  # fmt: skip
    emit("\nPeak memory is the child process's peak RSS (weights included); the column after it is the rise "
         "during the timed forward. Each row is one forward after a 256-token warm-up, in its own process.\n")  # fmt: skip


def section_three(a, emit) -> None:
    emit(f"## 3. One attention layer at {a.length} tokens: memory of the keys (CPU, fp32)\n")
    emit("| attention | seconds | peak RSS rise MB | × SDPA | mean abs output |")
    emit("|---|---:|---:|---:|---:|")
    names = {"sdpa": "PyTorch SDPA, causal, keys repeated to 9 heads", "regions": "Self-Extend's regions, keys per KV head",
             "repeated": "Self-Extend's regions fed repeated keys"}  # fmt: skip
    rows = [child("layer", way, a.length) | {"way": way} for way in names]
    for r in rows:
        if "error" in r:
            emit(f"| {names[r['way']]} | error: {r['error']} | | | |")
            continue
        emit(f"| {names[r['way']]} | {r['seconds']:.2f} | {r['rise_mb']:.0f} | {r['rise_mb'] / rows[0].get('rise_mb', float('nan')):.2f}× "
             f"| {r['mean_abs']:.6f} |")  # fmt: skip
    emit("\nEach row in its own process (SmolLM2's attention shape: 9 query heads on 3 KV heads, head dim 64).\n")


def section_two(a, device: str, emit) -> None:
    layers = a.gpu_layers
    emit(f"## 2. LLaMA-7B-shaped random-init model, bf16, {layers} decoder layers (GPU)\n")
    if not device.startswith("cuda"):
        emit("skipped: needs a GPU (run with `--device cuda` where one is lent)\n")
        return
    import torch

    check = child("check")
    found = check.get("error") or f"max abs difference {check.get('max_abs_diff', float('nan')):.2e}"
    emit(f"GPU: {torch.cuda.get_device_name()}. CUDA region kernel against the eager one (bf16, masked and not): "
         f"{found}\n")  # fmt: skip
    emit("| tokens | method | kernel | seconds | tokens/s | peak GB | time × none | peak × none |")
    emit("|---:|---|---|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in a.gpu_lengths.split(",")]:
        base = None
        for m in ["none"] + a.gpu_methods.split(","):
            r = child("gpu", m, layers, n)
            if r.get("status") != "ok":
                emit(f"| {n} | {m} | | {r.get('error') or r.get('status')} | | | | |")
                continue
            base = base or (r if m == "none" else None)
            times, peaks = (f"{r[k] / base[k]:.2f}×" if base else "" for k in ("seconds", "peak_mb"))
            emit(f"| {n} | {m} | {r['kernel'] if m == 'none' else 'regions (flash-attn / mem-efficient)'} "
                 f"| {r['seconds']:.2f} | {r['tok_s']:.0f} | {r['peak_mb'] / 1024:.1f} | {times} | {peaks} |")  # fmt: skip
    emit("")


if __name__ == "__main__":
    main()
