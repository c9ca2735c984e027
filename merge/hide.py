"""Top layer: pancbt files are never presented (namespace.md rules 2 and 5).

No ``*-pancbt.vmdk`` name is listed, and looking one up fails as "no such
file", whatever it is (file, directory, or a link presenting that name).

This layer also reports *orphans* (rule 5): a pancbt with no
``NAME-flat.vmdk`` beside it, as the layer below presents the directory.
A flat image that the layers below withheld because of its own problem (an
invalid pancbt, a broken link) is not missing: the problem is reported
there, and the pancbt is not reported again as an orphan.
"""

from __future__ import annotations

from merge.cache import TtlLru
from merge.layer import Context, Entry, Layer, Listing
from merge.names import PANCBT_SUFFIX, flat_of, is_pancbt
from merge.namespace import Kind, NotFound, PresentedPath


class HideLayer(Layer):
    """Hides pancbt files; reports the orphaned ones."""

    def __init__(self, lower: Layer, ctx: Context) -> None:
        super().__init__(lower, ctx)
        # Per directory: the lower listing this one was derived from, and it.
        self._derived: TtlLru[PresentedPath, tuple[Listing, Listing]] = TtlLru(
            1024, None, ctx.clock
        )

    def lookup(self, path: PresentedPath) -> Entry:
        if path and is_pancbt(path[-1]):
            raise NotFound("/" + "/".join(path))
        return self.lower.lookup(path)

    def listing(self, path: PresentedPath) -> Listing:
        low = self.lower.listing(path)
        memo = self._derived.get(path)
        if memo is not None and memo[0] is low:
            return memo[1]
        pancbts = {name for name in low.entries if name.endswith(PANCBT_SUFFIX)}
        if not pancbts:  # nothing to hide: the listing below, as it is
            self._derived.put(path, (low, low))
            return low
        entries: dict[str, Entry] = {}
        for name, entry in low.entries.items():
            if name not in pancbts:
                entries[name] = entry
                continue
            flat = flat_of(name)
            base = low.entries.get(flat)
            if flat in low.withheld or (base is not None and base.attrs.kind == Kind.REG):
                continue
            self.ctx.problems.report(
                5, entry.origin.where, f"orphan pancbt: no {flat} beside it to merge into"
            )
        found = Listing(entries, low.withheld)
        self._derived.put(path, (low, found))
        return found
