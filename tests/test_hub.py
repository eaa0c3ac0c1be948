"""Sources by hub dataset id and by remote URL, with no network: a hub cache laid out as huggingface_hub
writes it (tests/helpers/hub.py) read through the real `datasets` code, via the CLI as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.hub import ROOT, SHA_A, SHA_B, recipe, write_chat, write_plain

HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "deepspeed")


@pytest.fixture()
def hub(tmp_path):
    cache = tmp_path / "hf" / "hub"
    write_chat(cache)
    write_plain(cache)
    return cache


def cli(*args, cache: Path, offline: bool = True, env: dict | None = None, cwd: Path | None = None):
    e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache),
         "HF_DATASETS_CACHE": str(cache.parent / "datasets"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    e.pop("HF_HUB_OFFLINE", None), e.pop("HF_DATASETS_OFFLINE", None)
    if offline:
        e["HF_HUB_OFFLINE"] = "1"
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT)


def records(cache_dir: Path, step_fp: str) -> list[dict]:
    return [json.loads(x) for x in (cache_dir / "objects" / step_fp / "records.jsonl").read_text().splitlines()]


def run_load(r: Path, step: str, hub: Path, out: Path, *sets: str, **kw):
    args = ["run", str(r), "--only", step, "--cache-dir", str(out / "cache"), "--output", str(out / f"run-{step}")]
    for s in sets:
        args += ["--set", s]
    return cli(*args, cache=hub, **kw)


def step_of(out: Path, name: str) -> dict:
    report = json.loads((out / f"run-{name}" / "report.json").read_text())
    return next(s for s in report["steps"] if s["name"] == name), report


# --- 1. a source names a hub dataset, read by datasets, mapped and quarantined like a file ---------

def test_hub_rows_equal_the_same_file_read_locally_and_bad_rows_are_quarantined(hub, tmp_path):
    shards = hub / "datasets--acme--chat" / "snapshots" / SHA_A / "data" / "train_sft-*.parquet"
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages}\n"
                         f"  local: {{path: '{shards}', format: messages}}\n")
    p = run_load(r, "load.chat", hub, tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert run_load(r, "load.local", hub, tmp_path / "o").returncode == 0
    chat, report = step_of(tmp_path / "o", "load.chat")
    assert (chat["rows_in"], chat["rows_out"], chat["dropped"]) == (400, 384, {"quarantine:empty_turn": 16})
    local, _ = step_of(tmp_path / "o", "load.local")
    a = records(tmp_path / "o" / "cache", chat["fingerprint"])
    b = records(tmp_path / "o" / "cache", local["fingerprint"])
    assert [x["messages"] for x in a] == [x["messages"] for x in b] and [x["id"] for x in a][:2] == ["chat-1", "chat-2"]
    q = [json.loads(x) for x in (tmp_path / "o" / "run-load.chat" / "quarantine" / "chat.jsonl").read_text().splitlines()]
    assert len(q) == 16 and q[0]["file"] == f"hub:acme/chat@{SHA_A[:12]}/default/train_sft" and q[0]["row"] == 1
    # the commit read is in the report (json and markdown) and in the step's manifest
    assert report["datasets"]["chat"] == {"dataset": "acme/chat", "config": None, "splits": ["train_sft"],
                                          "revision": None, "sha": SHA_A}
    assert SHA_A in (tmp_path / "o" / "run-load.chat" / "report.md").read_text()
    manifest = json.loads((tmp_path / "o" / "cache" / "objects" / chat["fingerprint"] / "manifest.json").read_text())
    assert manifest["components"]["files"] == {"hf://datasets/acme/chat": SHA_A}
    assert manifest["stats"]["origin"]["sha"] == SHA_A


def test_config_several_splits_and_data_files(hub, tmp_path):
    r = recipe(tmp_path, "  both: {dataset: acme/chat, split: [train_sft, test_sft], format: messages}\n"
                         "  alp: {dataset: acme/chat, config: alpaca, format: alpaca}\n"
                         "  plain: {dataset: acme/plain, data_files: 'part/*.jsonl', format: alpaca}\n")
    for step in ("load.both", "load.alp", "load.plain"):
        p = run_load(r, step, hub, tmp_path / step)
        assert p.returncode == 0, p.stderr
    both, _ = step_of(tmp_path / "load.both", "load.both")
    assert (both["rows_in"], both["rows_out"]) == (430, 413)     # 400 + 30 rows, 16 + 1 empty answers
    assert step_of(tmp_path / "load.alp", "load.alp")[0]["rows_out"] == 50
    plain, report = step_of(tmp_path / "load.plain", "load.plain")
    assert plain["rows_out"] == 60 and report["datasets"]["plain"]["sha"] == SHA_A
    demo = json.loads((ROOT / "data" / "alpaca_en_demo.json").read_text())
    got = records(tmp_path / "load.plain" / "cache", plain["fingerprint"])
    assert got[0]["messages"][-1]["content"] == demo[0]["output"]


# --- 2. reproducible: the sha is the fingerprint; moved -> stale; pinning; diff; the warning --------

def test_plan_says_stale_when_the_dataset_moved_and_a_pin_keeps_the_cache(hub, tmp_path):
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages}\n")
    cache = tmp_path / "o" / "cache"
    assert run_load(r, "load.chat", hub, tmp_path / "o").returncode == 0

    def load_status(*sets):
        args = ["plan", str(r), "--cache-dir", str(cache), "--format", "json"]
        for s in sets:
            args += ["--set", s]
        p = cli(*args, cache=hub)
        assert p.returncode == 0, p.stderr
        return next(s for s in json.loads(p.stdout)["steps"] if s["name"] == "load.chat")

    assert load_status()["status"] == "cached"
    write_chat(hub, SHA_B, extra=" (revised)")                  # main moves to a new commit
    moved = load_status()
    assert moved["status"] == "stale"
    assert moved["why"] == [f"dataset acme/chat moved: {SHA_A[:12]} -> {SHA_B[:12]}"]
    # pinning the commit that was run keeps its cache; pinning the new one is the move
    assert load_status(f"sources.chat.revision={SHA_A}")["status"] == "cached"
    assert load_status(f"sources.chat.revision={SHA_B}")["status"] == "stale"
    p = run_load(r, "load.chat", hub, tmp_path / "o")
    assert p.returncode == 0
    new, _ = step_of(tmp_path / "o", "load.chat")
    assert records(cache, new["fingerprint"])[0]["messages"][-1]["content"].endswith(" (revised)")


def test_missing_revision_warns_with_the_sha_and_diff_shows_a_revision_change(hub, tmp_path):
    a = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages}\n", name="a")
    b = recipe(tmp_path, f"  chat: {{dataset: acme/chat, split: train_sft, format: messages, revision: '{SHA_B}'}}\n",
               name="b")
    write_chat(hub, SHA_B, extra=" (revised)", point_main=False)
    p = cli("validate", str(a), cache=hub)
    assert p.returncode == 0
    assert f"warning: sources.chat: acme/chat@main resolves to {SHA_A}" in p.stderr
    assert f"--set sources.chat.revision={SHA_A}" in p.stderr
    assert "warning" not in cli("validate", str(b), cache=hub).stderr      # pinned: nothing to say
    d = cli("diff", str(a), str(b), "--cache-dir", str(tmp_path / "c"), cache=hub)
    assert d.returncode == 0, d.stderr
    assert "sources.chat.revision" in d.stdout and SHA_B in d.stdout
    assert f"dataset acme/chat moved: {SHA_A[:12]} -> {SHA_B[:12]}" in d.stdout


# --- 3. offline first: one clear line, never a retry loop, validate checks shape from the cache -----

@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_a_dataset_that_is_not_cached_is_one_clear_line(hub, tmp_path, how):
    r = recipe(tmp_path, "  chat: {dataset: acme/missing, format: messages}\n")
    # unreachable: no offline flag, and the hub endpoint refuses connections (as with no network)
    env = {"HF_ENDPOINT": "http://127.0.0.1:9"} if how == "unreachable" else {}
    p = run_load(r, "load.chat", hub, tmp_path / "o", offline=how == "offline", env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Retrying" not in p.stderr
    [line] = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert "acme/missing" in line and "hf download acme/missing --repo-type dataset" in line


def test_a_half_downloaded_split_is_an_error_not_a_subset(hub, tmp_path):
    (hub / "datasets--acme--chat" / "snapshots" / SHA_A / "data" / "train_sft-00001-of-00002.parquet").unlink()
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages}\n")
    p = run_load(r, "load.chat", hub, tmp_path / "o")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    [line] = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert "could not read them from the cached snapshot" in line and "num_examples=200" in line
    assert f"hf download acme/chat --repo-type dataset --revision {SHA_A}" in line


def test_an_unreachable_hub_falls_back_to_the_cache(hub, tmp_path):
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: test_sft, format: messages}\n")
    p = run_load(r, "load.chat", hub, tmp_path / "o", offline=False, env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert p.returncode == 0, p.stderr
    assert "not reachable" in p.stderr and "Retrying" not in p.stderr
    assert step_of(tmp_path / "o", "load.chat")[0]["rows_out"] == 29


def test_validate_checks_the_shape_from_the_cache(hub, tmp_path):
    r = recipe(tmp_path, "  a: {dataset: acme/chat, split: train, format: messages}\n"
                         "  b: {dataset: acme/chat, config: alpacca, format: alpaca}\n"
                         "  c: {dataset: 'acme//x', format: alpaca}\n"
                         f"  d: {{path: {ROOT}/data/identity.json, dataset: acme/chat, format: alpaca}}\n"
                         "  e: {format: alpaca}\n"
                         f"  f: {{path: {ROOT}/data/identity.json, revision: main, format: alpaca}}\n"
                         "  g: {dataset: acme/chat, split: train_sft, shuffle: 100, format: messages}\n"
                         "  h: {path: 's3://bucket/rows.txt', format: alpaca}\n"
                         "  i: {dataset: acme/notcached, split: anything, format: alpaca}\n"
                         "  j: {dataset: acme/chat, revision: '../../../x', format: alpaca}\n")
    p = cli("validate", str(r), cache=hub)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr
    assert "sources.a.split: acme/chat@a1a1a1a1a1a1 (config default) has no split 'train' (did you mean 'train_sft'?)" in err
    assert "sources.b.config: acme/chat@a1a1a1a1a1a1 has no config 'alpacca' (did you mean 'alpaca'?)" in err
    assert "sources.c.dataset: 'acme//x' is not a hub dataset id" in err
    assert "sources.d: give either `path`" in err and "not both" in err
    assert "sources.e: give either `path`" in err
    assert "sources.f.revision: only applies to a hub `dataset`" in err
    assert "sources.g.shuffle: draws a sample of `limit` rows; set `limit` too" in err
    assert "sources.h.path: cannot read s3://bucket/rows.txt" in err
    assert "sources.i" not in err           # not cached: nothing to check against, and nothing is downloaded
    assert "sources.j.revision: '../../../x' is not a branch, tag or commit sha" in err   # it names a file in refs/
    assert "10 errors" not in err and "9 errors" in err


LIGHT = """
import sys
from runner.cli import main
for argv in (["validate", sys.argv[1]], ["plan", sys.argv[1], "--cache-dir", sys.argv[2]],
             ["diff", sys.argv[1], sys.argv[1]], ["validate", "recipes/hub_ultrachat.yaml"],
             ["plan", "recipes/hub_ultrachat.yaml", "--cache-dir", sys.argv[2]]):
    assert main(argv) in (0, 1), argv
