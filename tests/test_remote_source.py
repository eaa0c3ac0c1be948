"""A remote URL source is keyed by what its server says about the file (fsspec's info(): ETag, size,
Last-Modified), so a changed remote file makes its load step stale. No network: a file served by
http.server on 127.0.0.1, read through fsspec's http filesystem (aiohttp)."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runner import api

ROOT = Path(__file__).resolve().parent.parent
ROWS = [json.loads(x) for x in (ROOT / "data" / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()[:6]]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _WithETag(_Quiet):
    """Sends an ETag, the sha1 of the file's bytes, as object stores do."""

    def end_headers(self):
        f = Path(self.translate_path(self.path))
        if f.is_file():
            self.send_header("ETag", '"' + hashlib.sha1(f.read_bytes()).hexdigest() + '"')
        super().end_headers()


class _SaysNothing(_Quiet):
    """Sends the bytes with no size, date or ETag (a streamed response from a plain server)."""

    def send_header(self, keyword, value):
        if keyword not in ("Content-Length", "Last-Modified"):
            super().send_header(keyword, value)


@pytest.fixture()
def serve(tmp_path):
    """serve(handler) -> the base URL of tmp_path/www, served on 127.0.0.1 until the test ends."""
    servers = []

    def start(handler=_Quiet):
        (tmp_path / "www").mkdir(exist_ok=True)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tmp_path / "www")))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"
    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    f = tmp_path / "www" / "rows.jsonl"
    f.write_text("".join(json.dumps({"prompt": r["question"], "response": r["answer"]}) + "\n"
                         for r in rows), encoding="utf-8")
    return f


def _recipe(tmp_path: Path, url: str) -> Path:
    (tmp_path / "r.yaml").write_text(f"recipe: remote\nmodel: {{base: builtin:tiny}}\n"
                                     f"sources:\n  web: {{path: '{url}/rows.jsonl', format: prompt_response}}\n",
                                     encoding="utf-8")
    return tmp_path / "r.yaml"


def _load_step(path: Path, cache: Path):
    plan = api.plan(path, cache_dir=str(cache))
    return next(s for s in plan.steps if s.name == "load.web"), plan.graph.notes


def _run_load(path: Path, cache: Path, out: Path) -> int:
    _, _, records, _ = api.run(path, cache_dir=str(cache), output=str(out), only="load.web")
    [rec] = [r for r in records if r.name == "load.web"]
    assert rec.status == "ran"
    return rec.stats["rows_out"]


def test_a_changed_remote_file_makes_its_load_step_stale(tmp_path, serve):
    path, cache = _recipe(tmp_path, serve()), tmp_path / "cache"
    f = _write(tmp_path, ROWS[:4])
    assert _run_load(path, cache, tmp_path / "o1") == 4
    step, notes = _load_step(path, cache)
    assert step.status == "cached" and not notes
    _write(tmp_path, ROWS[:5])                                     # one more row: the size moves
    step, _ = _load_step(path, cache)
    assert step.status == "stale" and step.why == [f"file {_url(path)} changed"]
    assert _run_load(path, cache, tmp_path / "o2") == 5             # and the run reads the new rows
    # the same size, a later date (http.server's Last-Modified): stale again
    st = f.stat()
    f.write_bytes(f.read_bytes().swapcase())
    os.utime(f, (st.st_atime + 10, st.st_mtime + 10))
    assert f.stat().st_size == st.st_size
    assert _load_step(path, cache)[0].status == "stale"


def test_an_etag_change_is_seen_when_size_and_date_stay(tmp_path, serve):
    path, cache = _recipe(tmp_path, serve(_WithETag)), tmp_path / "cache"
    f = _write(tmp_path, ROWS[:4])
    assert _run_load(path, cache, tmp_path / "o1") == 4
    st = f.stat()
    f.write_bytes(f.read_bytes().swapcase())                        # other bytes, the same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))                # ... and the same date
    step, _ = _load_step(path, cache)
    assert step.status == "stale" and step.why == [f"file {_url(path)} changed"]


def test_a_server_that_says_nothing_keys_the_step_by_its_url_and_plan_says_so(tmp_path, serve):
    path, cache = _recipe(tmp_path, serve(_SaysNothing)), tmp_path / "cache"
    _write(tmp_path, ROWS[:4])
    assert _run_load(path, cache, tmp_path / "o1") == 4             # the rows are read all the same
    _write(tmp_path, ROWS[:5])
    step, notes = _load_step(path, cache)
    assert step.status == "cached"                                  # the URL alone: the change is not seen
    assert notes == (f"load.web: {_url(path)}: the server gives no ETag, version, checksum, date or size, so "
                     "the URL alone keys this step and a changed file is not seen; rerun it with --force",)


def test_an_unreachable_server_is_a_note_not_a_traceback(tmp_path, serve):
    url = serve()
    path, cache = _recipe(tmp_path, url), tmp_path / "cache"
    _write(tmp_path, ROWS[:4])
    assert _run_load(path, cache, tmp_path / "o1") == 4
    (tmp_path / "www" / "rows.jsonl").unlink()                       # 404 now
    step, notes = _load_step(path, cache)
    assert step.status == "stale" and len(notes) == 1
    assert notes[0].startswith(f"load.web: {_url(path)}: cannot tell whether the file changed (unreachable: ")


def _url(path: Path) -> str:
    return next(line.split("'")[1] for line in path.read_text().splitlines() if "path:" in line)
