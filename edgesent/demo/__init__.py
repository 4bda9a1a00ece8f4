"""Embedded demo data set: 3-class (negative / neutral / positive) short product and service reviews.

Used by ``edgesent finetune`` when no ``--data`` is given. Every sentence was written by the edgesent project:
``scripts/make_demo_data.py`` composes them from hand-written building blocks with a seeded ``random.Random``
(no external data set is read or copied). To regenerate the shipped files byte for byte, run from the repo root::

    python scripts/make_demo_data.py

CSV files have the header ``text,label``; labels are the strings ``negative``, ``neutral`` and ``positive``.
"""

from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent
DEMO_TRAIN = DEMO_DIR / "train.csv"
DEMO_EVAL = DEMO_DIR / "eval.csv"

__all__ = ["DEMO_DIR", "DEMO_EVAL", "DEMO_TRAIN"]
