"""What the retrieval tasks (passkey, niah*, lines) share: their options, the prompt frame
(raw, or the tokenizer's chat template), exact-length assembly of a haystack with needles,
greedy decoding with the KV cache, and scoring.

A prompt is ``head + user message + tail + answer prefix`` in the model's tokens, each
part tokenised on its own so the total length is exact:
- raw (default, as in the papers): head is BOS when the tokenizer adds one, tail is empty;
- ``--chat-template``: head and tail are the tokenizer's chat template rendered around a
  single user message (with the generation prompt); the answer prefix then starts the
  assistant's turn.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from evalkit import stats
from evalkit.errors import EvalkitError
from evalkit.task import Cell, Metric, Option, Sharing
from evalkit.tasks.decoding import SharedPrefix, generate
from evalkit.tasks.haystack import BUILTIN, builtin_text, haystack_text, key_words, parse_haystack, sentences

RULER_DEPTHS = [round(100 * i / 39) / 100 for i in range(40)]  # RULER: np.round(np.linspace(0, 100, 40))
_SENTINEL = "\x00evalkit-user-message\x00"


def _depth(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return float(f"{value:.8g}") + 0.0  # as it is recorded: two depths that print alike are one


_depth.__name__ = "a fraction between 0 and 1"


def _check_depths(depths) -> None:
    if any(not 0 <= d <= 1 for d in depths):
        raise EvalkitError("--depths are fractions of the context between 0 and 1", "e.g. --depths 0,0.5,1")


DEPTHS = Option(
    "depths",
    "Needle depths, fractions 0..1 of the context, comma list. Default: 0.5.",
    default=(0.5,),
    parse=_depth,
    many=True,
    check=_check_depths,
    metavar="D,...",
)
CHAT_TEMPLATE = Option(
    "chat_template",
    "Wrap retrieval prompts in the tokenizer's chat template (instruct "
    "models); recorded in every row. Default: off, raw completion as in the papers.",
    default=False,
    flag=True,
)

HAYSTACK = Option(
    "haystack",
    "Needle tasks' haystack: stdlib-prose (built in: prose shipped with Python), a .txt "
    "file or a folder of .txt files (e.g. the Paul Graham essays).",
    default=BUILTIN,
    parse=parse_haystack,
    metavar="FILE|DIR",
)


@dataclass
class Frame:
    head: list[int]  # BOS, or the chat template up to the user message
    tail: list[int]  # the chat template after the user message, with the generation prompt


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def frame(ctx) -> Frame:
    """The run's frame: raw, or the chat template with ``--chat-template``."""
    chat = ctx.cfg.opt("chat_template")
    return ctx.cached("retrieval-frame", lambda: chat_frame(ctx.tokenizer) if chat else raw_frame(ctx.tokenizer))


def raw_frame(tokenizer) -> Frame:
    """BOS when the tokenizer adds one, as a plain completion."""
    ids = tokenizer("a").input_ids
    adds_bos = tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id
    return Frame([tokenizer.bos_token_id] if adds_bos else [], [])


def chat_frame(tokenizer) -> Frame:
    """The chat template around one user message, ending with the assistant's generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise EvalkitError(
            "--chat-template: this model's tokenizer has no chat template",
            "leave --chat-template out for a base model (raw prompts)",
        )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    if text.count(_SENTINEL) != 1:
        raise EvalkitError(
            "--chat-template: the chat template does not place the user message once", "leave --chat-template out"
        )
    before, after = text.split(_SENTINEL)
    return Frame(encode(tokenizer, before), encode(tokenizer, after))


def integer_complete(text: str) -> bool:
    """A stop rule: an integer has been written and ended."""
    return re.search(r"\d+\D", text) is not None


def first_integer_is(answer: str, value: int) -> bool:
    """The first integer of the answer equals ``value`` (no substring leniency)."""
    found = re.search(r"\d+", answer)
    return found is not None and int(found.group()) == value


NON_FINITE = dict(status="nan", error="non-finite logits")  # a trial with no answer: never scored


def recalled(answer: str, values: list[str]) -> float:
    """RULER's string_match_all with whole tokens: the fraction of ``values`` that appear in the
    answer, case-insensitive, not as part of a longer number or word (1234567 is not found in
    12345678)."""
    found = sum(bool(re.search(rf"(?<![\w-]){re.escape(v.lower())}(?![\w-])", answer.lower())) for v in values)
    return found / len(values)


# ---- keys and values (RULER's kinds) ----


def number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def uuid4(rng: random.Random) -> str:
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def word_key(rng: random.Random, words: list[str]) -> str:
    """Two words joined by a hyphen, as RULER's adjective-noun keys."""
    return f"{rng.choice(words)}-{rng.choice(words)}"


