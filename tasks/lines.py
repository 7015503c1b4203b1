"""LongChat's LongEval "lines" task (Li et al. 2023, "How long can open-source LLMs truly
promise on context length?"), the task NTK-ALiBi was first shown on.

A record of lines "line {key}: REGISTER_CONTENT is <{n}>" (word keys as in LongEval's
"line makeshift-penguin", n from 1 to 50000 as in its generator), as many as fit in
the requested length (the prompt is within one line of it; ``tokens`` says exactly),
then the question for one line: the line at the cell's depth (a fraction of the lines).
Keys and numbers come from (seed, sample, depth): a longer prompt holds the same lines
and more. Correct when the first integer of the greedy answer equals the line's number.
"""

from __future__ import annotations

from evalkit import stats
from evalkit.errors import EvalkitError
from evalkit.task import Cell, Metric, register
from evalkit.tasks.retrieval import (
    CHAT_TEMPLATE,
    DEPTHS,
    Attempt,
    TrialTask,
    encode,
    first_integer_is,
    frame,
    integer_complete,
    trial_rng,
    word_key,
    words,
)

# LongEval's prompt (longchat/longeval/utils.py), with an answer prefix for raw completion
HEADER = (
    "Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and "
    "contains a '<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, "
    "memorize its corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to retrieve "
    "the corresponding <REGISTER_CONTENT> of a certain line index. Now the record start:\n\n"
)
LINE = "line {key}: REGISTER_CONTENT is <{value}>\n"
QUESTION = "\nNow the record is over. Tell me what is the <REGISTER_CONTENT> in line {key}? I need the number."
ANSWER = " The <REGISTER_CONTENT> in line {key} is"
NEW_TOKENS = 12


class Lines(TrialTask):
    name = "lines"
    summary = "LongEval lines: 'line KEY: REGISTER_CONTENT is <N>' records filling the context, one asked; accuracy"
    identity = ("depth", "seed", "chat_template")
    options = (DEPTHS, CHAT_TEMPLATE)
    columns = {"answer": str, "expected": str, "correct": int, "tokens": int, "lines": int, "reused": int}
    metrics = (
        Metric(
            "lines", "lines", "LongEval lines accuracy", stats.accuracy("correct"), percent=True, relative="difference"
        ),
    )

    def record(self, ctx, sample: int, depth: float):
        """An endless reproducible sequence of (key, number) with distinct keys."""
        rng, seen = trial_rng(self.name, ctx.cfg.seed, sample, depth), set()
        while True:
            key = word_key(rng, words(ctx))
            if key not in seen:
                seen.add(key)
                yield key, rng.randint(1, 50000)

    def prompt(self, ctx, length: int, sample: int, depth: float) -> tuple[list[int], int, int]:
        """(prompt tokens, the asked number, how many lines): as many lines as fit."""
        tok, fr = ctx.tokenizer, frame(ctx)
        head = fr.head + ctx.cached(("text", HEADER), lambda: encode(tok, HEADER))
        lines, pairs, total = [], [], len(head) + len(fr.tail)
        for key, value in self.record(ctx, sample, depth):
            ids = encode(tok, LINE.format(key=key, value=value))
            if total + len(ids) > length:
                break
            lines.append(ids)
            pairs.append((key, value))
            total += len(ids)
        while pairs:  # room for the question about the line at the depth, or one line fewer
            key, value = pairs[min(int(depth * len(pairs)), len(pairs) - 1)]
            question, answer = encode(tok, QUESTION.format(key=key)), encode(tok, ANSWER.format(key=key))
            if total + len(question) + len(answer) <= length:
                break
            total -= len(lines.pop())
            pairs.pop()
        if not pairs:
            raise EvalkitError(f"lines length {length} is too short for one line", "use at least 512 tokens")
        body = [t for ids in lines for t in ids]
        return head + body + question + fr.tail + answer, value, len(pairs)

    def attempt(self, ctx, cell: Cell) -> Attempt:
        prompt, value, n_lines = self.prompt(ctx, cell.length, cell.sample, cell.depth)
        return Attempt(
            prompt,
            NEW_TOKENS,
            integer_complete,
            dict(expected=str(value), tokens=len(prompt), lines=n_lines),
            lambda answer: dict(answer=answer.strip(), correct=int(first_integer_is(answer, value))),
        )


register(Lines())
