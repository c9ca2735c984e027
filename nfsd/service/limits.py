"""The transport limits of one process, from the operator's settings.

Design notes
------------
The operator sets totals: ``max-connections`` is what the whole server
(every worker process together) holds open.  With ``N`` workers, worker
``i`` gets ``max_connections // N``, plus one for the first
``max_connections % N`` workers, so the shares add up to exactly the
setting.  ``max-unvalidated`` is shared the same way (at least one each).
The READ buffers (``nfsd.programs.READ_BUFFERS``, 1 MiB each) are shared
the same way by the worker (``nfsd.service.worker``): with their own pools
N workers held N times the memory of one server after a read-heavy load.
The other limits are per connection or per time and apply unchanged in
every worker.  A worker whose share is full refuses (or evicts) while
another may have room: the kernel does not know the shares when it hands
out connections, so the total is a ceiling, never exceeded.
"""

from __future__ import annotations

from nfsd.service.config import Config
from nfsd.transport.server import Limits


def share(total: int, index: int, count: int) -> int:
    """Worker ``index``'s part of ``total`` over ``count`` workers (at least 1)."""
    return max(1, total // count + (1 if index < total % count else 0))


def limits_for(cfg: Config, index: int = 0, count: int = 1) -> Limits:
    """The limits of worker ``index`` of ``count`` (``count`` 1: the whole)."""
    return Limits(
        max_connections=share(cfg.max_connections, index, count),
        max_unvalidated=share(cfg.max_unvalidated, index, count),
        idle_timeout=cfg.idle_timeout,
        record_timeout=cfg.record_timeout,
        max_inflight=cfg.max_inflight,
        max_unsent=cfg.max_unsent,
    )
