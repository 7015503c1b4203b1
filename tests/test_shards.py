"""A sweep split over workers: the deal of groups, the launcher's rank, shard folders read as one
result set, exactly-once under kills and under another worker count, and the launch lines of
docs/scaling-out.md (torchrun, accelerate launch, a Slurm array's --shard) run on the CPU."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.errors import EvalkitError
from evalkit.locks import FolderLock
from evalkit.results import read_rows, row_key
from evalkit.shards import Shard, assign, choose, from_launcher, group_cost, parse_shard, worker_device

runner = CliRunner()
BIN = Path(sys.executable).parent
SWEEP = ("--method", "none,pi,ntk", "--len", "160,320", "--task", "ppl,passkey", "--depths", "0,1")
CELLS = 3 * 2 * 1 + 3 * 2 * 2  # ppl: methods × lengths × 1 document; passkey: × 2 depths


def evalkit(*args):
    return runner.invoke(app, [str(a) for a in args])


def all_rows(out: Path) -> list[dict]:
    return [r for f in sorted(out.rglob("results.csv")) for r in read_rows(f)]


def once_each(out: Path, expected: int):
    counts = Counter(row_key(r) for r in all_rows(out))
    assert len(counts) == expected, f"{len(counts)} distinct cells, expected {expected}"
    twice = [k for k, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} cell(s) recorded more than once"


# --- the deal ---


def test_the_deal_by_hand():
    # costliest first to the least loaded worker: 8 -> w0; 4 -> w1; 4 -> w1 (4 < 8); 2 -> w0 (tie: lower); 2 -> w1
    assert assign([8, 4, 4, 2, 2], 2) == [0, 1, 1, 0, 1]
    assert assign([1, 1, 1], 5) == [0, 1, 2]  # more workers than groups: some get none
    assert assign([], 3) == []


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_group_has_one_worker_and_the_loads_are_close(count):
    costs = [float((i * 37) % 11 + 1) for i in range(40)]
    owners = assign(costs, count)
    assert owners == assign(list(costs), count)  # the same answer in every worker
    loads = [sum(c for c, o in zip(costs, owners) if o == w) for w in range(count)]
    assert sum(loads) == sum(costs) and max(loads) - min(loads) <= max(costs)


def test_a_prefix_group_costs_its_longest_forward():
    assert group_cost([4096]) == 4096
    assert group_cost([4096, 8192, 16384]) == 16384  # one forward serves all three lengths
    assert group_cost([8192, 8192]) == 16384  # two trials: two forwards


# --- rank, world size, device ---


def test_shard_text_and_its_mistakes():
    assert parse_shard("3/8") == Shard(3, 8) and parse_shard(" 0 / 1 ").folder == "0-of-1"
    for text in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(EvalkitError):
            parse_shard(text)


def test_the_launchers_environment():
    env = dict(RANK="5", WORLD_SIZE="8", LOCAL_RANK="1", LOCAL_WORLD_SIZE="4")
    assert from_launcher(env) == Shard(5, 8, local_rank=1, local_count=4, launcher="torchrun")
    assert from_launcher(dict(env, ACCELERATE_MIXED_PRECISION="no")).launcher == "accelerate"
    assert from_launcher({}) is None and from_launcher(dict(RANK="0", WORLD_SIZE="1")) is None
    assert choose("1/4", {}) == Shard(1, 4)
    assert choose("5/8", env).local_rank == 1  # agrees with the launcher: its facts are kept
    with pytest.raises(EvalkitError, match="under a launcher"):
        choose("0/8", env)


def test_each_worker_takes_its_own_gpu():
    worker = Shard(5, 8, local_rank=1, local_count=4)
    assert worker_device("auto", worker, cuda_count=4) == "cuda:1"
    assert worker_device("cuda", worker, cuda_count=4) == "cuda:1"
    assert worker_device("cuda:3", worker, cuda_count=4) == "cuda:3"  # named by the user: kept
    assert worker_device("auto", worker, cuda_count=0) == "cpu"
    assert worker_device("auto", Shard(0, 2), cuda_count=4) == "auto"  # --shard: one job per node, all its GPUs
    with pytest.raises(EvalkitError, match="4 workers on this node but 2"):
        worker_device("auto", worker, cuda_count=2)


GLOO_WORKER = """
import sys, torch.distributed as dist
dist.init_process_group("gloo")
from evalkit.shards import from_launcher
shard = from_launcher(env={})  # no launcher variables: the answer must come from the open group
print(shard.index, shard.count, flush=True)
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_and_world_size_from_an_open_gloo_group(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(GLOO_WORKER)
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE="2"),
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o.split() for o, _ in outs) == [["0", "2"], ["1", "2"]]


