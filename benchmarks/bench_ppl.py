"""Benchmark evalkit's perplexity evaluation against the plain transformers way.

    python benchmarks/bench_ppl.py                      # CPU: SmolLM2-135M, 4k and 16k tokens
    python benchmarks/bench_ppl.py --lengths 8192,16384,32768 --llama7b   # on a GPU

Each measurement of time and peak memory runs in a fresh child process, so
peaks do not leak between them (peak RSS on CPU; torch.cuda.max_memory_allocated
on GPU). Writes a markdown report (default benchmarks/RESULTS.md).

Sections:
1. chunked LM head + loss (evalkit) vs ``model(ids, labels=ids)`` at each length;
2. one forward for many lengths (prefix mode) vs a forward per length;
3. one process for a 5-method sweep vs 5 ``evalkit run`` processes;
4. passkey prompt building at 32k tokens;
5. (GPU, --llama7b) a LLaMA-7B-shaped random-init model in bf16: tokens/s, % of
   bf16 matmul peak, peak memory, longest length that fits.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> dict:
    """Run one measurement in a fresh process and return its JSON line."""
    cmd = [sys.executable, __file__, "_measure", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load(model: str, device: str):
    from evalkit.models import load_model
    return load_model(model, device=device, dtype="auto", log=lambda *_: None)


def _document_ids(tokenizer, length: int):
    import torch

    from evalkit.tasks.data import documents
    for doc in documents("stdlib"):
        ids = tokenizer(doc.text).input_ids
        if len(ids) >= length:
            return torch.tensor([ids[:length]])
    raise SystemExit(f"no built-in document has {length} tokens")


def _peak_mb(device: str) -> float:
    import torch
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(way: str, model: str, length: int, device: str) -> dict:
    """One forward+loss of ``length`` tokens, the evalkit way or the plain way."""
    import torch

    from evalkit.forward import token_nll

    loaded = _load(model, device)
    ids = _document_ids(loaded.tokenizer, length).to(loaded.device)
    with torch.no_grad():  # warm-up on a short slice, the same way
        short = ids[:, :128]
        loaded.model(input_ids=short, labels=short) if way == "plain" else token_nll(loaded.model, short)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mb(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        if way == "plain":
            loss = float(loaded.model(input_ids=ids, labels=ids).loss)
        else:
            loss = float(token_nll(loaded.model, ids).mean())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return dict(way=way, length=length, seconds=seconds, tok_s=length / seconds, peak_mb=_peak_mb(device),
                before_mb=before, loss=loss)


def measure_prefix(model: str, lengths: list[int], device: str) -> dict:

    from evalkit.forward import token_nll

    loaded = _load(model, device)
    ids = _document_ids(loaded.tokenizer, max(lengths)).to(loaded.device)
    token_nll(loaded.model, ids[:, :256])  # warm-up
    t0 = time.perf_counter()
    full = token_nll(loaded.model, ids)
    one = time.perf_counter() - t0
    t0, worst = time.perf_counter(), 0.0
    for n in lengths:
        sep = token_nll(loaded.model, ids[:, :n]).mean()
        worst = max(worst, abs(float(full[: n - 1].mean() / sep) - 1))
    return dict(one_forward=one, separate=time.perf_counter() - t0, max_rel_diff=worst)


def measure_prompt(model: str) -> dict:
    from evalkit.tasks import passkey

    loaded = _load(model, "cpu")
    tok = loaded.tokenizer
    t0 = time.perf_counter()
    pieces = passkey.Pieces.of(tok)
    needle = tok(passkey.NEEDLE.format(key=12345), add_special_tokens=False).input_ids
    prompt = passkey.build_prompt(pieces, needle, 32768, 0.5)
    return dict(seconds=time.perf_counter() - t0, tokens=len(prompt))


def measure_llama7b(lengths: list[int]) -> list[dict]:
    """A LLaMA-7B-shaped random-init model in bf16 on the GPU (speed does not depend on weights)."""
    import torch
    import transformers

    from evalkit.forward import token_nll

    cfg = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, max_position_embeddings=4096)
    config = transformers.LlamaConfig(**cfg)
    config._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())
    peak_tflops = float(os.environ.get("BF16_PEAK_TFLOPS", "989"))  # H100 SXM dense bf16
    rows = []
    for n in lengths:
        ids = torch.randint(0, 32000, (1, n), device="cuda")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            token_nll(model, ids[:, :512])
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            token_nll(model, ids)
            torch.cuda.synchronize()
            s = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(length=n, status="oom"))
            break
        # forward FLOPs: 2·params·n for the matmuls + causal attention 2·2·L·n²·d / 2
        flops = 2 * n_params * n + 2 * cfg["num_hidden_layers"] * n * n * cfg["hidden_size"]
        rows.append(dict(length=n, seconds=s, tok_s=n / s, mfu=flops / s / (peak_tflops * 1e12),
                         peak_gb=torch.cuda.max_memory_allocated() / 2**30, status="ok"))
    return rows


def time_cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evalkit.cli", "run", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        kind, *rest = sys.argv[2:]
        if kind == "forward":
            print(json.dumps(measure(rest[0], rest[1], int(rest[2]), rest[3])))
        elif kind == "prefix":
            print(json.dumps(measure_prefix(rest[0], [int(x) for x in rest[1].split(",")], rest[2])))
        elif kind == "prompt":
            print(json.dumps(measure_prompt(rest[0])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lengths", default="4096,16384", help="lengths for section 1")
    p.add_argument("--prefix-lengths", default="2048,4096,8192,16384")
    p.add_argument("--methods", default="none,pi,ntk,yarn,logn", help="section 3")
    p.add_argument("--device", default="auto")
    p.add_argument("--llama7b", default="", help="lengths for section 5 (GPU only), e.g. 8192,16384,32768")
    p.add_argument("--skip", default="", help="sections to skip, e.g. 2,3")
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    a = p.parse_args()
    from evalkit.models import pick_device
    device = pick_device(a.device)
    lines = ["# evalkit benchmark\n", f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, device {device}, Python "
             f"{platform.python_version()}; model {a.model}; date {time.strftime('%Y-%m-%d')}\n"]

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    if "1" not in a.skip:
        emit("## 1. Perplexity forward + loss: evalkit (chunked LM head) vs `model(ids, labels=ids)`\n")
        emit("| tokens | way | seconds | tokens/s | peak memory MB | time ratio | memory ratio | loss |")
        emit("|---:|---|---:|---:|---:|---:|---:|---:|")
        for n in [int(x) for x in a.lengths.split(",")]:
            plain = child(["forward", "plain", a.model, n, device])
            ours = child(["forward", "evalkit", a.model, n, device])
            for r in (plain, ours):
                if "error" in r:
                    emit(f"| {n} | {'plain' if r is plain else 'evalkit'} | error: {r['error']} | | | | | |")
                    continue
                tr = r["seconds"] / plain["seconds"] if "error" not in plain else float("nan")
                mr = r["peak_mb"] / plain["peak_mb"] if "error" not in plain else float("nan")
                emit(f"| {n} | {r['way']} | {r['seconds']:.1f} | {r['tok_s']:.0f} | {r['peak_mb']:.0f} | "
                     f"{tr:.2f}× | {mr:.2f}× | {r['loss']:.5f} |")
        emit("\nPeak memory on CPU is the child process's peak RSS, model weights included.\n")
    if "2" not in a.skip:
        r = child(["prefix", a.model, a.prefix_lengths, device])
        emit(f"## 2. One forward for lengths {{{a.prefix_lengths}}} vs a forward per length\n")
        if "error" in r:
            emit(f"error: {r['error']}\n")
        else:
            emit(f"one forward at the longest: {r['one_forward']:.1f} s; separate forwards: {r['separate']:.1f} s; "
                 f"ratio {r['one_forward'] / r['separate']:.2f}×; largest relative difference of mean NLL: "
                 f"{r['max_rel_diff']:.1e}\n")
    if "3" not in a.skip:
        methods = a.methods.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            common = ["--model", a.model, "--task", "passkey", "--len", "2048", "--device", device]
            one = time_cli(common + ["--method", ",".join(methods), "--out", f"{tmp}/one"])
            many = sum(time_cli(common + ["--method", m, "--out", f"{tmp}/many"]) for m in methods)
        emit(f"## 3. A {len(methods)}-method sweep (passkey, 2048 tokens) in one process vs one process per method\n")
        emit(f"one `evalkit run`: {one:.1f} s; {len(methods)} runs: {many:.1f} s; ratio {one / many:.2f}×\n")
    if "4" not in a.skip:
        r = child(["prompt", a.model])
        emit("## 4. Passkey prompt building at 32k tokens\n")
        emit(f"{r['tokens']} tokens built from pre-tokenised pieces in {1000 * r['seconds']:.1f} ms "
             "(tokenising the pieces included)\n")
    if a.llama7b:
        emit("## 5. LLaMA-7B-shaped random-init model, bf16, evalkit perplexity forward\n")
        if not device.startswith("cuda"):
            emit("skipped: needs a GPU\n")
        else:
            import torch
            emit(f"GPU: {torch.cuda.get_device_name()}\n")
            emit("| tokens | seconds | tokens/s | % of bf16 peak | peak GB | status |")
            emit("|---:|---:|---:|---:|---:|---|")
            for r in measure_llama7b([int(x) for x in a.llama7b.split(",")]):
                if r["status"] == "ok":
                    emit(f"| {r['length']} | {r['seconds']:.2f} | {r['tok_s']:.0f} | {100 * r['mfu']:.1f} | "
                         f"{r['peak_gb']:.1f} | ok |")
                else:
                    emit(f"| {r['length']} | | | | | out of memory |")
    Path(a.report).write_text("\n".join(lines) + "\n")
    print(f"report written to {a.report}")


if __name__ == "__main__":
    main()
