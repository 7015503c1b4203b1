"""Long-document perplexity.

Each document is truncated to the length and every predicted token is scored
once (NLL in nats, token-weighted means; the model's own BOS handling: a BOS
token, when the tokenizer adds one, counts towards the length and is not
scored). Documents shorter than the length are skipped and counted, never
padded. The LM head and the loss run in chunks of positions
(:func:`evalkit.forward.token_nll`).

``--stride S`` (sliding window, the protocol of the PI and YaRN papers): windows
of ``length`` tokens move by S over the *whole* document; each window scores only
its new tokens, so every token of the document is scored once, with at least
``length - S`` tokens of context after the first window. (evalkit 0.1 slid over
the first ``2 × length`` tokens only; its rows count as done on resume: use
``--force`` to measure them again under this protocol.)

``--min-doc-tokens N`` keeps only documents of at least N tokens (and always at
least the length), so that every length is measured on the same documents.

Prefix mode: for a length-independent method (``MethodCall.length_independent``:
``none``, ``logn``, ``self-extend``, or ``pi``/``ntk``/``yarn``/ALiBi methods with
their scale / alpha given) on a checkpoint whose own RoPE is length-independent, the
output at position i does not depend on the total length, so the NLL at every
shorter length is a prefix of the per-token NLL at the longest: one forward per
document serves every length.
"""

from __future__ import annotations

import math

from evalkit import forward, stats
from evalkit.errors import EvalkitError
from evalkit.task import Cell, Measured, Metric, Option, Sharing, register
from evalkit.tasks.data import documents


def _at_least(minimum: int, flag: str, hint: str):
    def check(value: int) -> None:
        if value < minimum:
            raise EvalkitError(f"{flag} must be >= {minimum}, got {value}", hint)

    return check


DATA = Option(
    "data",
    "Perplexity documents: stdlib (built in), a .txt/.jsonl/.parquet file, a folder of .txt, "
    "or hf:NAME[:CONFIG]:SPLIT. Default: stdlib.",
    default="stdlib",
)
TEXT_FIELD = Option("text_field", "Text field of .jsonl/.parquet/hf records. Default: text.", default="text")
STRIDE = Option(
    "stride",
    "Sliding-window stride in tokens for ppl over each whole document (0 = off: the first LENGTH tokens). Default: 0.",
    default=0,
    parse=int,
    check=_at_least(0, "--stride", "e.g. --stride 256; 0 turns sliding windows off"),
)
MIN_DOC = Option(
    "min_doc_tokens",
    "Use only documents of at least this many tokens (the same documents at "
    "every length). Default: 0 (each length takes the documents long enough for it).",
    default=0,
    parse=int,
    check=_at_least(0, "--min-doc-tokens", "e.g. --min-doc-tokens 16384"),
)
BUCKET = Option(
    "bucket",
    "Positions per bucket of the per-position loss profile. Default: 256.",
    default=256,
    parse=int,
    check=_at_least(1, "--bucket", "e.g. --bucket 256"),
)


class DocumentPool:
    """Documents of ``--data`` tokenised lazily, once each."""

    def __init__(self, tokenizer, data: str, field: str):
        self.tokenizer, self.source = tokenizer, documents(data, field)
        self.docs: list[tuple[str, list[int]]] = []
        self.by_id: dict[str, list[int]] = {}
        self.exhausted = False

    def __iter__(self):
        i = 0
        while True:
            if i == len(self.docs):
                if self.exhausted:
                    return
                doc = next(self.source, None)
                if doc is None:
                    self.exhausted = True
                    return
                self.docs.append((doc.doc_id, self.tokenizer(doc.text, verbose=False).input_ids))  # long on purpose
                self.by_id[doc.doc_id] = self.docs[-1][1]
            yield self.docs[i]
            i += 1

    def pick(self, needed_tokens: int, n: int) -> tuple[list[tuple[str, list[int]]], int]:
        """The first ``n`` documents with at least ``needed_tokens`` tokens, and how many were skipped."""
        chosen, skipped = [], 0
        for doc_id, ids in self:
            if len(chosen) == n:
                break
            if len(ids) >= needed_tokens:
                chosen.append((doc_id, ids))
            else:
                skipped += 1
        return chosen, skipped


def bucket_profile(nll, bucket: int) -> list[tuple[int, int, float]]:
    """(first position, last position + 1, mean NLL) per bucket of predicted positions.
    Position p is the token predicted at index p+1 of the sequence."""
    return [(s, min(s + bucket, nll.numel()), float(nll[s : s + bucket].mean())) for s in range(0, nll.numel(), bucket)]


def strided_nll(model, ids, window: int, stride: int):
    """Per-token NLL of ``ids`` (1, N) with windows of ``window`` tokens every ``stride``."""
    import torch

    n, parts, done = ids.shape[1], [], 1  # tokens [0, done) are scored (token 0 never is)
    end = window
    while done < n:
        end = min(end, n)
        start = max(0, end - window)
        nll = forward.token_nll(model, ids[:, start:end])  # predictions of tokens start+1 .. end-1
        parts.append(nll[done - start - 1 :])
        done, end = end, end + stride
    return torch.cat(parts)


