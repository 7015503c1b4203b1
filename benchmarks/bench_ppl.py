"""Benchmark evalkit's perplexity evaluation against the plain transformers way.

    python benchmarks/bench_ppl.py                      # CPU: SmolLM2-135M, 4k and 16k tokens
    python benchmarks/bench_ppl.py --prefix-llama7b-layers 1,2     # + section 2b (about 15 min on CPU)
    python benchmarks/bench_ppl.py --device cuda --skip 1,2,3,4 --llama7b 8192,16384,32768   # a GPU

Each measurement of time and peak memory runs in a fresh child process, so
peaks do not leak between them (peak RSS on CPU; torch.cuda.max_memory_allocated
on GPU). Writes a markdown report (default benchmarks/RESULTS.md).

Sections:
1. chunked LM head + loss (evalkit) vs ``model(ids, labels=ids)`` at each length;
2. one forward for many lengths (prefix mode) vs a forward per length;
2b. (--prefix-llama7b-layers) the same on LLaMA-7B-shaped random-init models with
   a few decoder layers: every layer costs the same, so the per-layer cost and the
   rest (embedding, norm, LM head) are fitted from two layer counts and the ratio
   of the 32-layer model is projected from them;
3. one process for a 5-method sweep vs 5 ``evalkit run`` processes;
4. passkey prompt building at 32k tokens;
5. (GPU, --llama7b) a LLaMA-7B-shaped random-init model in bf16: tokens/s, % of
   bf16 matmul peak, peak memory, and the longest length that fits (doubling
   from the last given length until out of memory, up to --llama7b-cap).
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
    from evalkit.loading import load_model

    return load_model(model, device=device, dtype="auto")


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


def _synchronizer(device):
    import torch

    return torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)


def measure(way: str, model: str, length: int, device: str) -> dict:
    """One forward+loss of ``length`` tokens, the evalkit way or the plain way."""
    import torch

    from evalkit.forward import token_nll

    loaded = _load(model, device)
    ids = _document_ids(loaded.tokenizer, length).to(loaded.device)
    with torch.no_grad():  # warm-up on a short slice, the same way
        short = ids[:, :128]
        loaded.model(input_ids=short, labels=short) if way == "plain" else token_nll(loaded.model, short)

    def forward():
        with torch.no_grad():
            if way == "plain":
                return float(loaded.model(input_ids=ids, labels=ids).loss)
            return float(token_nll(loaded.model, ids).mean())

    loss, seconds, peak, before = timed(forward, device)
    return dict(way=way, length=length, seconds=seconds, tok_s=length / seconds, peak_mb=peak, before_mb=before,
                loss=loss)  # fmt: skip


def timed(fn, device: str):
    """``fn()`` once, timed (synchronised on a GPU), with the peak memory it reached:
    (its result, seconds, peak MB, the peak before it)."""
    import torch

    sync = _synchronizer(device)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mb(device)
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0, _peak_mb(device), before


def _prefix_times(model, ids, lengths: list[int], repeats: int) -> dict:
    """Prefix mode's cost (one forward at the longest length; slicing its NLL is free) against a
    forward per length. Each length is timed ``repeats`` times, interleaved, and the fastest time
    of each is kept, so a slow spell of the machine does not land on one side only."""
    from evalkit.forward import token_nll

    sync = _synchronizer(ids.device)
    token_nll(model, ids[:, :256])  # warm-up
    best: dict[int, float] = {}
    means: dict[int, float] = {}
    for _ in range(repeats):
        for n in lengths:
            sync()
            t0 = time.perf_counter()
            nll = token_nll(model, ids[:, :n])
            sync()
            best[n] = min(best.get(n, float("inf")), time.perf_counter() - t0)
            means[n] = float(nll.mean())
            if n == max(lengths):
                full = nll
    worst = max(abs(float(full[: n - 1].mean()) / means[n] - 1) for n in lengths)
    return dict(one_forward=best[max(lengths)], separate=sum(best.values()), max_rel_diff=worst, repeats=repeats)


def measure_prefix(model: str, lengths: list[int], device: str, repeats: int) -> dict:
    loaded = _load(model, device)
    ids = _document_ids(loaded.tokenizer, max(lengths)).to(loaded.device)
    return _prefix_times(loaded.model, ids, lengths, repeats)


LLAMA7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    max_position_embeddings=4096,
)


def llama7b_shaped(layers: int, device: str):
    """A random-init LLaMA-7B-shaped model with ``layers`` decoder layers; bf16 on a GPU, fp32 on CPU
    (speed does not depend on the weights)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(**dict(LLAMA7B, num_hidden_layers=layers))
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.LlamaForCausalLM(config).to(dtype).eval()


def measure_prefix_llama7b(layers: int, lengths: list[int], device: str, repeats: int) -> dict:
    import torch

    torch.manual_seed(1)
    ids = torch.randint(0, LLAMA7B["vocab_size"], (1, max(lengths)), device=device)
    return dict(_prefix_times(llama7b_shaped(layers, device), ids, lengths, repeats), layers=layers)


