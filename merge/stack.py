"""Building the namespace: the filter stack over one storage directory.

``build_namespace(storage_root)`` is what the server calls, once, at
start-up.  It reads nothing but the root's own ``stat``: every directory is
listed, every link read and every merge prepared on first use.

The server may call ``getattr``, ``readdir`` and ``open`` of the returned
namespace from any number of threads at once.  Each ``Reader`` that
``open`` returns must be closed (it is a context manager); while it is open
its descriptors stay valid whatever the caches do.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from merge.cache import Clock
from merge.hide import HideLayer
from merge.layer import Context, Layer
from merge.links import LinksLayer
from merge.memo import MemoLayer
from merge.namespace import Namespace
from merge.overlay import MergeLayer
from merge.passthrough import Passthrough
from merge.problems import Problems
from merge.shared import SharedListings
from merge.watch import FolderWatches


@dataclass(frozen=True)
class Stack:
    """The layers of one namespace, bottom to top, and what they share."""

    passthrough: Passthrough
    links: LinksLayer
    merge: MergeLayer
    hide: HideLayer
    memo: MemoLayer
    ctx: Context

    @property
    def top(self) -> Layer:
        return self.memo

    @property
    def problems(self) -> Problems:
        return self.ctx.problems

    def close(self) -> None:
        """Close the descriptors the caches hold (open readers keep theirs)."""
        self.memo.clear()
        self.merge.close()
        self.passthrough.close()


def build_stack(
    storage_root: str,
    *,
    ttl: float = 1.0,
    recheck: float = 1.0,
    merge_cache: int = 64,
    fd_cache: int = 128,
    memo_size: int = 65536,
    clock: Clock = time.monotonic,
    shared_listings: str | SharedListings | None = None,
    watch_folders: bool = True,
) -> Stack:
    """The stack over ``storage_root``; see :func:`build_namespace`."""
    root = os.path.realpath(storage_root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"storage root {storage_root} is not a directory")
    ctx = Context(root, clock, Problems(), ttl=ttl, recheck=recheck)
    # Large folders on a local file system renewed without a rescan while inotify
    # says nothing changed (merge.watch); elsewhere, and when off, scanned.
    watches = FolderWatches(clock, refresh_ahead=True) if watch_folders else None
    passthrough = Passthrough(ctx, fd_cache=fd_cache, watches=watches)
    links = LinksLayer(passthrough, ctx)
    merge = MergeLayer(links, ctx, cache_size=merge_cache)
    hide = HideLayer(merge, ctx)
    links.top = hide  # link targets are looked up as presented (never through the memo)
    shared = (
        SharedListings(shared_listings) if isinstance(shared_listings, str) else shared_listings
    )
    memo = MemoLayer(hide, ctx, size=memo_size, shared=shared)
    return Stack(passthrough, links, merge, hide, memo, ctx)


def build_namespace(
    storage_root: str, *, shared_listings: str | None = None, **options: float
) -> Namespace:
    """The presented tree of ``storage_root`` (namespace.md), top of the filter stack.

    ``options`` tune the caches (``ttl``, ``recheck`` in seconds;
    ``merge_cache``, ``fd_cache``, ``memo_size`` entries; ``watch_folders``:
    inotify on large local folders, ``merge.watch``); the defaults suit
    the server.  ``shared_listings``: a folder of the server's own where its
    processes share large listings (``merge.shared``), if it runs several.
    """
    return build_stack(storage_root, shared_listings=shared_listings, **options).top  # type: ignore[arg-type]
