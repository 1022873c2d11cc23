"""Small made-up QA data sets in SQuAD 2.0's and HotpotQA's file formats (the real dev sets cannot ship):
invented words only, deterministic, enough documents to fill an 8K-token RULER prompt. The reference
fixtures for qa_1 and qa_2 were made from exactly these files (``make_fixtures.py``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

SYLLABLES = "ka lo mi ne ru sa ti vo ze ba do fi gu he ja ku la mo ni po".split()


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def _sentence(rng: random.Random, subject: str) -> str:
    return f"The {_word(rng)} of {subject} is {_word(rng)} and {rng.randint(10, 999)} {_word(rng)}s live there."


def squad(articles: int = 80, paragraphs: int = 4, seed: int = 0) -> dict:
    rng = random.Random(seed)
    data = []
    for a in range(articles):
        title, items = f"{_word(rng).title()} {a}", []
        for _ in range(paragraphs):
            subject = _word(rng).title()
            answer = str(rng.randint(1000, 9999))
            text = f"{_sentence(rng, subject)} {subject} was founded in {answer}."
            qas = [
                {
                    "question": f"When was {subject} founded?",
                    "answers": [{"text": answer, "answer_start": 0}],
                    "is_impossible": False,
                },
                {"question": f"Who named {subject}?", "answers": [], "is_impossible": True},
            ]
            if rng.random() < 0.5:
                qas.append(
                    {
                        "question": f"What lives in {subject}?",
                        "answers": [{"text": "many", "answer_start": 0}, {"text": "several", "answer_start": 0}],
                        "is_impossible": False,
                    }
                )
            items.append({"context": text, "qas": qas})
        data.append({"title": title, "paragraphs": items})
    return {"version": "v2.0", "data": data}


def hotpotqa(questions: int = 30, per_question: int = 10, seed: int = 1) -> list:
    rng = random.Random(seed)
    pool = []
    for _ in range(200):
        subject = _word(rng).title()
        pool.append([subject, [_sentence(rng, subject)]])
    out = []
    for q in range(questions):
        picked = rng.sample(pool, per_question)
        out.append(
            {
                "_id": f"fake{q}",
                "question": f"Which place has more {_word(rng)}s, {picked[0][0]} or {picked[1][0]}?",
                "answer": picked[rng.randint(0, 1)][0],
                "context": picked,
            }
        )
    return out


def write(folder: Path) -> dict[str, Path]:
    """Write ``squad.json`` and ``hotpotqa.json`` into ``folder``; their paths by data set name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"squad": folder / "squad.json", "hotpotqa": folder / "hotpotqa.json"}
    paths["squad"].write_text(json.dumps(squad()))
    paths["hotpotqa"].write_text(json.dumps(hotpotqa()))
    return paths