def trial_rng(task: str, seed: int, sample: int, depth: float, *extra) -> random.Random:
    """The randomness of one trial: the same at every length and method."""
    return random.Random("/".join(map(str, (task, seed, sample, f"{depth:.6f}", *extra))))


# ---- exact-length assembly ----


class SentenceTokens:
    """The tokens of an endless sequence of sentences, tokenised lazily in batches, each with a
    leading space so that consecutive sentences read as running text."""

    def __init__(self, tokenizer, texts: Iterator[str]):
        self.tokenizer, self.texts, self.pieces = tokenizer, texts, []
        self.total = 0

    def take(self, n: int) -> list[list[int]]:
        """Whole sentences up to ``n`` tokens, the last one cut so the sum is exactly ``n``."""
        while self.total < n:
            batch = [" " + next(self.texts) for _ in range(256)]
            for ids in self.tokenizer(batch, add_special_tokens=False).input_ids:
                self.pieces.append(ids)
                self.total += len(ids)
        out, count = [], 0
        for ids in self.pieces:
            if count >= n:
                break
            out.append(ids[: n - count])
            count += len(out[-1])
        return out


def place(pieces: list[list[int]], needles: list[tuple[float, list[int]]]) -> list[int]:
    """Haystack ``pieces`` (sentences) with each needle inserted at the sentence boundary nearest
    to its depth (fraction of the haystack's tokens); needles at one boundary keep their order."""
    starts = [0]
    for p in pieces:
        starts.append(starts[-1] + len(p))
    at: dict[int, list[list[int]]] = {}
    for depth, ids in needles:
        target = depth * starts[-1]
        i = min(range(len(starts)), key=lambda j: (abs(starts[j] - target), j))
        at.setdefault(i, []).append(ids)
    out: list[int] = []
    for i in range(len(pieces) + 1):
        for ids in at.get(i, []):
            out += ids
        if i < len(pieces):
            out += pieces[i]
    return out


def haystack_prompt(
    ctx,
    length: int,
    instruction: str,
    question: str,
    answer_prefix: str,
    needles: list[tuple[float, str]],
    hay: SentenceTokens,
    what: str,
) -> list[int]:
    """Exactly ``length`` tokens: frame head, instruction, haystack with the needles, question,
    frame tail, answer prefix."""
    tok, fr = ctx.tokenizer, frame(ctx)
    needle_ids = [(d, ctx.cached(("needle", text), lambda t=text: encode(tok, " " + t))) for d, text in needles]
    fixed = (
        fr.head
        + ctx.cached(("text", instruction), lambda: encode(tok, instruction))
        + ctx.cached(("text", question), lambda: encode(tok, question))
        + fr.tail
        + ctx.cached(("text", answer_prefix), lambda: encode(tok, answer_prefix))
    )
    n_hay = length - len(fixed) - sum(len(ids) for _, ids in needle_ids)
    if n_hay < 1:
        raise EvalkitError(
            f"{what} length {length} is too short for the prompt", f"use at least {length - n_hay + 1} tokens"
        )
    head = len(fr.head) + len(ctx.cached(("text", instruction), lambda: encode(tok, instruction)))  # cached above
    return fixed[:head] + place(hay.take(n_hay), needle_ids) + fixed[head:]


def prose(ctx) -> SentenceTokens:
    """The ``--haystack`` sentences, one endless cycle, tokenised once per run."""

    def make():
        import itertools

        return SentenceTokens(ctx.tokenizer, itertools.cycle(sentences(haystack_text(ctx.cfg.opt("haystack")))))

    return ctx.cached("haystack", make)


def words(ctx) -> list[str]:
    """The words keys are made of: from the built-in corpus whatever the haystack, so the
    needles are the same for every haystack."""
    return ctx.cached("key-words", lambda: key_words(builtin_text()))


