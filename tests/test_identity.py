"""Exact behaviour of evalkit.results' cell identity and CSV handling, written to kill mutants
(mutation/run results). Expected values are hand constants; no model is loaded. All fast."""

import csv
import os

import pytest

from evalkit import locks as L
from evalkit import results as R
from evalkit.errors import EvalkitError

PPL = {
    "model": "m",
    "source": "hf",
    "method": "ntk",
    "scale": "2",
    "alpha": "2",
    "params": "",
    "trained_len": "16",
    "task": "ppl",
    "length": "32",
    "sample": "0",
    "data": "stdlib",
    "text_field": "text",
    "stride": "0",
    "min_doc_tokens": "0",
    "status": "ok",
    "evalkit_version": "0.3.0",
    "created_at": "t",
}


# --- fmt ---


@pytest.mark.parametrize(
    "value, text",
    [
        (None, ""),
        (True, "1"),
        (False, "0"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.33333333"),
        (123456789.0, "1.2345679e+08"),
        (2.0, "2"),
        (7, "7"),
        ("a\rb", "a\\rb"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_fmt_hand_values(value, text):
    assert R.fmt(value) == text


# --- identity ---


def test_identity_fields_of_each_kind_of_task():
    core = [
        ("model", ""),
        ("source", ""),
        ("adapter", ""),
        ("quantize", ""),
        ("method", ""),
        ("scale", ""),
        ("alpha", ""),
        ("params", ""),
        ("rope_scaling", ""),
        ("trained_len", ""),
        ("task", ""),
        ("length", ""),
        ("sample", ""),
    ]
    assert R.identity_fields("ppl") == core + [
        ("data", "stdlib"),
        ("text_field", "text"),
        ("stride", "0"),
        ("min_doc_tokens", "0"),
    ]
    assert R.identity_fields("passkey") == core + [("depth", ""), ("seed", ""), ("chat_template", "0")]
    assert R.identity_fields("no-such-task") == core + [
        ("depth", ""),
        ("seed", ""),
        ("data", "stdlib"),
        ("stride", "0"),
    ]
    assert R.identity_fields(None) == R.identity_fields("no-such-task")


def test_row_key_reads_an_empty_option_as_its_default_and_ignores_measurements():
    key = R.row_key(PPL)
    assert dict(key)["data"] == "stdlib" and dict(key)["length"] == "32"
    assert R.row_key(dict(PPL, data="", text_field="", stride="", min_doc_tokens="")) == key
    assert R.row_key(dict(PPL, nll="3.2", status="oom", created_at="x", evalkit_version="0.4")) == key
    for field, other in [
        ("model", "n"),
        ("source", "gguf"),
        ("scale", "4"),
        ("alpha", "3"),
        ("length", "64"),
        ("sample", "1"),
        ("data", "pg19"),
        ("stride", "8"),
        ("trained_len", "32"),
        ("method", "pi"),
        ("adapter", "a"),
        ("quantize", "8bit"),
    ]:
        assert R.row_key(dict(PPL, **{field: other})) != key, field
    assert [k for k, _ in key] == [k for k, _ in R.identity_fields("ppl")]


def test_row_key_rope_scaling_only_tells_a_reset_apart():
    key = R.row_key(PPL)
    assert dict(key)["rope_scaling"] == ""
    assert R.row_key(dict(PPL, rope_scaling="yarn")) == key
    assert R.row_key(dict(PPL, rope_scaling="default")) == key
    removed = R.row_key(dict(PPL, rope_scaling="removed:yarn"))
    assert dict(removed)["rope_scaling"] == "removed"
    assert R.row_key(dict(PPL, rope_scaling="removed:llama3")) == removed != key


def test_row_key_params_are_normalised():
    yarn = dict(PPL, method="yarn", params="")
    full = dict(yarn, params="beta_fast=32,beta_slow=1")
    assert R.row_key(yarn) == R.row_key(full)
    assert dict(R.row_key(yarn))["params"] == "beta_fast=32,beta_slow=1"
    assert R.row_key(dict(yarn, params="beta_fast=16")) != R.row_key(yarn)


@pytest.mark.parametrize(
    "version, old",
    [
        ("0.2.9", True),
        ("0.1", True),
        ("0.3.0", False),
        ("1.0", False),
        ("0.10.1", False),
        ("", False),
        ("x.y", False),
        (None, False),
        ("0.2.dev0", True),
    ],
)
def test_legacy_is_evalkit_0_2_or_older(version, old):
    assert R.legacy({"evalkit_version": version}) is old


def test_legacy_given_and_row_keys():
    assert R.legacy_given({"scale": "2", "alpha": "2"}) == "scale=2,alpha=2"
    assert R.legacy_given({"scale": "", "alpha": 3.0}) == "alpha=3"
    assert R.legacy_given({}) == ""
    old = dict(PPL, method="ntk", scale="", alpha="2", params="", evalkit_version="0.2.1")
    keys = R.row_keys(old)
    assert len(keys) == 2 and keys[0] == R.row_key(old)
    assert keys[1] == R.row_key(dict(old, params="alpha=2"))
    assert R.row_keys(dict(old, evalkit_version="0.3.0")) == [R.row_key(old)]
    assert R.row_keys(dict(old, params="alpha=2")) == [R.row_key(dict(old, params="alpha=2"))]
    assert R.row_keys(dict(old, alpha="", scale="")) == [R.row_key(dict(old, alpha=""))]


def test_profile_key_hand_value():
    p = dict(PPL, position_start="0", position_end="16", nll="1.0")
    assert R.profile_key(p) == ("m", "hf", "", "", "ntk", "2", "2", "", "", "16", "32", "0", "stdlib", "0", "0", "text")
    assert R.profile_key(dict(p, data="", stride="", min_doc_tokens="", text_field="")) == R.profile_key(p)
    assert R.profile_key(dict(p, rope_scaling="removed:yarn"))[8] == "removed"


# --- CSV records ---


@pytest.mark.parametrize(
    "data, end",
    [
        (b"", 0),
        (b"a,b", 0),
        (b"a,b\n", 4),
        (b"a,b\nc", 4),
        (b'"x\ny",1\n', 8),
        (b'"x\ny",1', 0),
        (b'"a""\n",b\n', 9),
        (b'a,"x\ny', 0),
        (b'a,"x\ny"\n', 8),
        (b'a"b\n', 4),
        (b'a,"b\nc"\nd\n', 10),
        (b'"a"\n"b', 4),
        (b'"a"""\n', 6),
    ],
)
def test_complete_end_hand_values(data, end):
    assert R._complete_end(data) == end


def test_inspect_kinds(tmp_path):
    cols = ["model", "method", "task", "length", "sample", "status", "evalkit_version", "created_at", "nll"]
    path = tmp_path / "r.csv"
    assert R._inspect(path, cols, R.REQUIRED) == ("absent", b"", 0, cols)
    path.write_bytes(b"model,method,ta")
    assert R._inspect(path, cols, R.REQUIRED) == ("torn-header", b"model,method,ta", 0, cols)
    path.write_bytes(",".join(cols).encode() + b"\r")
    assert R._inspect(path, cols, R.REQUIRED)[0] == "torn-header"
    body = ",".join(cols).encode() + b"\nm,pi,ppl,8,0,ok,0.3.0,t,1.5\nm,pi,p"
    path.write_bytes(body)
    kind, data, end, header = R._inspect(path, cols, R.REQUIRED)
    assert (kind, data, header) == ("evalkit", body, cols)
    assert end == len(",".join(cols)) + 1 + len("m,pi,ppl,8,0,ok,0.3.0,t,1.5\n")
    for bad in [
        b"model,model\n",
        b"a,b\n1,2\n",
        b"Model," + ",".join(R.REQUIRED).encode() + b"\n",
        b"x",
        b"\xff\xfe\n",
    ]:
        path.write_bytes(bad)
        with pytest.raises(EvalkitError, match="is not an evalkit results file"):
            R._inspect(path, cols, R.REQUIRED)
    with pytest.raises(EvalkitError, match="is a folder"):
        R._inspect(tmp_path, cols, R.REQUIRED)


def test_read_table_fills_missing_columns_and_refuses_broken_records(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(",".join(R.REQUIRED) + "\nm,pi,ppl,8,0,ok,0.3.0,t\nm,pi,ppl,8,1,ok,0.3.0,t\nm,pi")
    header, rows = R.read_table(path, R.REQUIRED + ["nll"])
    assert header == R.REQUIRED and len(rows) == 2
    assert rows[1]["sample"] == "1" and rows[1]["nll"] == ""
    assert R.read_rows(tmp_path / "absent.csv") == []
    path.write_text(",".join(R.REQUIRED) + "\nm,pi,ppl\n")
    with pytest.raises(EvalkitError, match="record 1 does not have the 8 columns"):
        R.read_table(path, R.REQUIRED)
    path.write_bytes(",".join(R.REQUIRED).encode() + b"\nm,\xff,ppl,8,0,ok,0.3.0,t\n")
    with pytest.raises(EvalkitError, match="is not valid UTF-8"):
        R.read_table(path, R.REQUIRED)


def test_appender_writes_a_header_then_appends_and_cuts_a_torn_record(tmp_path):
    path = tmp_path / "sub" / "deeper" / "r.csv"
    cols = R.REQUIRED + ["nll"]
    a = R.CsvAppender(path, cols)
    assert path.read_bytes() == (",".join(cols) + "\n").encode()
    a.write([dict(zip(cols, ["m", "pi", "ppl", 8, 0, "ok", "0.3.0", "t", 1.25]))])
    a.close()
    assert path.read_bytes().split(b"\n")[1:] == [b"m,pi,ppl,8,0,ok,0.3.0,t,1.25", b""]
    with open(path, "a") as f:
        f.write("m,pi,ppl,8,1,o")
    a = R.CsvAppender(path, cols)
    a.write([dict(zip(cols, ["m", "pi", "ppl", 8, 2, "ok", "0.3.0", "t", True]))])
    a.close()
    assert path.read_bytes().split(b"\n")[1:] == [b"m,pi,ppl,8,0,ok,0.3.0,t,1.25", b"m,pi,ppl,8,2,ok,0.3.0,t,1", b""]
    path.write_text(",".join(cols[:3]))  # a torn header: written afresh
    R.CsvAppender(path, cols).close()
    assert path.read_text() == ",".join(cols) + "\n"


def test_appender_adds_missing_columns_keeping_rows_and_mode(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(",".join(R.REQUIRED) + "\nm,pi,ppl,8,0,ok,0.3.0,t\n")
    os.chmod(path, 0o640)
    a = R.CsvAppender(path, R.REQUIRED + ["nll", "depth"])
    assert a.columns == R.REQUIRED + ["nll", "depth"]
    a.close()
    assert path.read_text() == ",".join(R.REQUIRED + ["nll", "depth"]) + "\nm,pi,ppl,8,0,ok,0.3.0,t,,\n"
    assert path.stat().st_mode & 0o7777 == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name != "r.csv"]  # no temporary file left


def test_drop_rows_removes_the_cells_given(tmp_path):
    path = tmp_path / "results.csv"
    rows = [dict(PPL, sample=str(i)) for i in range(3)]
    cols = list(PPL)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    before = path.read_bytes()
    R.drop_rows(path, {R.row_key(dict(PPL, sample="9"))}, cols)
    assert path.read_bytes() == before  # nothing to drop: not rewritten
    R.drop_rows(path, {R.row_key(rows[1])}, cols)
    assert [r["sample"] for r in R.read_rows(path, cols)] == ["0", "2"]


# --- tidy, locks and --force across folders ---


def _tidy(folder, said: list):
    """R.tidy(folder), with the messages it logs appended to ``said``."""
    import logging

    class Keep(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    logger, handler = logging.getLogger("evalkit"), Keep()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return R.tidy(folder)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _write(path, rows, columns):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _profile(row, start, **kw):
    return {
        **{c: row.get(c, "") for c in R.PROFILE_COLUMNS},
        "position_start": str(start),
        "position_end": str(start + 8),
        "nll": "1.5",
        **kw,
    }


def test_tidy_keeps_the_first_copy_of_a_cell_and_returns_every_identity(tmp_path):
    cols = list(PPL) + ["nll"]
    first, second = dict(PPL, nll="1.0"), dict(PPL, nll="2.0")
    other = dict(PPL, sample="1", nll="3.0")
    _write(tmp_path / R.RESULTS, [first, second, other], cols)
    said = []
    seen = _tidy(tmp_path, said)
    assert [r["nll"] for r in R.read_rows(tmp_path / R.RESULTS, cols)] == ["1.0", "3.0"]
    assert said == [f"evalkit: {tmp_path / R.RESULTS}: removed the second copies of 1 cell(s) recorded twice"]
    assert seen == {R.row_key(first), R.row_key(other)}
    said.clear()
    before = (tmp_path / R.RESULTS).read_bytes()
    assert _tidy(tmp_path, said) == seen
    assert said == [] and (tmp_path / R.RESULTS).read_bytes() == before
    assert R.recorded(tmp_path) == seen


def test_tidy_returns_both_readings_of_a_legacy_row(tmp_path):
    old = dict(PPL, scale="", alpha="2", params="", evalkit_version="0.2.0")
    _write(tmp_path / R.RESULTS, [old], list(PPL))
    assert R.tidy(tmp_path) == set(R.row_keys(old)) == R.recorded(tmp_path)
    assert len(R.recorded(tmp_path)) == 2


def test_tidy_removes_profile_rows_of_uncommitted_cells_and_their_duplicates(tmp_path):
    cols = list(PPL)
    _write(tmp_path / R.RESULTS, [PPL], cols)
    orphan = dict(PPL, sample="7")
    prof = [_profile(PPL, 0), _profile(PPL, 8), _profile(PPL, 0, nll="9.9"), _profile(orphan, 0)]
    _write(tmp_path / R.PROFILE, prof, R.PROFILE_COLUMNS)
    said = []
    _tidy(tmp_path, said)
    kept = R.read_profile(tmp_path / R.PROFILE)
    assert [(p["sample"], p["position_start"], p["nll"]) for p in kept] == [("0", "0", "1.5"), ("0", "8", "1.5")]
    assert len(said) == 1 and said[0].startswith(f"evalkit: {tmp_path / R.PROFILE}: removed 2 row(s) of cells")
    said.clear()
    _tidy(tmp_path, said)
    assert said == []


def test_tidy_fills_the_source_of_evalkit_0_1_profile_rows_and_adds_missing_columns(tmp_path):
    _write(tmp_path / R.RESULTS, [PPL, dict(PPL, sample="1")], list(PPL))
    old_cols = [c for c in R.PROFILE_COLUMNS if c not in ("source", "text_field", "adapter")]
    _write(tmp_path / R.PROFILE, [_profile(PPL, 0), _profile(dict(PPL, sample="1"), 0)], old_cols)
    said = []
    _tidy(tmp_path, said)
    header = (tmp_path / R.PROFILE).read_text().splitlines()[0].split(",")
    assert header == old_cols + ["source", "text_field", "adapter"]
    assert [p["source"] for p in R.read_profile(tmp_path / R.PROFILE)] == ["hf", "hf"]
    assert said == [
        f"evalkit: {tmp_path / R.PROFILE}: removed 0 row(s) of cells whose results row is missing "
        "(a run stopped between the two writes) or written twice"
    ]


def test_fill_sources_leaves_an_ambiguous_source_empty():
    rows = [dict(PPL, source="hf"), dict(PPL, source="gguf"), dict(PPL, sample="1", source="hf")]
    prof = [
        _profile(PPL, 0, source=""),
        _profile(dict(PPL, sample="1"), 0, source=""),
        _profile(dict(PPL, sample="2"), 0, source=""),
        _profile(PPL, 8, source="mine"),
    ]
    R._fill_sources(prof, rows)
    assert [p["source"] for p in prof] == ["", "hf", "", "mine"]


def test_first_of_each_keeps_order_and_first_copies():
    rows = [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}, {"k": 1, "v": "c"}, {"k": 3, "v": "d"}, {"k": 2, "v": "e"}]
    assert [r["v"] for r in R._first_of_each(rows, lambda r: r["k"])] == ["a", "b", "d"]


def test_folder_lock_names_its_holder_and_refuses_a_second_run(tmp_path):
    out = tmp_path / "new" / "out"
    lock = L.FolderLock(out, wait=0)
    text = (out / L.LOCK).read_text()
    assert text == f"pid {os.getpid()} on {__import__('socket').gethostname()}\n"
    with pytest.raises(EvalkitError, match=r"is being written by another evalkit run \(pid \d+ on .+\)$"):
        L.FolderLock(out, wait=0)
    with pytest.raises(EvalkitError, match="being written by another evalkit run"):
        L.check_idle(out)
    lock.release()
    lock.release()  # twice: no error
    assert (out / L.LOCK).is_file()  # the lock file stays
    L.check_idle(out)  # free again
    L.FolderLock(out, wait=0).release()


def test_folder_lock_waits_then_refuses(tmp_path):
    import time

    lock = L.FolderLock(tmp_path, wait=0)
    start = time.monotonic()
    with pytest.raises(EvalkitError) as e:
        L.FolderLock(tmp_path, wait=0.3)
    assert 0.25 <= time.monotonic() - start < 2
    assert e.value.args[0].startswith(f"{tmp_path} is being written by another evalkit run (pid ")
    lock.release()


def test_check_idle_without_a_lock_file_or_with_an_empty_one(tmp_path):
    L.check_idle(tmp_path / "absent")
    L.check_idle(tmp_path)
    (tmp_path / L.LOCK).write_text("")
    L.check_idle(tmp_path)  # a lock file no one holds
    import fcntl

    with open(tmp_path / L.LOCK) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(EvalkitError, match=r"\(another process\)"):
            L.check_idle(tmp_path)


def test_drop_everywhere_drops_the_planned_cells_in_every_free_folder(tmp_path, monkeypatch):
    clock = iter(range(0, 1000, 1))  # FolderLock's 2 s of retries pass at once
    monkeypatch.setattr(L.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(L.time, "sleep", lambda _: None)
    own, other, busy, busy_other = (tmp_path / n for n in ("own", "other", "busy", "busy_other"))
    cols = list(PPL)
    planned = dict(PPL, sample="0")
    kept = dict(PPL, sample="1")
    for folder in (own, other, busy):
        folder.mkdir()
        _write(folder / R.RESULTS, [planned, kept], cols)
        _write(folder / R.PROFILE, [_profile(planned, 0), _profile(kept, 0)], R.PROFILE_COLUMNS)
    busy_other.mkdir()
    _write(busy_other / R.RESULTS, [kept], cols)
    own_lock = L.FolderLock(own)
    holder = L.FolderLock(busy_other)
    R.drop_everywhere([own, busy_other, other], own, [planned])  # a busy folder without the cells is skipped
    for folder in (own, other):
        assert [r["sample"] for r in R.read_rows(folder / R.RESULTS, cols)] == ["1"]
        assert [p["sample"] for p in R.read_profile(folder / R.PROFILE)] == ["1"]
    assert [r["sample"] for r in R.read_rows(busy_other / R.RESULTS, cols)] == ["1"]
    L.FolderLock(other, wait=0).release()  # the lock taken on `other` was released
    holder.release()
    holder = L.FolderLock(busy)
    with pytest.raises(EvalkitError, match="--force: .* records cells of this run and is being written by another run"):
        R.drop_everywhere([own, busy], own, [planned])
    assert [r["sample"] for r in R.read_rows(busy / R.RESULTS, cols)] == ["0", "1"]
    holder.release()
    own_lock.release()


def test_rewrite_keeps_only_the_columns_given_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "r.csv"
    R._rewrite(path, [{"a": "1", "b": "x\ny", "c": "dropped"}], ["a", "b"])
    assert path.read_bytes() == b'a,b\n1,"x\ny"\n'
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
    assert path.stat().st_mode & 0o777 == 0o600  # a new file: mkstemp's private mode
    os.chmod(path, 0o664)
    R._rewrite(path, [], ["a"])
    assert path.read_bytes() == b"a\n" and path.stat().st_mode & 0o777 == 0o664


def test_rewrite_goes_through_a_new_hidden_file_beside_the_target(tmp_path, monkeypatch):
    made = []
    real = R.tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(R.tempfile, "mkstemp", spy)
    path = tmp_path / "results.csv"
    path.write_text("a\n")
    R._rewrite(path, [{"a": "é"}], ["a"])
    assert len(made) == 1
    tmp = os.path.basename(made[0])
    assert os.path.dirname(made[0]) == str(tmp_path)
    assert (
        tmp.startswith(".results.csv.") and tmp.endswith(".evalkit-tmp") and len(tmp) > len(".results.csv..evalkit-tmp")
    )
    assert path.read_bytes() == "a\né\n".encode()


def test_drop_rows_matches_either_reading_of_a_legacy_row(tmp_path):
    path = tmp_path / "results.csv"
    old = dict(PPL, scale="", alpha="2", params="", evalkit_version="0.2.0")
    _write(path, [old, dict(old, sample="1")], list(PPL))
    R.drop_rows(path, {R.row_key(dict(old, params="alpha=2"))}, list(PPL))  # the "alpha was given" reading
    assert [r["sample"] for r in R.read_rows(path, list(PPL))] == ["1"]


def test_inspect_edges_of_the_header_line(tmp_path):
    path = tmp_path / "r.csv"
    line = ",".join(R.REQUIRED)
    path.write_bytes(line.encode() + b"\n")  # the header alone: evalkit's, complete
    assert R._inspect(path, R.REQUIRED, R.REQUIRED) == ("evalkit", line.encode() + b"\n", len(line) + 1, R.REQUIRED)
    crlf = line.encode() + b"\r\nm,pi,ppl,8,0,ok,0.3.0,t\r\n"  # CRLF: the header's \r is not part of a name
    path.write_bytes(crlf)
    assert R._inspect(path, R.REQUIRED, R.REQUIRED) == ("evalkit", crlf, len(crlf), R.REQUIRED)
    quoted = ",".join(f'"{c}"' for c in R.REQUIRED).encode() + b"\nm,pi,ppl,8,0,ok,0.3.0,t\n"
    path.write_bytes(quoted)
    assert R._inspect(path, R.REQUIRED, R.REQUIRED) == ("evalkit", quoted, len(quoted), R.REQUIRED)
    reordered = ",".join(reversed(R.REQUIRED)).encode()
    for bad in [
        line.encode() + b"X",  # starts with the header, goes on without a newline
        reordered,  # all the names, no newline, not a prefix of the header
        line.encode() + b" \n",
        line.encode() + b"\t\n",
        line.encode() + b"X\n",
    ]:
        path.write_bytes(bad)
        with pytest.raises(EvalkitError, match="is not an evalkit results file"):
            R._inspect(path, R.REQUIRED, R.REQUIRED)


def test_read_table_keeps_a_quoted_crlf_and_fills_the_columns_asked(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(",".join(R.REQUIRED + ["answer"]).encode() + b'\nm,pi,passkey,8,0,ok,0.3.0,t,"a\r\nb"\n')
    rows = R.read_rows(path, R.REQUIRED + ["answer", "extra"])
    assert rows == [
        {**dict(zip(R.REQUIRED, ["m", "pi", "passkey", "8", "0", "ok", "0.3.0", "t"])), "answer": "a\r\nb", "extra": ""}
    ]
    assert "depth" in R.read_rows(path)[0]  # the columns evalkit writes now, by default
    prof = tmp_path / "positions.csv"
    old = [c for c in R.PROFILE_COLUMNS if c != "text_field"]
    _write(prof, [_profile(PPL, 0)], old)
    (row,) = R.read_profile(prof)
    assert set(row) == set(R.PROFILE_COLUMNS) and row["text_field"] == ""


def test_tidy_counts_each_cell_recorded_twice(tmp_path):
    rows = [
        dict(PPL, sample="0"),
        dict(PPL, sample="1"),
        dict(PPL, sample="0"),
        dict(PPL, sample="1"),
        dict(PPL, sample="1"),
    ]
    _write(tmp_path / R.RESULTS, rows, list(PPL))
    said = []
    _tidy(tmp_path, said)
    assert said == [f"evalkit: {tmp_path / R.RESULTS}: removed the second copies of 2 cell(s) recorded twice"]
    assert [r["sample"] for r in R.read_rows(tmp_path / R.RESULTS, list(PPL))] == ["0", "1"]


def test_folder_lock_retries_every_50_ms_for_its_wait_then_refuses(tmp_path, monkeypatch):
    lock = L.FolderLock(tmp_path, wait=0)
    clock, sleeps = iter(range(0, 1000)), []
    monkeypatch.setattr(L.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(L.time, "sleep", sleeps.append)
    with pytest.raises(EvalkitError):
        L.FolderLock(tmp_path)  # default wait 2 s: the clock reads 0 (deadline 2), then 1 (retry), then 2 (stop)
    assert sleeps == [0.05]
    sleeps.clear()
    with pytest.raises(EvalkitError):
        L.FolderLock(tmp_path, wait=4)
    assert sleeps == [0.05] * 3
    lock.release()


def test_folder_lock_held_by_a_process_that_wrote_nothing(tmp_path):
    import fcntl

    (tmp_path / L.LOCK).write_text("")
    with open(tmp_path / L.LOCK) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(EvalkitError, match=r"being written by another evalkit run \(another process\)"):
            L.FolderLock(tmp_path, wait=0)
