"""Benchmark: retrieval trials that share a KV prefix vs a full prefill per trial.

    python benchmarks/bench_retrieval.py                  # CPU: SmolLM2-135M, passkey at 8192 (~45 min)
    python benchmarks/bench_retrieval.py --device cuda --model llama-7b --length 16384

Side by side in one process, one depth at a time (so both ways see the same machine load):
the trials of one depth (every sample; in section B every length too) measured once from
one carried cache (what ``evalkit run`` does for a static method) and once with a full
prefill each, with the same patch applied. Both ways must give the same answers; the report
gives trials per hour, the prompt tokens taken from the cache, and the ratio a cost model
linear in the tokens computed and one quadratic in them (attention-bound) would predict.
Writes benchmarks/RETRIEVAL.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def trials_of(ctx, lengths, depth, samples):
    from evalkit.tasks import TASKS, Cell

    task = TASKS.get("passkey")
    return [task.attempt(ctx, Cell("passkey", n, s, depth)) for n in lengths for s in range(samples)]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def both_ways(ctx, attempts) -> dict:
    """The attempts from one carried cache (in prompt order) and each from a full prefill."""
    from evalkit.tasks.retrieval import SharedPrefix, generate

    order = sorted(range(len(attempts)), key=lambda i: attempts[i].prompt)
    shared = SharedPrefix()

    def carried():
        answers, reused = {}, {}
        for i in order:
            a = attempts[i]
            answers[i] = generate(ctx, a.prompt, a.max_new, a.stop, shared)
            reused[i] = shared.reused
        return answers, reused

    (answers, reused), t_shared = timed(carried)
    full, t_full = timed(lambda: {i: generate(ctx, a.prompt, a.max_new, a.stop) for i, a in enumerate(attempts)})
    n = [len(a.prompt) for a in attempts]
    r = [reused[i] for i in range(len(attempts))]
    return dict(
        trials=len(attempts),
        t_shared=t_shared,
        t_full=t_full,
        same=answers == full,
        tokens=sum(n),
        reused=sum(r),
        sq=sum(x * x for x in n),
        sq_left=sum(x * x - y * y for x, y in zip(n, r)),
        correct=sum(attempts[i].score(answers[i])["correct"] for i in answers if answers[i] is not None),
    )


def section(ctx, model, method: str, lengths, samples: int, log) -> dict:
    from evalkit.patches import parse_call, patched

    total: dict = {}
    with patched(model, parse_call(method), trained_len=ctx.loaded.spec.trained_len, target_len=max(lengths)):
        for depth in DEPTHS:
            part = both_ways(ctx, trials_of(ctx, lengths, depth, samples))
            log(
                f"  {method} depth {depth}: shared {part['t_shared']:.1f}s, full {part['t_full']:.1f}s, "
                f"reused {part['reused']}/{part['tokens']} tokens, same answers: {part['same']}"
            )
            for k, v in part.items():
                total[k] = (total.get(k, 0) + v) if k != "same" else total.get(k, True) and v
    return total


def row(name: str, t: dict) -> str:
    per_hour = lambda seconds: 3600 * t["trials"] / seconds  # noqa: E731
    return (
        f"| {name} | {t['trials']} | {t['t_full']:.0f} | {t['t_shared']:.0f} | {per_hour(t['t_full']):.0f} | "
        f"{per_hour(t['t_shared']):.0f} | **{t['t_full'] / t['t_shared']:.2f}×** | "
        f"{t['tokens'] / (t['tokens'] - t['reused']):.2f}× | {t['sq'] / t['sq_left']:.2f}× | "
        f"{100 * t['reused'] / t['tokens']:.0f}% | {'yes' if t['same'] else 'NO'} |"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--length", type=int, default=8192, help="section A: one length")
    p.add_argument("--samples", type=int, default=4, help="section A: samples per depth")
    p.add_argument("--methods", default="none,ntk", help="section A")
    p.add_argument("--lengths", default="1024,2048,4096,8192", help="section B: a static method across lengths")
    p.add_argument(
        "--llama7b-layers",
        type=int,
        default=0,
        help="section C instead: a LLaMA-7B-shaped random-init "
        "model with this many decoder layers (the per-token work of a 7B model), at --length",
    )
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "RETRIEVAL.md"))
    args = p.parse_args()
    if args.llama7b_layers:
        return llama7b_section(args)

    import torch
    import transformers

    import evalkit
    from evalkit.config import RunConfig
    from evalkit.loading import load_model
    from evalkit.sweep import RunContext

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    loaded = load_model(args.model, device=args.device, dtype="auto")
    lengths = [int(x) for x in args.lengths.split(",")]
    cfg = RunConfig(
        model=args.model, lengths=tuple(sorted({args.length, *lengths})), tasks=("passkey",), options={"depths": DEPTHS}
    )
    ctx = RunContext(cfg, loaded)
    t0 = time.perf_counter()
    a = {m: section(ctx, loaded.model, m, [args.length], args.samples, log) for m in args.methods.split(",")}
    b = section(ctx, loaded.model, "none", lengths, 1, log)
    header = (
        "| method | trials | full prefills (s) | shared prefix (s) | trials/h full | trials/h shared | speed-up | "
        "linear model | quadratic model | prompt tokens reused | same answers |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    command = "python benchmarks/bench_retrieval.py " + " ".join(sys.argv[1:])
    text = (
        f"""# Retrieval trials sharing a KV prefix

