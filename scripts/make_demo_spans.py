"""Write edgesent's embedded span demo data: reviews with aspect terms annotated by character offsets and polarity.

Every sentence is composed from building blocks written by the edgesent project in this file: no external data
set is read or copied. The generator is deterministic (a seeded ``random.Random``, stdlib only), so the shipped
files can be reproduced byte for byte:

    python scripts/make_demo_spans.py         # writes edgesent/demo/spans_train.jsonl and spans_eval.jsonl
    python scripts/make_demo_spans.py --seed 7 --train 300 --eval 80 --out-dir /tmp/demo

One JSON object a line: ``{"text": ..., "spans": [{"start", "end", "label", "term"}]}`` with
``text[start:end] == term``; labels are ``positive``, ``negative`` and ``neutral`` (an aspect mentioned without
an opinion). Spans are recorded while the sentence is written, so the offsets are right by construction. About
two in five sentences hold two aspects of opposite polarity ("the screen is gorgeous, but the battery life is
awful"), some hold two of the same polarity or an aspect with a neutral one, a few hold none; aspect terms
include multi-word terms (``I-`` tags) and accented ones (``crème brûlée``, ``décor``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


DEFAULT_SEED = 20240611
DEFAULT_TRAIN = 720
DEFAULT_EVAL = 180
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "edgesent" / "demo"
TRAIN_NAME, EVAL_NAME = "spans_train.jsonl", "spans_eval.jsonl"

# An aspect is (term, plural). Predicates use "{be}" (is/was or are/were), so they agree with either.
_Aspect = tuple[str, bool]
DOMAINS: dict[str, dict[str, list]] = {
    "phone": {
        "aspects": [
            ("battery life", False),
            ("screen", False),
            ("camera", False),
            ("charger", False),
            ("speakers", True),
            ("fingerprint reader", False),
            ("price", False),
            ("face unlock", False),
        ],
        "positive": ["{be} excellent", "{be} superb", "{be} better than I expected", "never let me down"],
        "negative": ["{be} terrible", "{be} a letdown", "stopped working within a week", "{be} painfully slow"],
        "neutral": ["{be} about average", "{be} on the back", "{be} what you get in most phones"],
        "facts": ["I bought it for my daughter.", "It arrived on a Tuesday.", "I switched from an older model."],
    },
    "laptop": {
        "aspects": [
            ("keyboard", False),
            ("touchpad", False),
            ("battery", False),
            ("display", False),
            ("fan noise", False),
            ("hinges", True),
            ("boot time", False),
            ("customer support", False),
        ],
        "positive": ["{be} fantastic", "{be} a joy to use", "{be} rock solid", "impressed me"],
        "negative": ["{be} awful", "{be} flimsy", "{be} a constant annoyance", "disappointed me"],
        "neutral": ["{be} standard for this size", "{be} similar to last year's model", "{be} on the left side"],
        "facts": ["I use it for work and school.", "I ordered it online.", "It came with the charger in the box."],
    },
    "restaurant": {
        "aspects": [
            ("pasta", False),
            ("wait staff", False),
            ("crème brûlée", False),
            ("décor", False),
            ("wine list", False),
            ("portions", True),
            ("prices", True),
            ("fish tacos", True),
        ],
        "positive": ["{be} delicious", "{be} wonderful", "{be} the best in town", "{be} a real treat"],
        "negative": ["{be} disappointing", "{be} overpriced", "{be} a disaster", "{be} bland and cold"],
        "neutral": ["{be} on the daily menu", "{be} what you would expect", "{be} listed on the blackboard"],
        "facts": ["We went on a Friday evening.", "We were a group of six.", "I had booked a week ahead."],
    },
    "hotel": {
        "aspects": [
            ("room", False),
            ("front desk staff", True),
            ("breakfast buffet", False),
            ("pool", False),
            ("bed", False),
            ("wifi", False),
            ("location", False),
            ("room service", False),
        ],
        "positive": ["{be} spotless", "{be} lovely", "{be} perfect for us", "made our stay"],
        "negative": ["{be} filthy", "{be} unbearable", "{be} a nightmare", "ruined our stay"],
        "neutral": ["{be} on the ground floor", "{be} included in the rate", "{be} open until ten"],
        "facts": ["We stayed three nights in March.", "I booked through an agency.", "We travelled with two kids."],
    },
    "airline": {
        "aspects": [
            ("cabin crew", False),
            ("legroom", False),
            ("boarding", False),
            ("in-flight meal", False),
            ("check-in", False),
            ("seats", True),
            ("entertainment system", False),
        ],
        "positive": ["{be} great", "{be} surprisingly good", "{be} smooth", "{be} first class"],
        "negative": ["{be} dreadful", "{be} chaotic", "{be} cramped and dirty", "{be} a joke"],
        "neutral": ["{be} the usual", "{be} at gate twelve", "{be} similar to other airlines"],
        "facts": ["The flight took three hours.", "I flew economy.", "We left from the north terminal."],
    },
}
OPINION_VERBS = {  # "I {verb} the {term}" templates; the verb carries the polarity
    "positive": ["loved", "really liked", "was impressed by", "enjoyed"],
    "negative": ["hated", "was disappointed by", "could not stand", "regretted"],
}
BUT = [", but ", "; however, ", ", while ", ". On the other hand, ", ", yet "]


class _Sentence:
    """Text written piece by piece; an aspect's span is recorded at the moment its term is written."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[dict[str, object]] = []

    def add(self, piece: str) -> _Sentence:
        self.text += piece
        return self

    def aspect(self, term: str, label: str) -> _Sentence:
        if not self.text or self.text.endswith((". ", "! ")):  # at a sentence start the term is capitalised
            term = term[0].upper() + term[1:]
        start = len(self.text)
        self.text += term
        self.spans.append({"start": start, "end": len(self.text), "label": label, "term": term})
        return self


