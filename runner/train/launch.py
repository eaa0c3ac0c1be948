"""Run a stage's training (any trainer's) in N processes: `recipe run --launcher deepspeed|torchrun --num-procs N
[--hostfile H]`. Each process runs `python -m runner.train.worker SPEC` (worker.py); the launcher
gives each its RANK/WORLD_SIZE/LOCAL_RANK and the rendezvous address.

- torchrun: one node, N processes; or N processes over M nodes, each running `recipe run` with --nnodes M
  --node-rank K --rdzv-endpoint HOST:PORT (nodes.py: node 0 runs the steps, the others follow its launches).
- deepspeed: N processes on this node, or the nodes and slots of a DeepSpeed hostfile (launched
  over pdsh/ssh by DeepSpeed's runner from this node; N must be the hostfile's slots, one process each;
  the command and the hostfile's reading are tested, a real run of several nodes needs pdsh/ssh and is not).
Without CUDA the processes share the CPU cores: each gets cores / N threads unless OMP_NUM_THREADS
is set, since N processes with every core each are slower than one.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from .distributed import free_port
from . import nodes as multinode
from .nodes import Nodes, leader
from .nodes import check as check_nodes

LAUNCHERS = ("torchrun", "deepspeed")


def check(launcher: str, num_procs: int | None, hostfile: str | Path | None, nodes: Nodes = Nodes()) -> None:
    """The one rule for --launcher, --num-procs, --hostfile and the nodes' flags together (checked before
    anything runs)."""
    if launcher not in ("none", *LAUNCHERS):
        raise RecipeError(f"unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    if launcher != "none" and not num_procs:
        raise RecipeError(f"--launcher {launcher} needs --num-procs N (the total number of processes)")
    if launcher == "none" and num_procs:
        raise RecipeError("--num-procs needs --launcher torchrun or --launcher deepspeed")
    if hostfile and launcher != "deepspeed":
        raise RecipeError("--hostfile is read by the DeepSpeed launcher: add --launcher deepspeed --num-procs N")
    check_nodes(nodes, launcher, num_procs)
    if hostfile:
        slots = hostfile_slots(hostfile)
        if sum(slots.values()) != num_procs:
            listed = ", ".join(f"{h} slots={n}" for h, n in slots.items())
            raise RecipeError(f"--hostfile {hostfile}: DeepSpeed starts one process per slot, {sum(slots.values())} "
                              f"in all ({listed}), but --num-procs is {num_procs}; make them agree")


# DeepSpeed's own reading of a hostfile (deepspeed.launcher.runner._parse_hostfile), whose ValueErrors and
# silent fallback to this machine alone (no file) become one line before anything runs
_HOST = re.compile(r"^(\S+)\s+slots=(\d+)")


def hostfile_slots(path: str | Path) -> dict[str, int]:
    """{host: slots} of a DeepSpeed hostfile (lines `HOST slots=N`, # comments)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise RecipeError(f"--hostfile {path}: cannot read it ({e.strerror or e})") from None
    slots: dict[str, int] = {}
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _HOST.search(line)
        if not m:
            raise RecipeError(f"{path}:{i}: {line!r} is not `HOST slots=N`, the DeepSpeed hostfile's line")
        if m.group(1) in slots:
            raise RecipeError(f"{path}:{i}: {m.group(1)} is listed twice; give each host one line")
        slots[m.group(1)] = int(m.group(2))
    if not slots:
        raise RecipeError(f"--hostfile {path}: it lists no host; write one `HOST slots=N` line per node")
    return slots


def command(spec_path: str | Path, *, launcher: str, num_procs: int, hostfile: str | Path | None = None,
            master_port: int | None = None, nodes: Nodes = Nodes(), master_addr: str = "127.0.0.1") -> list[str]:
    """The command line that trains the spec'd stage in `num_procs` processes (this node's share of them
    with several `nodes`, whose rendezvous master is node 0's agent at master_addr:master_port)."""
    check(launcher, num_procs, hostfile, nodes)
    port = str(master_port or free_port())
    worker = ["runner.train.worker", str(spec_path)]
    if launcher == "torchrun":
        # a static rendezvous: node K's processes are the global ranks K*n .. K*n+n-1, as on one node
        where = ["--nnodes=1"] if not nodes.many else [f"--nnodes={nodes.nnodes}", f"--node-rank={nodes.node_rank}"]
        return [sys.executable, "-m", "torch.distributed.run", *where,
                f"--nproc-per-node={num_procs // nodes.nnodes}", f"--master-addr={master_addr}",
                f"--master-port={port}", "-m", *worker]
    where = ["--hostfile", str(hostfile)] if hostfile else ["--num_gpus", str(num_procs)]
    return [sys.executable, "-m", "deepspeed.launcher.runner", *where, "--master_port", port,
            "--module", *worker]


def environment(procs_here: int, secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a launcher that starts `procs_here` processes on this machine."""
    import torch

    from .worker import SECRETS_ENV

    env = dict(os.environ)
    if secrets:
        env[SECRETS_ENV] = json.dumps(list(secrets), ensure_ascii=False)
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // procs_here)))
        env.setdefault("DS_ACCELERATOR", "cpu")
    # the workers import `runner` from wherever this process did
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def launch(spec_path: str | Path, *, launcher: str, num_procs: int, hostfile: str | Path | None = None,
           log=print, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the command and return the metrics the main process wrote; `secrets` as given to write_spec
    travel in the processes' environment, never in a file. In a run of several nodes (nodes.leading) this
    is node 0: the other nodes get the spec and start their share of the processes with it."""
    spec = json.loads(Path(spec_path).read_text())
    lead = leader() if launcher == "torchrun" else None
    if lead is None:
        cmd, here = command(spec_path, launcher=launcher, num_procs=num_procs, hostfile=hostfile), num_procs
    else:
        port = free_port(everywhere=True)
        lead.announce(Path(spec_path), port)
        cmd = command(spec_path, launcher=launcher, num_procs=num_procs, nodes=lead.nodes,
                      master_addr=lead.nodes.host, master_port=port)
        here = num_procs // lead.nodes.nnodes
    log(" ".join(cmd))
    done = subprocess.run(cmd, env=environment(here, secrets))
    if done.returncode != 0:
        raise RecipeError(f"{launcher} training of {spec['spec']['stage']} failed (exit {done.returncode}); "
                          "see the processes' output above")
    return json.loads((Path(spec["job"]["out_dir"]) / "metrics.json").read_text())


def follow(nodes: Nodes, hello: dict, cache_root: Path, *, secrets: tuple[str, ...] = (), log=print) -> int:
    """A node other than 0 of a run (nodes.follow): this node's torchrun agent on each spec node 0 announces."""
    num_procs = hello["num_procs"]

    def train(ticket: dict) -> None:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="recipe-node-") as tmp:   # node 0's spec, in a folder of this node
            spec = Path(tmp) / Path(ticket["spec_name"]).name   # a file name, never a path out of tmp
            spec.write_text(ticket["spec"])
            cmd = command(spec, launcher="torchrun", num_procs=num_procs, nodes=nodes, master_addr=ticket["addr"],
                          master_port=ticket["port"])
            log(" ".join(cmd))
            done = subprocess.run(cmd, env=environment(num_procs // nodes.nnodes, secrets))
        if done.returncode != 0:
            raise RecipeError(f"node {nodes.node_rank}: its training processes failed (exit {done.returncode}); "
                              "see their output above and node 0's")
    return multinode.follow(nodes, hello, cache_root, train, log=log)
