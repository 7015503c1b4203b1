"""Score of a mutmut run in mutation/work/<target>: per module and overall, then every surviving mutant.

    python mutation/summary.py mutation/work/patches [--markdown]
    python mutation/summary.py mutation/work/patches --names survived "no tests"   # names only

Statuses are mutmut's (exit code of the tests per mutant). Score = killed / (killed + survived):
"no tests" (no test of the universe reaches the function), "timeout", "suspicious" and
"not checked" are counted and shown apart, never as kills.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "type check",
    2: "interrupted",
    None: "not checked",
    -11: "segfault",
    -9: "segfault",
}
COLUMNS = ["killed", "survived", "no tests", "timeout", "suspicious", "not checked"]


def names(tree: Path, statuses: list[str]) -> None:
    for meta in sorted((tree / "mutants").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if STATUS.get(code, "suspicious") in statuses:
                print(name)


def main(tree: Path, markdown: bool) -> None:
    per_module: dict[str, Counter] = {}
    survivors = []
    for meta in sorted((tree / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(tree / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        c = per_module.setdefault(module, Counter())
        for name, code in codes.items():
            status = STATUS.get(code, "suspicious")
            c[status] += 1
            if status == "survived":
                survivors.append(name)
    total = sum(per_module.values(), Counter())
    commit = (tree / "COMMIT").read_text().split() if (tree / "COMMIT").exists() else ["?"]
    print(f"\n{tree.name} (commit {commit[0][:12]}{' ' + ' '.join(commit[1:]) if commit[1:] else ''})")
    rows = list(per_module.items()) + [("all", total)]
    if markdown:
        print("| module | " + " | ".join(COLUMNS) + " | score killed/(killed+survived) |")
        print("|---" * (len(COLUMNS) + 2) + "|")
    for module, c in rows:
        tested = c["killed"] + c["survived"]
        score = f"{c['killed']}/{tested} = {100 * c['killed'] / tested:.1f}%" if tested else "-"
        if markdown:
            print(f"| {module} | " + " | ".join(str(c[k]) for k in COLUMNS) + f" | {score} |")
        else:
            print(f"  {module:32s} " + "  ".join(f"{k} {c[k]}" for k in COLUMNS if c[k]) + f"   score {score}")
    if survivors and not markdown:
        print(f"  surviving ({len(survivors)}):")
        for name in survivors:
            print(f"    {name}")


if __name__ == "__main__":
    if sys.argv[2:3] == ["--names"]:
        names(Path(sys.argv[1]), sys.argv[3:])
    else:
        main(Path(sys.argv[1]), "--markdown" in sys.argv[2:])