class _Composer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _pred(self, dom: dict, aspect: _Aspect, label: str) -> str:
        be = self.rng.choice(("are", "were") if aspect[1] else ("is", "was"))
        return self.rng.choice(dom[label]).format(be=be)

    def _clause(self, s: _Sentence, dom: dict, aspect: _Aspect, label: str, the: str = "the ") -> None:
        """``the {term} {predicate}`` or, for a polar label, ``I {verb} the {term}``."""
        if label != "neutral" and self.rng.random() < 0.25:
            s.add(f"I {self.rng.choice(OPINION_VERBS[label])} the ").aspect(aspect[0], label)
            return
        s.add(the).aspect(aspect[0], label).add(f" {self._pred(dom, aspect, label)}")

    def compose(self, dom: dict) -> _Sentence:
        rng = self.rng
        s = _Sentence()
        roll = rng.random()
        a, b = rng.sample(dom["aspects"], 2)
        if roll < 0.42:  # two aspects of opposite polarity
            first, second = rng.sample(["positive", "negative"], 2)
            if rng.random() < 0.3:
                s.add("Although the ").aspect(a[0], first).add(f" {self._pred(dom, a, first)}, ")
                self._clause(s, dom, b, second)
            else:
                self._clause(s, dom, a, first, "The ")
                s.add(rng.choice(BUT))
                self._clause(s, dom, b, second, "The " if s.text.endswith(". ") else "the ")
        elif roll < 0.55:  # two aspects sharing one polarity
            label = rng.choice(["positive", "negative"])
            s.add("Both the ").aspect(a[0], label).add(" and the ").aspect(b[0], label)
            s.add(f" {rng.choice(dom[label]).format(be='were')}")
        elif roll < 0.67:  # an opinion next to a neutral mention
            label = rng.choice(["positive", "negative"])
            self._clause(s, dom, a, "neutral", "The ")
            s.add(rng.choice([", and ", "; "]))
            self._clause(s, dom, b, label)
        elif roll < 0.93:  # one aspect
            label = rng.choice(["positive", "negative", "neutral"])
            if rng.random() < 0.3:
                s.add(rng.choice(dom["facts"]) + " ")
            self._clause(s, dom, a, label, "The ")
        else:  # no aspect at all: the model must also learn to say "nothing here"
            return s.add(" ".join(rng.sample(dom["facts"], 2)))
        return s.add(rng.choice([".", ".", "!"]))


def generate(seed: int = DEFAULT_SEED, n_train: int = DEFAULT_TRAIN, n_eval: int = DEFAULT_EVAL):
    """Return (train, eval) lists of ``{"text", "spans"}`` dicts: distinct texts, no text in both, seeded."""
    rng = random.Random(seed)
    composer = _Composer(rng)
    domains = [DOMAINS[name] for name in sorted(DOMAINS)]
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n_train + n_eval:
        attempts += 1
        if attempts > 200 * (n_train + n_eval):
            raise RuntimeError(f"could not compose {n_train + n_eval} distinct sentences; ask for fewer")
        s = composer.compose(rng.choice(domains))
        if s.text in seen:
            continue
        seen.add(s.text)
        rows.append({"text": s.text, "spans": s.spans})
    return rows[:n_train], rows[n_train:]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--train", type=int, default=DEFAULT_TRAIN, help="training sentences")
    p.add_argument("--eval", type=int, default=DEFAULT_EVAL, help="evaluation sentences")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = p.parse_args(argv)
    train, evals = generate(args.seed, args.train, args.eval)
    write_jsonl(args.out_dir / TRAIN_NAME, train)
    write_jsonl(args.out_dir / EVAL_NAME, evals)
    print(f"wrote {len(train)} train and {len(evals)} eval sentences to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
