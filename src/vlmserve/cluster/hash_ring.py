"""A consistent-hash ring: keys (sessions, image hashes) -> replicas.

Each member is placed at ``vnodes`` points on a 64-bit circle; a key belongs to the first
member clockwise of its own point. When a member joins it takes over only the keys that
now fall just before its points, and when one leaves only its own keys move to their
successors, so a replica restart re-homes one replica's share of sessions and nobody
else's. Immutable: a new membership builds a new ring (cheap at a few hundred points).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable


def point(text: str) -> int:
    """A stable position on the circle (the same on every process and Python run)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """The ring over ``members``; ``walk(key)`` lists them in the key's preference order."""

    def __init__(self, members: Iterable[str] = (), vnodes: int = 64) -> None:
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes}")
        self.members = frozenset(members)
        self.vnodes = vnodes
        placed = sorted((point(f"{m}#{i}"), m) for m in self.members for i in range(vnodes))
        self._points = [p for p, _ in placed]
        self._owners = [m for _, m in placed]

    def with_members(self, members: Iterable[str]) -> HashRing:
        """This ring if the membership is unchanged, else a new one."""
        members = frozenset(members)
        return self if members == self.members else HashRing(members, self.vnodes)

    def owner(self, key: str) -> str | None:
        """The member that owns ``key`` (None on an empty ring)."""
        walk = self.walk(key, limit=1)
        return walk[0] if walk else None

    def walk(self, key: str, limit: int | None = None) -> list[str]:
        """Distinct members clockwise from ``key``: the owner first, then where it spills."""
        if not self._points:
            return []
        want = len(self.members) if limit is None else min(limit, len(self.members))
        start = bisect.bisect_right(self._points, point(key))
        seen: list[str] = []
        n = len(self._points)
        for i in range(n):
            member = self._owners[(start + i) % n]
            if member not in seen:
                seen.append(member)
                if len(seen) == want:
                    break
        return seen
