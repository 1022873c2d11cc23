"""The embedded default corpus: generated English-like documents, no download, no files.

A tiny pure-Python generator (SplitMix64) makes the text, so every Python and NumPy version yields
the same documents, hence the same rows. Each document has a name and a place that recur in it
(something to copy from earlier in the document) and lengths from a few sentences to a few pages,
so packed rows hold several documents and long ones are split.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1

_NAMES = (
    "Ada Basil Cora Dario Elsa Felix Greta Hugo Iris Jonas Kira Leo Mira Nils Olga Pavel Rhea Sami Tove Uma".split()
)
_PLACES = "harbour valley library tower market orchard station garden bridge castle forest quarry".split()
_ADJECTIVES = "quiet old bright small green narrow busy cold distant golden heavy open".split()
_NOUNS = "boat lamp letter map river clock window road song stone bell cart".split()
_VERBS = "found carried painted opened followed repaired watched counted lifted crossed".split()
_TIMES = "At dawn|In the evening|Before noon|After the rain|Every winter|On the third day".split("|")


class SplitMix64:
    """A 64-bit generator whose output depends only on the seed."""

    def __init__(self, seed: int):
        self.state = seed & _MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def choice(self, items: list[str]) -> str:
        return items[self.below(len(items))]


def _sentence(rng: SplitMix64, name: str, place: str) -> str:
    kind = rng.below(4)
    adj, noun, verb = rng.choice(_ADJECTIVES), rng.choice(_NOUNS), rng.choice(_VERBS)
    if kind == 0:
        return f"{rng.choice(_TIMES)}, {name} {verb} the {adj} {noun} near the {place}."
    if kind == 1:
        return f"The {noun} by the {place} was {adj}, and {name} knew it."
    if kind == 2:
        count = 2 + rng.below(8)
        return f"{name} {verb} {count} {noun}s, then {count + 1} more."
    return f"Nobody at the {place} {verb} the {adj} {noun} before {name} did."


def generate_documents(num_documents: int = 400, seed: int = 1234) -> list[str]:
    """``num_documents`` texts of 2 to about 60 sentences each."""
    rng = SplitMix64(seed)
    documents = []
    for _ in range(num_documents):
        name, place = rng.choice(_NAMES), rng.choice(_PLACES)
        # a heavy-tailed length: mostly short documents, some long enough to be split across rows
        sentences = 2 + rng.below(8) * (1 + rng.below(8))
        title = f"{name} and the {place}"
        body = " ".join(_sentence(rng, name, place) for _ in range(sentences))
        documents.append(f"{title}\n\n{body}\n")
    return documents