def project_layers(measured: list[dict], layers: int) -> dict | None:
    """Fit time = rest + n·per_layer to two layer counts (each decoder layer costs the same) and
    project both ways of section 2b to ``layers`` layers."""
    if len(measured) < 2:
        return None
    a, b = measured[0], measured[-1]
    out = {}
    for way in ("one_forward", "separate"):
        per_layer = (b[way] - a[way]) / (b["layers"] - a["layers"])
        out[way] = a[way] - a["layers"] * per_layer + layers * per_layer
        out[way + "_per_layer"] = per_layer
    return out


def measure_prompt(model: str) -> dict:
    from evalkit.tasks import passkey

    loaded = _load(model, "cpu")
    tok = loaded.tokenizer
    t0 = time.perf_counter()
    pieces = passkey.Pieces.of(tok)
    needle = tok(passkey.NEEDLE.format(key=12345), add_special_tokens=False).input_ids
    prompt = passkey.build_prompt(pieces, needle, 32768, 0.5)
    return dict(seconds=time.perf_counter() - t0, tokens=len(prompt))


BF16_PEAK_TFLOPS = {"H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "A100": 312}  # first match wins


def bf16_peak_tflops(name: str) -> float | None:
    """The card's dense bf16 matmul peak from its name ($BF16_PEAK_TFLOPS overrides); None if unknown."""
    if os.environ.get("BF16_PEAK_TFLOPS"):
        return float(os.environ["BF16_PEAK_TFLOPS"])
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def measure_llama7b(lengths: list[int], cap: int, device: str = "cuda") -> list[dict]:
    """A LLaMA-7B-shaped random-init model in bf16 on the GPU: the given lengths, then doubling
    the last one until out of memory or past ``cap``."""
    import torch

    from evalkit.forward import token_nll

    model = llama7b_shaped(LLAMA7B["num_hidden_layers"], device)
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()  # a lookup, not a matmul
    peak = bf16_peak_tflops(torch.cuda.get_device_name())
    sync = _synchronizer(device)
    rows, todo = [], list(lengths)
    while todo:
        n = todo.pop(0)
        ids = torch.randint(0, LLAMA7B["vocab_size"], (1, n), device=device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            token_nll(model, ids[:, :512])
            sync()
            t0 = time.perf_counter()
            token_nll(model, ids)
            sync()
            s = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(length=n, status="oom"))
            break
        finally:
            del ids
        # forward FLOPs: 2·(matmul params)·n + causal attention (QKᵀ and AV: 2·2·n²·d per layer, halved)
        flops = 2 * (n_params - n_embed) * n + 2 * LLAMA7B["num_hidden_layers"] * n * n * LLAMA7B["hidden_size"]
        rows.append(
            dict(
                length=n,
                seconds=s,
                tok_s=n / s,
                tflops=flops / s / 1e12,
                mfu=flops / s / (peak * 1e12) if peak else None,
                peak_gb=torch.cuda.max_memory_allocated() / 2**30,
                status="ok",
            )
        )
        if not todo and 2 * n <= cap:
            todo.append(2 * n)
    return rows


def report_lines(title: str, script: str, setting: str):
    """A report's heading lines (command, machine, date) and ``emit``: print a line and keep it."""
    lines = [
        f"# {title}\n",
        f"Command: `python benchmarks/{script} {' '.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
        f"{setting}; date {time.strftime('%Y-%m-%d')}\n",
    ]

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    return lines, emit


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
            print(json.dumps(measure_prefix(rest[0], [int(x) for x in rest[1].split(",")], rest[2], int(rest[3]))))
        elif kind == "prefix7b":
            lengths = [int(x) for x in rest[1].split(",")]
            print(json.dumps(measure_prefix_llama7b(int(rest[0]), lengths, rest[2], int(rest[3]))))
        elif kind == "prompt":
            print(json.dumps(measure_prompt(rest[0])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lengths", default="4096,16384", help="lengths for section 1")
    p.add_argument("--prefix-lengths", default="2048,4096,8192,16384")
    p.add_argument("--methods", default="none,pi,ntk,yarn,logn", help="section 3")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=2, help="sections 2 and 2b: timings per length (fastest kept)")
    p.add_argument(
        "--prefix-llama7b-layers",
        default="",
        help="section 2b: decoder-layer counts of the LLaMA-7B-shaped models, e.g. 1,2 (32 on a GPU)",
    )
    p.add_argument("--llama7b", default="", help="lengths for section 5 (GPU only), e.g. 8192,16384,32768")
    p.add_argument("--llama7b-cap", type=int, default=262144, help="section 5: stop doubling past this length")
    p.add_argument("--skip", default="", help="sections to skip, e.g. 2,3")
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    a = p.parse_args()
    from evalkit.loading import pick_device

    device = pick_device(a.device)
    lines, emit = report_lines("evalkit benchmark", Path(__file__).name, f"device {device}; model {a.model}")

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
                emit(
                    f"| {n} | {r['way']} | {r['seconds']:.1f} | {r['tok_s']:.0f} | {r['peak_mb']:.0f} | "
                    f"{tr:.2f}× | {mr:.2f}× | {r['loss']:.5f} |"
                )
        emit("\nPeak memory on CPU is the child process's peak RSS, model weights included.\n")
    if "2" not in a.skip:
        r = child(["prefix", a.model, a.prefix_lengths, device, a.repeats])
        emit(f"## 2. One forward for lengths {{{a.prefix_lengths}}} vs a forward per length\n")
        if "error" in r:
            emit(f"error: {r['error']}\n")
        else:
            emit(
                f"one forward at the longest: {r['one_forward']:.1f} s; separate forwards: {r['separate']:.1f} s; "
                f"ratio {r['one_forward'] / r['separate']:.2f}×; largest relative difference of mean NLL: "
                f"{r['max_rel_diff']:.1e}\n"
            )
            emit(
                f"Prefix mode costs the forward at the longest length (slicing its per-token NLL is free). Each "
                f"length was timed {a.repeats}× in turn; the fastest time of each is kept.\n"
            )
    if a.prefix_llama7b_layers:
        counts = sorted({int(x) for x in a.prefix_llama7b_layers.split(",")})
        emit(
            f"## 2b. The same on LLaMA-7B-shaped random-init models "
            f"({'bf16' if device.startswith('cuda') else 'fp32'}, decoder layers: {','.join(map(str, counts))})\n"
        )
        emit("| decoder layers | one forward s | separate forwards s | ratio | largest relative NLL difference |")
        emit("|---:|---:|---:|---:|---:|")
        measured = []
        for n in counts:
            r = child(["prefix7b", n, a.prefix_lengths, device, a.repeats])
            if "error" in r:
                emit(f"| {n} | error: {r['error']} | | | |")
                continue
            measured.append(r)
            emit(
                f"| {n} | {r['one_forward']:.1f} | {r['separate']:.1f} | {r['one_forward'] / r['separate']:.2f}× | "
                f"{r['max_rel_diff']:.1e} |"
            )
        full = LLAMA7B["num_hidden_layers"]
        proj = None if full in counts else project_layers(measured, full)
        if proj:
            emit(
                f"| {full} (projected) | {proj['one_forward']:.1f} | {proj['separate']:.1f} | "
                f"{proj['one_forward'] / proj['separate']:.2f}× | |"
            )
            emit(
                f"\nPer decoder layer: one forward {proj['one_forward_per_layer']:.1f} s, separate forwards "
                f"{proj['separate_per_layer']:.1f} s (ratio "
                f"{proj['one_forward_per_layer'] / proj['separate_per_layer']:.2f}×). The {full}-layer row is "
                f"fitted from the measured rows (time = rest + layers × per layer), not measured."
            )
        emit("")
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
        emit(
            f"{r['tokens']} tokens built from pre-tokenised pieces in {1000 * r['seconds']:.1f} ms "
            "(tokenising the pieces included)\n"
        )
    if a.llama7b:
        emit("## 5. LLaMA-7B-shaped random-init model, bf16, evalkit perplexity forward\n")
        if not device.startswith("cuda"):
            emit("skipped: needs a GPU\n")
        else:
            import torch

            name = torch.cuda.get_device_name()
            peak = bf16_peak_tflops(name)
            emit(
                f"GPU: {name}; bf16 dense matmul peak taken as "
                f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown (set BF16_PEAK_TFLOPS)'}\n"
            )
            emit("| tokens | seconds | tokens/s | TFLOP/s | % of bf16 peak | peak GB | status |")
            emit("|---:|---:|---:|---:|---:|---:|---|")
            rows = measure_llama7b([int(x) for x in a.llama7b.split(",")], a.llama7b_cap)
            for r in rows:
                if r["status"] == "ok":
                    mfu = f"{100 * r['mfu']:.1f}" if r["mfu"] is not None else "?"
                    emit(
                        f"| {r['length']} | {r['seconds']:.2f} | {r['tok_s']:.0f} | {r['tflops']:.0f} | {mfu} | "
                        f"{r['peak_gb']:.1f} | ok |"
                    )
                else:
                    emit(f"| {r['length']} | | | | | | out of memory |")
            fits = [r["length"] for r in rows if r["status"] == "ok"]
            emit(
                f"\nLongest length that fits: {max(fits) if fits else 'none'}"
                f"{'' if rows and rows[-1]['status'] == 'oom' else f' (stopped at the cap, {a.llama7b_cap})'}.\n"
            )
    Path(a.report).write_text("\n".join(lines) + "\n")
    print(f"report written to {a.report}")


if __name__ == "__main__":
    main()
