"""RULER's word keys (``adjective-noun``), indexed without building the list.

RULER draws needle keys with ``random.choice(words)`` from ``sorted(set(f"{adj}-{noun}"))`` over
wonderwords' 912 adjectives and 6,786 nouns: 6.2 million strings, about 10 s and 0.7 GB to build in
Python. :class:`SortedPairs` gives the same length and the same element at every position from the two
lists alone: the strings of one adjective are that adjective, a hyphen and the sorted nouns, one block
of the sorted order, unless another adjective begins with this one and a hyphen (``far`` and
``far-off``); such adjectives are merged into one group whose strings are built and sorted (a few
thousand). Blocks and groups never interleave, since each is the set of strings starting with its
prefix, so they follow each other in the order of their prefixes.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class SortedPairs:
    """``sorted(set(f"{a}{sep}{b}" for a in firsts for b in seconds))`` as an indexable sequence."""

    def __init__(self, firsts: Sequence[str], seconds: Sequence[str], sep: str = "-") -> None:
        self.seconds = sorted(set(seconds))
        prefixes = sorted({f + sep for f in firsts})
        # adjectives whose prefix starts with another's prefix join that one's group (the shortest)
        groups: list[list[str]] = []
        for prefix in prefixes:  # sorted: a prefix comes before every string it begins
            if groups and prefix.startswith(groups[-1][0]):
                groups[-1].append(prefix)
            else:
                groups.append([prefix])
        self.blocks: list[tuple[str, list[str] | None]] = []  # (prefix, explicit strings or None)
        starts = [0]
        for group in groups:
            if len(group) == 1:
                self.blocks.append((group[0], None))
                starts.append(starts[-1] + len(self.seconds))
            else:
                strings = sorted({p + s for p in group for s in self.seconds})
                self.blocks.append((group[0], strings))
                starts.append(starts[-1] + len(strings))
        self.starts = starts

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(index)
        block = bisect.bisect_right(self.starts, index) - 1
        prefix, strings = self.blocks[block]
        offset = index - self.starts[block]
        return strings[offset] if strings is not None else prefix + self.seconds[offset]