# --- shard folders as one result set (in process) ---


@pytest.fixture
def sweep(tiny_model_dir, tmp_path):
    out = tmp_path / "res"

    def go(*extra, ok=True):
        result = evalkit("run", "--model", tiny_model_dir, "--out", out, *SWEEP, *extra)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return go, out


def test_shards_together_make_the_whole_sweep_and_any_rerun_adds_nothing(sweep):
    go, out = sweep
    go("--shard", "0/2")
    first = {row_key(r) for r in read_rows(out / "shards" / "0-of-2" / "results.csv")}
    assert 0 < len(first) < CELLS
    go("--shard", "1/2")
    once_each(out, CELLS)
    for rerun in (("--shard", "0/3"), ("--shard", "1/3"), ("--shard", "2/3"), ()):
        assert "0 row(s) written" in go(*rerun).output
    once_each(out, CELLS)
    shown = evalkit("compare", out)  # every shard read, none pooled twice
    # ppl: one document per cell; passkey: two depths pooled per cell
    assert shown.exit_code == 0 and shown.output.count("(1)") == shown.output.count("(2)") == 3 * 2, shown.output


def test_force_on_one_shard_moves_its_cells_and_keeps_each_once(sweep):
    go, out = sweep
    go("--shard", "0/2")
    go("--shard", "1/2")
    before = {row_key(r): r["created_at"] for r in all_rows(out)}
    time.sleep(1.1)  # created_at has whole seconds
    result = go("--shard", "1/3", "--force")
    assert "0 row(s) written" not in result.output
    once_each(out, CELLS)
    redone = read_rows(out / "shards" / "1-of-3" / "results.csv")
    assert redone and all(r["created_at"] != before[row_key(r)] for r in redone)


def test_only_workers_of_the_same_split_write_beside_each_other(sweep):
    go, out = sweep
    held = FolderLock(out / "shards" / "1-of-2")  # worker 1 of a 2-way split is running
    try:
        assert go("--shard", "0/2").exit_code == 0  # its sibling: fine
        for other in (("--shard", "0/3"), ()):  # another split, or a lone run: refused, nothing written
            result = go(*other, ok=False)
            assert result.exit_code == 2 and "being written by another evalkit run" in result.output, result.output
        assert not (out / "shards" / "0-of-3" / "results.csv").exists() and not (out / "results.csv").exists()
    finally:
        held.release()


def test_force_never_rewrites_a_folder_a_running_worker_holds(sweep):
    go, out = sweep
    go()  # a lone run; its files then moved to where worker 1 of a 2-way split writes
    (out / "shards" / "1-of-2").mkdir(parents=True)
    for name in ("results.csv", "positions.csv"):
        (out / name).rename(out / "shards" / "1-of-2" / name)
    held = FolderLock(out / "shards" / "1-of-2")
    try:
        result = go("--shard", "0/2", "--force", ok=False)  # worker 0's cells sit in the busy folder
        assert result.exit_code == 2 and "records cells of this run" in result.output, result.output
        assert go("--shard", "0/2").exit_code == 0  # without --force: they count as done
    finally:
        held.release()
    once_each(out, CELLS)