`{command.strip()}` — {time.strftime("%Y-%m-%d")}, {platform.processor() or platform.machine()},
{torch.get_num_threads()} threads, device {loaded.device}, {loaded.dtype}; evalkit {evalkit.__version__}, transformers
{transformers.__version__}, torch {torch.__version__.split("+")[0]}; model {loaded.spec.name}; {time.perf_counter() - t0:.0f} s in all.

Passkey trials at depths {", ".join(map(str, DEPTHS))}, measured two ways side by side, one depth at a
time: from one KV cache carried from trial to trial in prompt order (as `evalkit run` does for a
static method: the trials of a depth share the prompt up to their needle), and with a full prefill
each. Speed-up = full / shared wall time. The models: the tokens computed (linear) or the sum of
n² − r² over trials (quadratic, attention-bound), full over shared, where n is a prompt's length and
r the tokens it took from the cache.

## A. One length ({args.length} tokens), {len(DEPTHS)} depths × {args.samples} samples

{header}
"""
        + "\n".join(row(m, t) for m, t in a.items())
        + f"""

## B. A length-independent method across lengths ({", ".join(map(str, lengths))}), {len(DEPTHS)} depths × 1 sample

{header}
{row("none", b)}
"""
    )
    Path(args.report).write_text(text)
    print(text)


def llama7b_section(args):
    """Section C: the same two ways on a LLaMA-7B-shaped model (random weights: the answers are
    noise, the work is a 7B model's per layer), prompts from the default model's tokenizer."""
    import dataclasses
    import importlib.util

    import torch

    from evalkit.config import RunConfig
    from evalkit.loading import load_model
    from evalkit.sweep import RunContext

    spec = importlib.util.spec_from_file_location("bench_ppl", ROOT / "benchmarks" / "bench_ppl.py")
    bench_ppl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_ppl)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    small = load_model("smollm2-135m", device=args.device, dtype="auto")
    bench_ppl.LLAMA7B["vocab_size"] = len(small.tokenizer)  # the prompts' token ids fit its embedding
    model = bench_ppl.llama7b_shaped(args.llama7b_layers, small.device)
    loaded = dataclasses.replace(small, model=model)
    cfg = RunConfig(lengths=(args.length,), tasks=("passkey",), options={"depths": DEPTHS})
    ctx = RunContext(cfg, loaded)
    t0 = time.perf_counter()
    t = section(ctx, model, "none", [args.length], args.samples, log)
    command = "python benchmarks/bench_retrieval.py " + " ".join(sys.argv[1:])
    text = f"""# Retrieval trials sharing a KV prefix: a LLaMA-7B-shaped model

`{command.strip()}` — {time.strftime("%Y-%m-%d")}, {torch.get_num_threads()} threads, device {small.device};
LLaMA-7B shape (4096 wide, 32 heads, MLP 11008) with {args.llama7b_layers} decoder layer(s), random
weights, fp32 on CPU; {time.perf_counter() - t0:.0f} s in all. Passkey prompts of {args.length} tokens at depths
{", ".join(map(str, DEPTHS))} × {args.samples} samples, as in RETRIEVAL.md (the answers of random weights
are noise; both ways must still agree).

| method | trials | full prefills (s) | shared prefix (s) | trials/h full | trials/h shared | speed-up | linear model | quadratic model | prompt tokens reused | same answers |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
{row("none", t)}
"""
    Path(args.report).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
