"""Lab 9's cases on ranks: the learner's functions run on WORLD gloo processes forked from the
grading process (so they are the functions the notebook defined, nothing is pickled), every case of
a task in one launch (process start-up costs more than a case).

A rank plays the cases in order and stops at the first that raises; a rank that dies or waits in a
collective for its partner is reported, the case fails, and the cases after it are played on fresh
ranks. What the ranks return comes back as tensors and plain data (`torch.load(weights_only=True)`)
into the grader's worker, which sends it on to the parent process: the parent judges it there.
"""

from __future__ import annotations

import faulthandler
import os
import random
import signal
import tempfile
import time
from datetime import timedelta
from types import SimpleNamespace

import torch
import torch.distributed as dist

from minirt.grading.core import Mismatch, _where
from minirt.ports import free_port

WORLD = 2  # ranks per launch
RANK_TIMEOUT_S = 8.0  # a collective waiting longer than this has lost its partner
GRACE_S = 3.0  # a rank still running this long after another failed is stuck: killed
FAILED = 3  # the exit code of a rank that stopped at a failing case
NOT_PLAYED = "not played: the ranks crashed or hung on earlier cases for too long"
TASK_BUDGET_S = 20.0  # launches of one task stop here; the cases not played fail


def _rank(rank: int, port: int, play, learner, cases: list, folder: str) -> bool:
    """In a forked child: join the group, play the cases in order until one raises; after each,
    the outcomes so far go to a file (a rank that aborts leaves the ones it finished). Whether
    every case ran."""
    faulthandler.disable()  # a rank that aborts is reported by the grader, not by a stack dump
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=RANK_TIMEOUT_S),
    )
    outcomes: list = []
    path = os.path.join(folder, f"{rank}.pt")
    for case in cases:
        try:
            outcomes.append(["ok", play(learner, case, rank)])
        except NotImplementedError as e:
            outcomes.append(["not implemented", str(e)])
        except BaseException as e:  # noqa: BLE001 - the learner's crash is this case's answer
            outcomes.append(["error", f"rank {rank} raised {type(e).__name__}: {e}{_where(e)}"])
        torch.save(outcomes, path + ".tmp")
        os.replace(path + ".tmp", path)
        if outcomes[-1][0] != "ok":
            return False
    return True


def _launch_once(play, learner, cases: list, deadline: float) -> list[list]:
    """Fork WORLD ranks over `cases`; per rank, its outcomes (as many as it finished)."""
    with tempfile.TemporaryDirectory() as folder:
        port, pids = free_port(), []
        for rank in range(WORLD):
            pid = os.fork()
            if pid == 0:  # the child: never returns into the grader's code
                code = FAILED
                try:
                    code = 0 if _rank(rank, port, play, learner, cases, folder) else FAILED
                except BaseException:  # noqa: BLE001 - the group did not form
                    pass
                os._exit(code)
            pids.append(pid)
        status = _reap(pids, deadline)
        out = []
        for rank in range(WORLD):
            path = os.path.join(folder, f"{rank}.pt")
            got = torch.load(path, weights_only=True) if os.path.exists(path) else []
            if len(got) < len(cases) and (not got or got[-1][0] == "ok"):
                got.append(["error", f"rank {rank} {status[rank]}"])
            out.append(got)
        return out


def _reap(pids: list[int], deadline: float) -> list[str]:
    """Wait for the ranks; kill one that outlives the deadline, or a partner that failed (it may
    wait for a collective that will never come). How each ended."""
    status = {pid: "" for pid in pids}
    first_failed = None
    while any(not s for s in status.values()):
        for pid in pids:
            if status[pid]:
                continue
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status[pid] = _ended(code)
                if code != 0:  # a rank that played every case leaves its partner to finish
                    first_failed = first_failed or time.monotonic()
        now = time.monotonic()
        stuck = first_failed is not None and now - first_failed > GRACE_S
        if now > deadline or stuck:
            why = (
                "was stopped waiting in a collective (its partner had left)"
                if stuck
                else "was stopped: the task's time ran out (an endless loop, or every rank "
                "waiting for another?)"
            )
            for pid in pids:
                if not status[pid]:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status[pid] = why
        time.sleep(0.01)
    return [status[pid] for pid in pids]