print("HEAVY:", sorted(m for m in {HEAVY} if m in sys.modules), "HUB:", "huggingface_hub.hf_api" in sys.modules)
"""


def test_validate_and_plan_of_hub_sources_stay_light(hub, tmp_path):
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages}\n")
    e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(hub)}
    out = subprocess.run([sys.executable, "-c", LIGHT.replace("{HEAVY}", repr(set(HEAVY))), str(r),
                          str(tmp_path / "c")], capture_output=True, text=True, cwd=ROOT, env=e)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY: [] HUB: False" in out.stdout


# --- 4. streaming with a deterministic, seeded cap ---------------------------------------------------

def test_streaming_shuffle_and_limit_draw_the_same_seeded_sample(hub, tmp_path):
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages, streaming: true, "
                         "shuffle: 64, limit: 40}\n")

    def sample(out: str, *sets: str) -> list[str]:
        p = run_load(r, "load.chat", hub, tmp_path / out, *sets)
        assert p.returncode == 0, p.stderr
        s, _ = step_of(tmp_path / out, "load.chat")
        assert s["rows_in"] == 40                          # the cap counts every row read, bad ones too
        return [x["id"] for x in records(tmp_path / out / "cache", s["fingerprint"])]

    first = sample("one")
    assert first == sample("two")                        # a fresh cache, the same rows
    assert first != [f"chat-{i}" for i in range(1, 41) if i % 25]   # not the first rows
    assert len(set(first)) == len(first) and all(0 < int(x.split("-")[1]) < 400 for x in first)
    other = sample("three", "seed=7")
    assert other != first                                # the recipe's seed draws it
    # no shuffle: the first rows, read as a stream (nothing prepared in the datasets cache)
    p = run_load(r, "load.chat", hub, tmp_path / "four", "sources.chat.shuffle=null")
    assert p.returncode == 0
    s, _ = step_of(tmp_path / "four", "load.chat")
    assert [x["id"] for x in records(tmp_path / "four" / "cache", s["fingerprint"])] == \
        [f"chat-{i}" for i in range(1, 40) if i % 25]
    assert not list((hub.parent / "datasets").rglob("*.arrow"))


# --- remote files ---------------------------------------------------------------------------------

def test_a_remote_url_names_the_missing_filesystem_package(hub, tmp_path):
    # s3fs is hidden from the run (a None entry in sys.modules makes its import fail), whether or not
    # it is installed here
    code = "import sys\nsys.modules['s3fs'] = None\nfrom runner.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    r = recipe(tmp_path, "  remote: {path: 's3://some-bucket/rows.jsonl', format: alpaca}\n")
    e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", code, "run", str(r), "--only", "load.remote", "--cache-dir",
                        str(tmp_path / "c"), "--output", str(tmp_path / "run")], capture_output=True, text=True,
                       cwd=ROOT, env=e)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "pip install s3fs" in p.stderr


def test_a_remote_url_is_read_by_the_same_readers(hub, tmp_path):
    """fsspec's memory:// filesystem stands in for s3/gs/https: the same parsers, line numbers and
    quarantine as a local file."""
    code = f"""
