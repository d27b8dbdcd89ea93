"""Failed logins slowed per source address, without slowing anyone else.

Each address (an IPv6 address counts by its /64, as one host usually holds the whole prefix) has
  * a failure count: its n-th recent failure is answered after `failure_delay * 2**(n-1)` seconds,
    at most `max_delay`; each `quiet` seconds without a failure takes one off the count, and a
    successful login clears it (a right password alone doesn't: the login may still be refused);
  * at most `in_flight` attempts being checked or waiting out their delay at once; further attempts
    from it wait their turn, in order, up to `queue` of them; beyond that they fail at once, without a
    password check.

The delay is served while the attempt still holds its turn, so parallel connections from one address
get no more guesses than sequential ones, and the guesses of one address can never fill the
password-checking threads: other addresses are neither queued nor delayed.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import deque
from typing import Callable

log = logging.getLogger("xapi.auth")


class _Peer:
    __slots__ = ("failures", "last", "active", "waiters", "warned")

    def __init__(self) -> None:
        self.failures = 0          # recent failures, decayed lazily (see Throttle._decay)
        self.last = 0.0            # when `failures` was last counted (clock seconds)
        self.active = 0            # attempts holding a turn
        self.waiters: deque[asyncio.Future] = deque()
        self.warned = False


def peer_key(peer: str) -> str:
    """The throttled unit: an IPv4 address, an IPv6 /64, else the peer string as given ("local", "")."""
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class Throttle:
    def __init__(self, failure_delay: float = 2.0, *, max_delay: float = 30.0, quiet: float = 60.0,
                 in_flight: int = 2, queue: int = 32, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_delay = max_delay
        self.quiet = quiet
        self.in_flight = max(1, in_flight)
        self.queue = max(0, queue)
        self.clock = clock
        self.rejected = 0                      # attempts failed at once because their queue was full
        self._peers: dict[str, _Peer] = {}
        self._sweep_at = 1024
        self.failure_delay = failure_delay

    @property
    def failure_delay(self) -> float:
        return self._base

    @failure_delay.setter
    def failure_delay(self, value: float) -> None:
        self._base = max(0.0, float(value))
        # Counting beyond the failure that reaches max_delay would only make the decay slower.
        if self._base > 0 and self.max_delay > self._base:
            self._max_count = 1 + math.ceil(math.log2(self.max_delay / self._base))
        else:
            self._max_count = 1

    # -- delays ----------------------------------------------------------------------------------
    def _decay(self, st: _Peer, now: float) -> None:
        if st.failures and self.quiet > 0:
            periods = int((now - st.last) // self.quiet)
            if periods > 0:
                st.failures = max(0, st.failures - periods)
                st.last += periods * self.quiet

    def delay_for(self, n: int) -> float:
        """The delay after an address's n-th recent failure."""
        if n <= 0:
            return 0.0
        return min(self._base * 2 ** min(n - 1, 64), self.max_delay)

    def failures(self, peer: str) -> int:
        st = self._peers.get(peer_key(peer))
        if st is None:
            return 0
        self._decay(st, self.clock())
        return st.failures

    def failure(self, peer: str) -> float:
        """Counts a failed attempt from `peer`; returns how long to hold back its answer."""
        st = self._state(peer_key(peer))
        now = self.clock()
        self._decay(st, now)
        st.failures = min(st.failures + 1, self._max_count)
        st.last = now
        return self.delay_for(st.failures)

    def success(self, peer: str) -> None:
        st = self._peers.get(peer_key(peer))
        if st is not None:
            st.failures = 0

    # -- turns -----------------------------------------------------------------------------------
    async def acquire(self, peer: str) -> bool:
        """Waits for one of `peer`'s turns; False at once when its queue is full (nothing to release)."""
        key = peer_key(peer)
        st = self._state(key)
        if st.active < self.in_flight and not st.waiters:
            st.active += 1
            return True
        if len(st.waiters) >= self.queue:
            self.rejected += 1
            if not st.warned:
                st.warned = True
                log.warning("auth: too many concurrent login attempts from %s: refusing the excess", key)
            return False
        fut = asyncio.get_running_loop().create_future()
        st.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(peer)              # the turn was handed over just as we were cancelled
            else:
                try:
                    st.waiters.remove(fut)
                except ValueError:
                    pass
                self._forget(key, st)
            raise
        return True

    def release(self, peer: str) -> None:
        key = peer_key(peer)
        st = self._peers.get(key)
        if st is None:
            return
        while st.waiters:
            fut = st.waiters.popleft()
            if not fut.done():
                fut.set_result(None)            # the turn passes on: `active` stays as it is
                return
        st.active = max(0, st.active - 1)
        self._forget(key, st)

    async def run(self, peer: str, attempt, *, clear: bool = True) -> bool:
        """acquire / attempt() / delay on failure / release: the whole of one login attempt. A
        success clears the address's failures unless `clear` is false (the caller calls success()
        once the login is really through)."""
        if not await self.acquire(peer):
            return False
        try:
            ok = await attempt()
            if ok:
                if clear:
                    self.success(peer)
            else:
                delay = self.failure(peer)
                if delay > 0:
                    await asyncio.sleep(delay)
            return ok
        finally:
            self.release(peer)

    # -- bookkeeping -----------------------------------------------------------------------------
    def _state(self, key: str) -> _Peer:
        st = self._peers.get(key)
        if st is None:
            if len(self._peers) >= self._sweep_at:
                self._sweep()
            st = self._peers[key] = _Peer()
        return st

    def _forget(self, key: str, st: _Peer) -> None:
        if st.active == 0 and not st.waiters:
            self._decay(st, self.clock())
            if st.failures == 0:
                self._peers.pop(key, None)

    def _sweep(self) -> None:
        """Drops idle addresses whose failures have decayed; runs when the table doubles in size."""
        now = self.clock()
        for key, st in list(self._peers.items()):
            if st.active == 0 and not st.waiters:
                self._decay(st, now)
                if st.failures == 0:
                    del self._peers[key]
        self._sweep_at = max(1024, 2 * len(self._peers))

    def __len__(self) -> int:
        return len(self._peers)