def test_max_memory_loads_through_accelerate_and_names_only_devices_there(sweep):
    go, out = sweep
    result = go("--max-memory", "cpu=4GiB", "--task", "ppl", "--method", "none")
    assert "row(s) written" in result.output
    for text, needle in (("0=1GiB", "has no GPU"), ("0=1XB", "not DEVICE=SIZE"), ("cpu=1GiB,cpu=2GiB", "twice")):
        result = go("--max-memory", text, ok=False)
        assert result.exit_code == 2 and needle in result.output, result.output


def test_max_memory_with_several_workers_per_node_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    for k, v in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2").items():
        monkeypatch.setenv(k, v)
    result = evalkit("run", "--model", tiny_model_dir, "--out", tmp_path, "--max-memory", "cpu=1GiB", "--len", "160")
    assert result.exit_code == 2 and "--nproc-per-node 1" in result.output, result.output


# --- the launch lines of docs/scaling-out.md, with a worker killed mid-run ---


def launch(line: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        line,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def kill_when_it_has_written(out: Path, folder: str, procs: list, timeout: float = 120) -> None:
    """SIGKILL the worker that writes ``out/shards/folder`` (its pid is in its lock file) once it
    has committed a row: a worker dying mid-sweep, as a node failure or OOM kill would."""
    lock, results = out / "shards" / folder / ".evalkit.lock", out / "shards" / folder / "results.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results.is_file() and len(read_rows(results)) >= 1 and lock.is_file() and lock.read_text().strip():
            os.kill(int(lock.read_text().split()[1]), signal.SIGKILL)
            return
        assert any(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
        time.sleep(0.01)
    raise AssertionError("the worker wrote nothing in time")


KILL_SWEEP = ("--method", "none,pi,ntk", "--len", "160,320,480", "--task", "passkey", "--depths", "0,0.5,1")
KILL_CELLS = 3 * 3 * 3


def evalkit_line(tiny_model_dir, out):
    return ["run", "--model", str(tiny_model_dir), *KILL_SWEEP, "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_a_launched_sweep_survives_a_killed_worker(tiny_model_dir, tmp_path, launcher):
    out = tmp_path / "res"
    line = {
        "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"],
        "accelerate": [
            str(BIN / "accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--main_process_port",
            str(free_port()),
        ],
    }[launcher]
    line += ["-m", "evalkit", *evalkit_line(tiny_model_dir, out)]
    first = launch(line, out)
    kill_when_it_has_written(out, "1-of-2", [first])
    log = first.communicate(timeout=300)[0]
    assert first.returncode != 0, log  # the launcher stops the sweep when a worker dies
    assert len(all_rows(out)) < KILL_CELLS
    again = launch(line, out)
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log[-3000:]
    once_each(out, KILL_CELLS)


@pytest.mark.slow
def test_a_slurm_array_survives_a_killed_job_and_a_rerun_with_another_count(tiny_model_dir, tmp_path):
    out = tmp_path / "res"
    job = lambda k, n: [str(BIN / "evalkit"), *evalkit_line(tiny_model_dir, out), "--shard", f"{k}/{n}"]  # noqa: E731
    jobs = [launch(job(k, 2), out) for k in range(2)]
    kill_when_it_has_written(out, "1-of-2", jobs)
    logs = [p.communicate(timeout=300)[0] for p in jobs]
    assert jobs[0].returncode == 0 and jobs[1].returncode == -signal.SIGKILL, logs
    assert len(all_rows(out)) < KILL_CELLS
    reruns = [launch(job(k, 3), out) for k in range(3)]  # the array resubmitted with 3 jobs
    logs = [p.communicate(timeout=300)[0] for p in reruns]
    assert [p.returncode for p in reruns] == [0, 0, 0], [x[-2000:] for x in logs]
    once_each(out, KILL_CELLS)