def _ended(code: int) -> str:
    if os.WIFSIGNALED(code):
        return (
            f"died (signal {os.WTERMSIG(code)}): the ranks' collectives did not match (every "
            "rank must make the same calls, with split sizes that agree)"
        )
    if os.WEXITSTATUS(code) == FAILED:  # with no outcome of the case: the group never formed
        return "could not join the group of ranks"
    return f"exited (code {os.WEXITSTATUS(code)})"


def _play_all(play, learner, cases: list) -> list[tuple[str, object]]:
    """Every case's outcome: ("ok", [per-rank result]) or (status, message). A case that fails
    on a rank ends that launch; the next launch starts after it."""
    outcomes: list[tuple[str, object]] = []
    deadline = time.monotonic() + TASK_BUDGET_S
    while len(outcomes) < len(cases):
        if time.monotonic() > deadline:
            message = NOT_PLAYED
            outcomes += [("error", message)] * (len(cases) - len(outcomes))
            break
        per_rank = _launch_once(play, learner, cases[len(outcomes) :], deadline)
        for j in range(len(cases) - len(outcomes)):
            got = [r[j] if j < len(r) else None for r in per_rank]
            if all(g is not None and g[0] == "ok" for g in got):
                outcomes.append(("ok", [g[1] for g in got]))
                continue
            failed = [g for g in got if g is not None and g[0] != "ok"]
            first = min(failed, key=_telling)
            message = first[1]
            if _telling(first) == 4:  # an echo: the partner's own failure came later, if any
                later = [g for r in per_rank for g in r[j + 1 :] if g[0] != "ok"]
                if later:
                    message += f"; meanwhile {min(later, key=_telling)[1]}"
            outcomes.append((first[0], message))
            break
        if outcomes and outcomes[-1][0] == "not implemented" and len(outcomes) == 1:
            outcomes += [outcomes[0]] * (len(cases) - 1)  # a stub: nothing else will run
    return outcomes


# what a rank reports when its partner left: the partner's own failure says more
ECHOES = ("Connection closed by peer", "Connection reset", "Timed out", "timed out")


def _telling(outcome: list) -> int:
    """Which of the ranks' failures to show first: a stub's hint, an exception of the learner's
    code, a crash, a rank stopped by the grader, then an echo of the partner's failure."""
    status, message = outcome
    if status == "not implemented":
        return 0
    if "raised" in message:
        return 4 if any(e in message for e in ECHOES) else 1
    return 2 if "died" in message else 3


class OnRanks:
    """The draw and play of a task whose cases run on the ranks, every case in one launch: `draw`
    draws them all at case 0 (from the task's rng, as drawing them one by one would) and `play`
    launches the ranks at case 0, then gives each case its ranks' results (a list, per rank), or
    raises what went wrong there. The task's own `expect` and `compare` judge the results, in the
    grader's parent process."""

    def __init__(self, draw_case, play_rank, num_cases: int):
        self.draw_case, self.play_rank, self.num_cases = draw_case, play_rank, num_cases
        self.cases: list = []
        self.outcomes: list = []

    def draw(self, rng: random.Random, i: int) -> dict:
        if i == 0:
            self.cases = [self.draw_case(rng, j) | {"index": j} for j in range(self.num_cases)]
        return self.cases[i]

    def play(self, learner: SimpleNamespace, case: dict) -> list:
        if case["index"] == 0:
            self.outcomes = _play_all(self.play_rank, learner, self.cases)
        status, value = self.outcomes[case["index"]]
        if status == "not implemented":
            raise NotImplementedError(value)
        if status != "ok":
            hint = ""
            if "Split sizes" in value:
                hint = (
                    " — all_to_all_single(output, input, output_split_sizes, input_split_sizes): "
                    "the input splits are the rows this rank sends to each rank, the output "
                    "splits the rows it receives from each"
                )
            size = None if value == NOT_PLAYED else case["size"]  # shown after a real failure
            raise Mismatch(f"{case['name']}: {value}{hint}", size)
        return value
