"""``ReplicaBoard``: where engine replicas post their figures, so the ingress can answer
``/health`` (replicas up / total) and one ``/metrics`` with a series per replica.

A plain named Ray actor (no CPU), detached so that no replica's death takes it along;
``board_actor`` gets or creates it and ``remove_board`` ends it with the deployment. A
replica posts its ``EngineSnapshot`` every second from a thread (``BoardReporter``); a
post older than ``STALE_S`` means that replica is down (or gone).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray

from vlmserve.engine.client import EngineSnapshot

log = logging.getLogger(__name__)

NAMESPACE = "vlmserve"
REPORT_EVERY_S = 1.0
STALE_S = 3.0  # no post for this long: the replica counts as down
FORGET_S = 60.0  # ... and after this long it is dropped from the board


@dataclass(frozen=True)
class ReplicaPost:
    replica: str
    snapshot: EngineSnapshot
    posted_at: float  # time.time() on the replica


@ray.remote(num_cpus=0)
class ReplicaBoard:
    def __init__(self) -> None:
        self._posts: dict[str, ReplicaPost] = {}

    def post(self, item: ReplicaPost) -> None:
        self._posts[item.replica] = item

    def withdraw(self, replica: str) -> None:
        self._posts.pop(replica, None)

    def read(self) -> list[ReplicaPost]:
        now = time.time()
        for replica in [r for r, p in self._posts.items() if now - p.posted_at > FORGET_S]:
            del self._posts[replica]
        return sorted(self._posts.values(), key=lambda p: p.replica)


def board_name(app_name: str) -> str:
    return f"vlmserve-board-{app_name}"


def board_actor(app_name: str) -> ray.actor.ActorHandle:
    """The deployment's board, created on first use."""
    return ReplicaBoard.options(name=board_name(app_name), namespace=NAMESPACE,
                                lifetime="detached", get_if_exists=True).remote()


def remove_board(app_name: str) -> None:
    try:
        ray.kill(ray.get_actor(board_name(app_name), namespace=NAMESPACE))
    except ValueError:
        pass  # never created


class BoardReporter:
    """A daemon thread posting ``snapshot()`` every ``REPORT_EVERY_S`` until ``stop()``."""

    def __init__(self, board: ray.actor.ActorHandle, replica: str,
                 snapshot: Callable[[], EngineSnapshot]) -> None:
        self._board = board
        self._replica = replica
        self._snapshot = snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmserve-board", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._board.post.remote(ReplicaPost(self._replica, self._snapshot(),
                                                    time.time()))
            except Exception:  # the board restarting must not kill the replica
                log.warning("could not post to the replica board", exc_info=True)
            self._stop.wait(REPORT_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        try:
            self._board.withdraw.remote(self._replica)
        except Exception:
            pass
