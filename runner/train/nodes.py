"""Training past one node: `recipe run R --launcher torchrun --nnodes M --node-rank K --rdzv-endpoint HOST:PORT
--num-procs N` on each of M machines (N: the processes of the whole run, as train.world_size counts them; each
node runs N / M of them).

Node 0 runs the recipe as one node would: every data step, every evaluation, the cache commits and the run
report, once. Another node runs no step at all. It joins node 0 at HOST:PORT, where node 0's `recipe run` keeps a
small key-value store (torch's TCPStore) for as long as it runs, and then follows: for each training launch
node 0 announces (the spec file's text and a fresh rendezvous port), it starts its own torchrun agent with its
N / M processes on that spec, as node K of a static rendezvous whose master is node 0's agent. So the global
ranks are those of one node with N processes (node K holds ranks K*N/M ...), and the cache has one writer: the
processes on the other nodes read artifacts node 0 committed before it announced the launch, which is why
--cache-dir must name a folder every node mounts at the same path (checked when a node joins).

Nothing secret travels through the store: a value from the environment stays a placeholder in the spec text,
and each node's processes get the values from that node's own environment (worker.py), as they would on one.
"""
from __future__ import annotations

import hashlib
import json
import secrets as random_tokens
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

from ..errors import RecipeError

# how long node 0 waits for the other nodes to join, and they for node 0 to be up (torchrun's own default
# rendezvous timeout is the same 15 minutes)
JOIN_S = 900
POLL_S = 0.5
SAY_EVERY_S = 60


@dataclass(frozen=True)
class Nodes:
    """Where this `recipe run` stands among the run's nodes (--nnodes, --node-rank, --rdzv-endpoint)."""
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def many(self) -> bool:
        return self.nnodes > 1

    @property
    def follower(self) -> bool:
        """A node that runs no step: it trains its share of node 0's launches."""
        return self.many and self.node_rank > 0

    @property
    def host(self) -> str:
        return self.rdzv_endpoint.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.rdzv_endpoint.rsplit(":", 1)[1])


def check(nodes: Nodes, launcher: str, num_procs: int | None) -> None:
    """The rule for --nnodes, --node-rank and --rdzv-endpoint (with --launcher and --num-procs)."""
    given = nodes != Nodes()
    if given and launcher != "torchrun":
        where = (": the DeepSpeed launcher reaches the other nodes itself, through --hostfile (pdsh/ssh); start it "
                 "on one node") if launcher == "deepspeed" else ""
        raise RecipeError(f"--nnodes, --node-rank and --rdzv-endpoint are for --launcher torchrun{where}")
    if nodes.nnodes < 1:
        raise RecipeError(f"--nnodes {nodes.nnodes}: it must be at least 1")
    if not 0 <= nodes.node_rank < nodes.nnodes:
        raise RecipeError(f"--node-rank {nodes.node_rank}: with --nnodes {nodes.nnodes} it must be 0 to "
                          f"{nodes.nnodes - 1} (node 0 runs the data steps and hosts --rdzv-endpoint)")
    if nodes.many and not nodes.rdzv_endpoint:
        raise RecipeError(f"--nnodes {nodes.nnodes} needs --rdzv-endpoint HOST:PORT: an address of node 0 and a "
                          "free port there, the same on every node")
    if nodes.rdzv_endpoint is not None:
        host, _, port = nodes.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RecipeError(f"--rdzv-endpoint {nodes.rdzv_endpoint!r}: write it as HOST:PORT (node 0's address "
                              "and a free port there), e.g. 10.0.0.1:29400")
    if nodes.many and num_procs and num_procs % nodes.nnodes:
        raise RecipeError(f"--num-procs {num_procs} counts the processes of the whole run and --nnodes "
                          f"{nodes.nnodes} nodes must share them equally: give a multiple of {nodes.nnodes}")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _store(nodes: Nodes, *, leader: bool):
    from torch.distributed import TCPStore
    try:
        return TCPStore(nodes.host, nodes.port, is_master=leader, wait_for_workers=False,
                        timeout=timedelta(seconds=JOIN_S))
    except Exception as e:   # torch's own text, one line: address in use, connection refused after the wait
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        doing = "could not listen on" if leader else f"could not reach node 0 within {JOIN_S} s at"
        raise RecipeError(f"node {nodes.node_rank}: {doing} --rdzv-endpoint {nodes.rdzv_endpoint} ({first})") from None


def _wait(store, key: str, what: str, log: Callable[[str], None], limit: float | None = None) -> str:
    """The value of `key` once another node set it; a line every minute while waiting."""
    start = said = time.monotonic()
    try:
        while not store.check([key]):
            now = time.monotonic()
            if limit is not None and now - start > limit:
                raise RecipeError(f"{what}: nothing after {limit:.0f} s; start it with the same recipe, --set values "
                                  "and --rdzv-endpoint, and --node-rank set to its own number")
            if now - said >= SAY_EVERY_S:
                log(f"still waiting for {what} ({now - start:.0f} s)")
                said = now
            time.sleep(POLL_S)
        return store.get(key).decode()
    except RecipeError:
        raise
    except Exception:   # the store lives in node 0's `recipe run`: gone means that run ended or died
        raise RecipeError(f"{what}: node 0's `recipe run` went away (it failed or was stopped; see its output)") \
            from None