import fsspec, sys
from runner.cli import main
with fsspec.open("memory://bucket/rows.jsonl", "wb") as f:
    f.write(b"\\n".join(open({str(ROOT / 'data' / 'gsm8k_train.jsonl')!r}, "rb").read().split(b"\\n")[:50]) + b"\\nnot json\\n")
sys.exit(main(sys.argv[1:]))
"""
    r = recipe(tmp_path, "  remote: {path: 'memory://bucket/rows.jsonl', format: fields, "
                         "fields: {user: '{{ question }}', assistant: '{{ answer }}'}}\n")
    e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", code, "run", str(r), "--only", "load.remote", "--cache-dir",
                        str(tmp_path / "c"), "--output", str(tmp_path / "run")], capture_output=True, text=True,
                       cwd=ROOT, env=e)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    step = report["steps"][0]
    assert (step["rows_in"], step["rows_out"]) == (51, 50)
    [q] = [json.loads(x) for x in (tmp_path / "run" / "quarantine" / "remote.jsonl").read_text().splitlines()]
    assert (q["file"], q["line"], q["code"]) == ("memory://bucket/rows.jsonl", 51, "invalid_json")


# --- online: the run asks the hub (a local stand-in for its API) which commit the branch names now ---

@pytest.fixture()
def fake_hub_api():
    """Answers GET /api/datasets/acme/chat/revision/main with a sha (as the hub does) and 404 with the
    hub's error code for anything else; counts the requests."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    state = {"sha": SHA_B, "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"].append(self.path)
            if self.path.startswith("/api/datasets/acme/chat/revision/main"):
                body = json.dumps({"id": "acme/chat", "sha": state["sha"], "siblings": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            else:
                body = b'{"error": "Repository not found"}'
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["endpoint"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def test_a_run_follows_the_branch_to_its_new_commit(hub, tmp_path, fake_hub_api):
    r = recipe(tmp_path, "  chat: {dataset: acme/chat, split: train_sft, format: messages}\n")
    assert run_load(r, "load.chat", hub, tmp_path / "o").returncode == 0            # offline: main = A
    write_chat(hub, SHA_B, extra=" (revised)", point_main=False)                      # B is cached, main not moved
    env = {"HF_ENDPOINT": fake_hub_api["endpoint"]}
    p = run_load(r, "load.chat", hub, tmp_path / "o", offline=False, env=env)
    assert p.returncode == 0, p.stderr
    step, report = step_of(tmp_path / "o", "load.chat")
    assert step["status"] == "ran" and report["datasets"]["chat"]["sha"] == SHA_B
    assert records(tmp_path / "o" / "cache", step["fingerprint"])[0]["messages"][-1]["content"].endswith(" (revised)")
    assert (hub / "datasets--acme--chat" / "refs" / "main").read_text() == SHA_B    # as huggingface_hub records it
    # one request for the branch; the rows came from the cached snapshot
    assert fake_hub_api["requests"] == ["/api/datasets/acme/chat/revision/main"]
    # a pinned, cached sha asks nothing
    p = run_load(r, "load.chat", hub, tmp_path / "o", f"sources.chat.revision={SHA_B}", offline=False, env=env)
    assert p.returncode == 0 and len(fake_hub_api["requests"]) == 1


def test_a_dataset_the_hub_does_not_have_is_one_line(hub, tmp_path, fake_hub_api):
    r = recipe(tmp_path, "  chat: {dataset: acme/nope, format: messages}\n")
    p = run_load(r, "load.chat", hub, tmp_path / "o", offline=False, env={"HF_ENDPOINT": fake_hub_api["endpoint"]})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == ("error: dataset acme/nope does not exist on the hub or is private "
                                                 "(log in with `hf auth login` or set HF_TOKEN for a private dataset)")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="aZ09_-./é ", max_size=14) | st.from_regex(r"[a-z]{90,100}(/[a-z]{1,3})?", fullmatch=True))
def test_dataset_id_rules_agree_with_huggingface_hub(text):
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from runner.sources.hub import id_problem
    try:
        validate_repo_id(text)
        hub_ok = True
    except HFValidationError:
        hub_ok = False
    assert (id_problem(text) is None) == hub_ok