@dataclass
class Trial:
    prompt: list[int]
    expected: list[str]  # every value the answer must contain


@dataclass
class Attempt:
    """One trial ready to run: its prompt, how to decode, and how its row is made."""

    prompt: list[int]
    max_new: int
    stop: Callable[[str], bool]
    row: dict  # fields known before the answer (the key, the prompt's length, ...)
    score: Callable[[str], dict]  # the answer -> its scored fields


class TrialTask:
    """What the retrieval tasks share: cells are length × depth × sample, one greedy answer per
    trial, and every trial's prompt is built once at the shortest length while planning, so a
    length too short for any of them stops the run before anything is measured or written. A
    subclass writes :meth:`attempt`.

    Trials that may share a KV prefix (``sharing.kv``, decided per method by the sweep) are grouped per
    depth (and per length where the method's factor follows the length) and measured in the
    order of their prompts from one carried cache (:class:`SharedPrefix`), each row committed as
    its trial ends; ``reused`` records how many prompt tokens each took from the cache (0: a
    full prefill) and ``shared`` says "shared-kv" when it took any."""

    min_length = 1  # the real minimum depends on the tokenizer: planning says it
    default = False
    profile = False

    def attempt(self, ctx, cell: Cell) -> Attempt:
        raise NotImplementedError

    def cells(self, ctx, lengths) -> list[Cell]:
        depths, samples = ctx.cfg.opt("depths"), range(ctx.cfg.samples)
        for depth in depths:
            for sample in samples:
                self.attempt(ctx, Cell(self.name, min(lengths), sample, depth))
        return [Cell(self.name, n, s, d) for n in lengths for d in depths for s in samples]

    def group(self, ctx, cell: Cell, sharing: Sharing):
        # the trials of one depth share the prompt up to their needle (all samples; every length
        # where the method's factor does not follow the length): one group, one carried cache
        if sharing.kv == "lengths":
            return ("shared-prefix", cell.depth)
        if sharing.kv == "length":
            return ("shared-prefix", cell.depth, cell.length)
        return cell  # one prefill per trial

    def measure(self, ctx, cells: list[Cell]):
        """(cell index, row) per trial as each is answered (the sweep commits each at once),
        in the order of their prompts: neighbours share the longest prefixes."""
        attempts = [self.attempt(ctx, c) for c in cells]
        shared = SharedPrefix() if len(cells) > 1 else None
        for i in sorted(range(len(cells)), key=lambda i: attempts[i].prompt):
            a = attempts[i]
            answer = generate(ctx, a.prompt, a.max_new, a.stop, shared)
            scored = NON_FINITE if answer is None else a.score(answer)
            reused = shared.reused if shared else 0
            yield i, dict(a.row, **scored, reused=reused, shared="shared-kv" if reused else "none")


class NeedleTask(TrialTask):
    """RULER-style needle tasks: a trial is one greedy answer scored by the fraction of expected
    values recalled (``score``; ``correct`` when all are). A subclass sets ``name``, ``summary``,
    ``metrics`` and writes :meth:`trial`."""

    identity = ("depth", "seed", "haystack", "chat_template")
    options = (DEPTHS, HAYSTACK, CHAT_TEMPLATE)
    columns = {"answer": str, "expected": str, "score": float, "correct": int, "tokens": int, "reused": int}

    @classmethod
    def metric(cls, name: str, title: str) -> tuple[Metric]:
        return (Metric(name, name, title, stats.mean_score("score"), percent=True, relative="difference"),)

    def trial(self, ctx, length: int, sample: int, depth: float) -> Trial:
        raise NotImplementedError

    def attempt(self, ctx, cell: Cell) -> Attempt:
        t = self.trial(ctx, cell.length, cell.sample, cell.depth)
        budget = len(encode(ctx.tokenizer, " " + ", ".join(t.expected) + ".")) + 16

        def score(answer: str) -> dict:
            found = recalled(answer, t.expected)
            return dict(answer=answer.strip(), score=found, correct=int(found == 1))

        return Attempt(
            t.prompt, budget, lambda text: False, dict(expected=" ".join(t.expected), tokens=len(t.prompt)), score
        )