class Leader:
    """Node 0's side: the store the other nodes join, and the launches it announces to them."""

    def __init__(self, nodes: Nodes, hello: dict, cache_root: Path, log: Callable[[str], None]):
        self.nodes, self.log, self.launches = nodes, log, 0
        self.store = _store(nodes, leader=True)
        # a token in a file of the cache: a node that reads the same token there shares node 0's cache
        self.probe = Path(cache_root) / "nodes" / f"{nodes.port}.probe"
        self.probe.parent.mkdir(parents=True, exist_ok=True)
        token = random_tokens.token_hex(8)
        self.probe.write_text(token)
        self.store.set("run", json.dumps({**hello, "cache": str(cache_root), "probe": token}))
        self.joined = False

    def announce(self, spec_path: Path, port: int) -> None:
        """Before node 0's torchrun agent starts: every node has joined, and gets this launch."""
        if not self.joined:
            for k in range(1, self.nodes.nnodes):
                problem = _wait(self.store, f"hello/{k}", f"node {k} of {self.nodes.nnodes} to join at "
                                f"{self.nodes.rdzv_endpoint}", self.log, limit=JOIN_S)
                if problem:
                    raise RecipeError(f"node {k} could not join: {problem}")
            self.joined = True
        ticket = {"spec": Path(spec_path).read_text(), "spec_name": Path(spec_path).name,
                  "addr": self.nodes.host, "port": port}
        self.store.set(f"launch/{self.launches}", json.dumps(ticket))
        self.launches += 1

    def end(self, problem: str) -> None:
        """Tell the other nodes the run is over ("" when it succeeded); give them a moment to read it."""
        self.store.set(f"launch/{self.launches}", json.dumps({"end": problem}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(self.store.check([f"ack/{k}"])
                                                      for k in range(1, self.nodes.nnodes)):
            time.sleep(POLL_S)
        self.probe.unlink(missing_ok=True)


_leader: Leader | None = None


def leader() -> Leader | None:
    """This process's Leader while a multi-node run is on (launch() announces through it), else None."""
    return _leader


@contextmanager
def leading(nodes: Nodes, hello: dict, cache_root: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Node 0 for the length of a run: the other nodes follow the launches made inside (nothing without
    --nnodes). The leader is process-wide state because a launch happens deep inside a step (launch()),
    and one process hosts at most one store on one port."""
    global _leader
    if not nodes.many:
        yield
        return
    _leader = Leader(nodes, hello, cache_root, log)
    problem = "node 0 stopped"
    try:
        yield
        problem = ""
    except RecipeError as e:
        problem = str(e).splitlines()[0]
        raise
    finally:
        _leader.end(problem)
        _leader = None


def follow(nodes: Nodes, hello: dict, cache_root: Path, train: Callable[[dict], None],
           log: Callable[[str], None] = print) -> int:
    """Node K > 0 for the length of a run: join node 0, `train` this node's share of each launch it announces
    (its ticket: the spec file's name and text, the rendezvous address and port), until node 0's run ends.
    Returns the number of launches."""
    k = nodes.node_rank
    store = _store(nodes, leader=False)
    try:
        run = json.loads(_wait(store, "run", "node 0's run", log, limit=JOIN_S))
        problem = _differs(nodes, hello, run, Path(cache_root))
        store.set(f"hello/{k}", problem)
        if problem:
            raise RecipeError(f"node {k}: {problem}")
        log(f"node {k} of {nodes.nnodes}: joined node 0 at {nodes.rdzv_endpoint}; it runs the steps, this node "
            "trains its share of each training step")
        i = 0
        while "end" not in (ticket := json.loads(_wait(store, f"launch/{i}", "node 0's next training step", log))):
            train(ticket)
            i += 1
        if ticket["end"]:
            raise RecipeError(f"node {k}: node 0's run failed: {ticket['end']}")
        return i
    finally:
        try:   # node 0 may close the store: this node needs nothing more from it
            store.set(f"ack/{k}", "")
        except Exception:
            pass


def _differs(nodes: Nodes, mine: dict, theirs: dict, cache_root: Path) -> str:
    """Why this node cannot join node 0's run ("" if it can)."""
    for key, what in (("recipe", "recipe (after --set)"), ("num_procs", "--num-procs"), ("nnodes", "--nnodes")):
        if mine[key] != theirs[key]:
            return (f"its {what} differs from node 0's ({mine[key]} here, {theirs[key]} there); start every node "
                    "with the same recipe, --set values, --num-procs and --nnodes")
    try:   # the processes here read node 0's artifacts by node 0's paths
        token = (cache_root / "nodes" / f"{nodes.port}.probe").read_text()
    except OSError:
        token = None
    if Path(theirs["cache"]) != cache_root or token != theirs["probe"]:
        return (f"node 0's cache folder {theirs['cache']} is not this node's ({cache_root}) or not shared with it; "
                "every node needs --cache-dir on a filesystem all of them mount at the same path")
    return ""