class Perplexity:
    name = "ppl"
    identity = ("data", "text_field", "stride", "min_doc_tokens")  # the seed changes nothing here
    options = (DATA, TEXT_FIELD, STRIDE, MIN_DOC, BUCKET)
    columns = {"ppl": float, "nll": float, "tokens": int, "doc": str}
    min_length = 2  # at least one predicted token
    default = True
    title_fields = ("data",)  # named in figure titles ("... on stdlib")
    profile = True  # per-position losses in positions.csv, with these columns (the cell's, then the loss)
    profile_columns = (
        "model",
        "method",
        "scale",
        "alpha",
        "trained_len",
        "length",
        "sample",
        "doc",
        "data",
        "stride",
        "seed",
        "position_start",
        "position_end",
        "nll",
        "source",
        "min_doc_tokens",
        "text_field",
        "params",
        "rope_scaling",
        "adapter",
        "quantize",
    )
    profile_required = ("model", "method", "length", "sample", "position_start", "position_end", "nll")
    profile_key = (
        "model",
        "source",
        "adapter",
        "quantize",
        "method",
        "scale",
        "alpha",
        "params",
        "rope_scaling",
        "trained_len",
        "length",
        "sample",
        "data",
        "stride",
        "min_doc_tokens",
        "text_field",
    )
    metrics = (
        Metric("ppl", "ppl", "perplexity (token-weighted)", stats.token_weighted("nll", "tokens"), log_axis=True),
        Metric(
            "nll",
            "ppl",
            "mean NLL (nats, token-weighted)",
            stats.token_weighted("nll", "tokens", log_space=True),
            primary=False,
        ),
    )
    summary = "long-document perplexity: token-weighted NLL over every predicted token, per-position profile"

    def profile_title(self, model: str, longest: int, rows) -> str:
        """The title of the loss-by-position figure of ``rows`` (positions.csv rows at ``longest``)."""
        windows = sorted({s for s in rows["stride"] if s != "0"}, key=int)
        if not windows:
            return f"{model}: loss by position at {longest} tokens"
        return f"{model}: loss by document position, windows of {longest} (stride {', '.join(windows)})"

    def pool(self, ctx) -> DocumentPool:
        return ctx.cached(
            "ppl-pool", lambda: DocumentPool(ctx.tokenizer, ctx.cfg.opt("data"), ctx.cfg.opt("text_field"))
        )

    def cells(self, ctx, lengths) -> list[Cell]:
        cells, stride = [], ctx.cfg.opt("stride")
        if stride and stride >= min(lengths):
            raise EvalkitError(
                f"--stride {stride} must be below the shortest length ({min(lengths)})",
                "e.g. --stride 256; 0 turns sliding windows off",
            )
        for length in lengths:
            need = max(length, ctx.cfg.opt("min_doc_tokens"))
            chosen, skipped = self.pool(ctx).pick(need, ctx.cfg.samples)
            if not chosen:
                longest = max((len(ids) for _, ids in self.pool(ctx)), default=0)
                what = f"length {length} is" if need == length else f"--min-doc-tokens {need} is"
                raise EvalkitError(
                    f"{what} longer than the data: no document of {ctx.cfg.opt('data')!r} has "
                    f"{need} tokens (longest: {longest})",
                    "use shorter --len / --min-doc-tokens or longer documents (--data)",
                )
            if skipped:
                ctx.note(f"ppl at {length}: skipped {skipped} document(s) shorter than {need} tokens")
            if len(chosen) < ctx.cfg.samples:
                ctx.note(f"ppl at {length}: only {len(chosen)} document(s) long enough (asked {ctx.cfg.samples})")
            cells += [Cell(self.name, length, i, None, doc_id) for i, (doc_id, _) in enumerate(chosen)]
            if stride:
                windows = sum(max(1, -(-(len(ids) - length) // stride) + 1) for _, ids in chosen)
                ctx.note(
                    f"ppl at {length} with --stride {stride}: {windows} windows of {length} tokens per method "
                    f"over {len(chosen)} whole document(s) of up to {max(len(i) for _, i in chosen)} tokens"
                )
        return cells

    def group(self, ctx, cell: Cell, sharing: Sharing):
        # one forward per document serves every length, unless windows slide (each length has its own)
        return ("doc", cell.doc) if sharing.prefix and not ctx.cfg.opt("stride") else cell

    def measure(self, ctx, cells: list[Cell]) -> list[Measured]:
        import torch

        tokens = self.pool(ctx).by_id[cells[0].doc]
        longest, stride = max(c.length for c in cells), ctx.cfg.opt("stride")
        if stride:  # one cell: its length is the window, the document is scored whole
            nll = strided_nll(ctx.model, torch.tensor([tokens], device=ctx.input_device), longest, stride)
        else:
            nll = forward.token_nll(ctx.model, torch.tensor([tokens[:longest]], device=ctx.input_device))
        rows = []
        for cell in cells:
            part = nll if stride else nll[: cell.length - 1]
            mean = float(part.mean())
            row = dict(
                nll=mean,
                ppl=math.exp(mean) if mean < 700 else math.inf,
                tokens=part.numel(),
                doc=cell.doc,
                shared="prefix-forward" if len(cells) > 1 else "none",
            )
            if not math.isfinite(mean):  # a row of its own status, never a number to pool
                row.update(status="nan", error="non-finite loss")
            rows.append(Measured(row, bucket_profile(part, ctx.cfg.opt("bucket")) if math.isfinite(mean) else []))
        return rows


register(Perplexity())
