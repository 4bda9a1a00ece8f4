"""Write edgesent's embedded demo data set: short 3-class product and service reviews.

Every sentence is composed from building blocks written by the edgesent project in this file: no external
data set is read or copied. The generator is deterministic (a seeded ``random.Random``, stdlib only), so the
shipped files can be reproduced byte for byte:

    python scripts/make_demo_data.py                  # writes edgesent/demo/train.csv and eval.csv
    python scripts/make_demo_data.py --seed 7 --train-per-class 500 --eval-per-class 100 --out-dir /tmp/demo

Labels are ``negative``, ``neutral`` and ``positive``. The task is kept from being trivially keyword-separable:
negation ("wasn't bad at all" is positive, "not great" is negative, "not bad, not great" is neutral), mild and
strong wording, mixed clauses whose overall verdict decides the label, and neutral factual sentences that also
appear as context inside positive and negative reviews.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


LABELS = ("negative", "neutral", "positive")
DEFAULT_SEED = 20240601
DEFAULT_TRAIN_PER_CLASS = 350
DEFAULT_EVAL_PER_CLASS = 60
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "edgesent" / "demo"
MIN_WORDS, MAX_WORDS = 5, 30


# ---------------------------------------------------------------------------------------------------------------
# Building blocks. Predicates use "{be}" (was/were), so they agree with singular and plural subjects; "{be}n't"
# gives wasn't/weren't. Aspect-specific predicates are clearly positive, negative or neutral on their own.
# An aspect is (subject, plural, positive predicates, negative predicates, neutral predicates).
# ---------------------------------------------------------------------------------------------------------------

DOMAINS: dict[str, dict] = {
    "restaurant": {
        "product": ["this restaurant", "this place", "the bistro", "this little café"],
        "aspects": [
            (
                "the waiter",
                False,
                ["{be} attentive and friendly", "remembered our order without writing it down"],
                ["{be} rude to us all evening", "ignored our table for twenty minutes"],
                ["took our order and brought the bill", "{be} a young guy in a black apron"],
            ),
            (
                "the pasta",
                False,
                ["{be} cooked perfectly", "{be} full of flavour"],
                ["{be} cold and bland", "{be} overcooked and swimming in oil"],
                ["came in a normal portion", "{be} the house tomato sauce"],
            ),
            (
                "the desserts",
                True,
                ["{be} heavenly", "{be} worth the calories"],
                ["{be} stale", "tasted like they came out of a freezer"],
                ["{be} the usual tiramisu and ice cream", "{be} listed on a separate card"],
            ),
            (
                "the prices",
                True,
                ["{be} very fair for the quality"],
                ["{be} ridiculous for what you get"],
                ["{be} in line with other places nearby"],
            ),
            (
                "the wait for a table",
                False,
                ["{be} shorter than they promised"],
                ["{be} well over an hour"],
                ["{be} about fifteen minutes"],
            ),
        ],
        "facts": [
            "we went on a Friday evening",
            "I ordered the lunch special",
            "we were a group of six",
            "the menu changes every week",
            "I had the vegetarian option",
            "we sat on the terrace",
        ],
        "pos_close": ["We'll definitely be back.", "Already planning our next dinner here."],
        "neg_close": ["We won't be eating here again.", "Not worth the trip."],
        "lukewarm": ["A normal neighbourhood restaurant, nothing more.", "Food was food, I suppose."],
    },
    "hotel": {
        "product": ["this hotel", "the hotel", "this resort", "this guesthouse"],
        "aspects": [
            (
                "the room",
                False,
                ["{be} spotless", "{be} bright and spacious"],
                ["{be} dirty and smelled of smoke", "{be} tiny and noisy"],
                ["{be} on the third floor", "{be} a standard double"],
            ),
            (
                "the staff",
                True,
                ["{be} wonderful", "went out of their way to help us"],
                ["{be} unhelpful and rude", "ignored every request we made"],
                ["spoke English and Spanish", "wore blue uniforms"],
            ),
            ("check-in", False, ["{be} quick and painless"], ["took almost an hour"], ["{be} from 3 pm"]),
            (
                "the breakfast",
                False,
                ["{be} excellent, with lots of choice", "{be} the highlight of our stay"],
                ["{be} cold and overpriced"],
                ["{be} served until 10", "{be} a buffet in the basement"],
            ),
            (
                "the bed",
                False,
                ["{be} incredibly comfortable"],
                ["{be} lumpy and creaked all night"],
                ["{be} a queen size"],
            ),
            (
                "the wifi",
                False,
                ["{be} fast everywhere in the building"],
                ["kept dropping out"],
                ["needed a code from reception"],
            ),
        ],
        "facts": [
            "we stayed three nights in March",
            "I booked through the hotel website",
            "the hotel is near the train station",
            "we had a room facing the street",
            "parking costs extra",
            "I was there for a work conference",
        ],
        "pos_close": ["Would stay here again in a heartbeat.", "We're already looking at dates to return."],
        "neg_close": ["We won't be staying here again.", "Book somewhere else."],
        "lukewarm": ["A place to sleep, nothing more.", "It's a standard business hotel."],
    },
    "phone": {
        "product": ["this phone", "the phone", "this model", "this handset"],
        "aspects": [
            (
                "the battery",
                False,
                ["lasted two full days", "{be} seriously impressive"],
                ["died before lunch every day", "drained overnight with the screen off"],
                ["lasted about a day", "{be} 4,000 mAh"],
            ),
            (
                "the screen",
                False,
                ["{be} sharp and bright"],
                ["cracked within a week", "{be} dim and washed out"],
                ["{be} 6.1 inches", "{be} a flat panel"],
            ),
            (
                "the camera",
                False,
                ["took stunning photos"],
                ["took blurry photos even in daylight"],
                ["had three lenses"],
            ),
            (
                "the charger",
                False,
                ["filled it up in under an hour"],
                ["stopped working after a month"],
                ["{be} included in the box"],
            ),
            ("the speakers", True, ["{be} loud and clear"], ["crackled at any volume"], ["{be} at the bottom edge"]),
            ("the setup", False, ["took two minutes"], ["{be} a nightmare"], ["took about twenty minutes"]),
        ],
        "facts": [
            "I bought it last month",
            "I got the 128 GB version",
            "it came in black",
            "I switched from an older model of the same brand",
            "it arrived with a USB-C cable",
            "I use it mostly for calls and maps",
        ],
        "pos_close": ["Best phone I've owned.", "Worth every cent."],
        "neg_close": ["Returning it tomorrow.", "I regret buying it."],
        "lukewarm": ["It does what it says, nothing more.", "A phone is a phone, this one included."],
    },
    "delivery": {
        "product": ["this courier", "the delivery service", "this parcel company"],
        "aspects": [
            (
                "the driver",
                False,
                ["{be} friendly and careful", "carried the box all the way upstairs"],
                ["threw the box over the fence", "{be} rude when I asked for a signature"],
                ["rang the bell once", "{be} in a white van"],
            ),
            (
                "the package",
                False,
                ["arrived a day early", "came perfectly packed"],
                ["arrived crushed and soaking wet", "never arrived"],
                ["arrived on Tuesday", "came in a brown box"],
            ),
            (
                "the tracking",
                False,
                ["{be} accurate to the minute"],
                ["said delivered when nothing had come"],
                ["updated twice a day"],
            ),
            (
                "customer service",
                False,
                ["sorted the problem in one call"],
                ["hung up on me twice"],
                ["{be} open until 6 pm"],
            ),
            (
                "the delivery window",
                False,
                ["{be} respected exactly"],
                ["{be} missed by five hours"],
                ["{be} between 8 and 12"],
            ),
        ],
        "facts": [
            "the package arrived on Tuesday",
            "I got a text with a delivery slot",
            "it was left with a neighbour",
            "I had to sign for it",
            "the parcel was about the size of a shoebox",
            "it came from a warehouse abroad",
        ],
        "pos_close": ["I'll pick them at checkout every time.", "Great courier."],
        "neg_close": ["I'll pick another courier next time.", "Worst courier I've dealt with."],
        "lukewarm": ["It got here, which is the main thing.", "A delivery like any other."],
    },
    "app": {
        "product": ["this app", "the app", "this software", "this tool"],
        "aspects": [
            (
                "the interface",
                False,
                ["{be} clean and intuitive"],
                ["{be} cluttered and confusing"],
                ["looked like most other apps"],
            ),
            (
                "the latest update",
                False,
                ["fixed every bug I had"],
                ["broke half the features"],
                ["changed the menu layout"],
            ),
            ("syncing between devices", False, ["worked flawlessly"], ["lost my data twice"], ["took a few seconds"]),
            (
                "the notifications",
                True,
                ["{be} useful without being annoying"],
                ["{be} constant and impossible to turn off"],
                ["{be} on by default"],
            ),
            ("the subscription", False, ["{be} worth every penny"], ["{be} a rip-off"], ["cost five dollars a month"]),
            (
                "the desktop version",
                False,
                ["never crashed once"],
                ["crashed every time I opened it"],
                ["needed about 200 MB of space"],
            ),
        ],
        "facts": [
            "I installed it on my laptop and phone",
            "I have used it for two weeks",
            "it asks for an account on first launch",
            "there is a free version with ads",
            "I use it for my grocery lists",
            "it is available in twelve languages",
        ],
        "pos_close": ["Easily the best app in its category.", "Five stars from me."],
        "neg_close": ["Uninstalled.", "I cancelled my subscription."],
        "lukewarm": ["It does what it says, nothing more.", "A basic app for basic needs."],
    },
    "clothing": {
        "product": ["this jacket", "this shop", "this brand", "this dress"],
        "aspects": [
            (
                "the fabric",
                False,
                ["felt soft and well made"],
                ["pilled after one wash", "felt cheap and scratchy"],
                ["{be} 100% cotton"],
            ),
            ("the fit", False, ["{be} perfect for me"], ["{be} way off"], ["{be} regular, not slim"]),
            (
                "the stitching",
                False,
                ["{be} neat and strong"],
                ["came apart within a week"],
                ["{be} in a contrasting colour"],
            ),
            (
                "the colour",
                False,
                ["{be} exactly like the photos"],
                ["faded after two washes", "{be} nothing like the photos"],
                ["{be} a dark navy"],
            ),
            (
                "returns",
                True,
                ["{be} quick and free"],
                ["{be} a hassle and cost me money"],
                ["{be} accepted within 30 days"],
            ),
            ("the buttons", True, ["{be} sewn on really securely"], ["fell off on the first day"], ["{be} plastic"]),
        ],
        "facts": [
            "I ordered a medium",
            "I bought it for a wedding",
            "I usually wear a size 10",
            "it came folded in a plastic bag",
            "I ordered the grey version in size M",
            "I have worn it about five times",
        ],
        "pos_close": ["My new favourite piece.", "I'm ordering it in another colour."],
        "neg_close": ["Straight back in the box.", "Waste of money."],
        "lukewarm": ["A basic piece of clothing, nothing more.", "It's a jacket. It keeps me warm."],
    },
    "airline": {
        "product": ["this airline", "the airline", "this carrier"],
        "aspects": [
            (
                "the flight",
                False,
                ["left and landed on time"],
                ["{be} delayed by four hours"],
                ["took just under three hours"],
            ),
            (
                "the cabin crew",
                True,
                ["{be} warm and professional"],
                ["{be} rude and impatient"],
                ["served drinks once"],
            ),
            (
                "the seats",
                True,
                ["{be} roomy, even in economy"],
                ["{be} cramped and would not recline"],
                ["{be} in rows of three"],
            ),
            (
                "boarding",
                False,
                ["{be} smooth and well organised"],
                ["{be} total chaos"],
                ["started forty minutes before departure"],
            ),
            ("my luggage", False, ["came out first at the belt"], ["{be} lost for a week"], ["{be} one checked bag"]),
            (
                "the food on board",
                False,
                ["{be} surprisingly tasty"],
                ["{be} inedible"],
                ["{be} a sandwich and a drink"],
            ),
        ],
        "facts": [
            "I flew economy from Lisbon to Berlin",
            "it was a morning flight",
            "I booked the ticket three weeks ahead",
            "the plane was about half full",
            "I had a window seat",
            "we connected through Frankfurt",
        ],
        "pos_close": ["I'll fly with them again.", "My go-to airline from now on."],
        "neg_close": ["Never flying with them again.", "Pay a bit more and fly with someone else."],
        "lukewarm": ["It got me from A to B.", "A normal short-haul flight."],
    },
    "bank": {
        "product": ["this bank", "the bank", "my bank"],
        "aspects": [
            (
                "the support agent",
                False,
                ["solved my issue in five minutes"],
                ["{be} dismissive and unhelpful"],
                ["asked for my account number"],
            ),
            ("the hold time", False, ["{be} under a minute"], ["{be} over an hour"], ["{be} around ten minutes"]),
            (
                "the banking app",
                False,
                ["made transfers effortless"],
                ["logged me out every few minutes"],
                ["showed my balance and recent payments"],
            ),
            (
                "the fees",
                True,
                ["{be} low and clearly explained"],
                ["{be} hidden and outrageous"],
                ["{be} listed on the website"],
            ),
            (
                "the branch staff",
                True,
                ["{be} patient and kind"],
                ["sent me away without helping"],
                ["asked me to take a number"],
            ),
        ],
        "facts": [
            "I called about a card payment",
            "I opened a savings account in January",
            "I have been a customer for six years",
            "I visited the branch on a Monday",
            "I contacted them through the online chat",
            "my card was replaced last week",
        ],
        "pos_close": ["Best bank I've had.", "Glad I switched to them."],
        "neg_close": ["Moving my money elsewhere.", "I'm closing my account."],
        "lukewarm": ["A bank like any other.", "They hold my money, that's about it."],
    },
    "car_rental": {
        "product": ["this rental company", "the rental agency", "this car hire firm"],
        "aspects": [
            (
                "the car",
                False,
                ["{be} clean and almost new"],
                ["had a flat tyre and a warning light on"],
                ["{be} a small grey hatchback"],
            ),
            (
                "the pickup",
                False,
                ["took five minutes"],
                ["took over an hour in a queue"],
                ["{be} at the airport desk"],
            ),
            (
                "the agent at the desk",
                False,
                ["{be} helpful and honest"],
                ["pushed insurance I did not need"],
                ["checked my licence and passport"],
            ),
            ("the final bill", False, ["matched the quote exactly"], ["{be} double the quote"], ["arrived by email"]),
        ],
        "facts": [
            "I rented the car for a week",
            "I picked it up at the airport",
            "it was a manual",
            "I returned it with a full tank",
            "I booked it online two days before",
            "we drove about 800 km",
        ],
        "pos_close": ["I'll rent from them again.", "Smoothest rental I've had."],
        "neg_close": ["Never renting from them again.", "Read the small print, or better, go elsewhere."],
        "lukewarm": ["A rental car is a rental car.", "It got us around."],
    },
}

# Generic predicates, used with any subject.
POS_STRONG = [
    "{be} excellent",
    "{be} fantastic",
    "{be} outstanding",
    "{be} superb",
    "{be} brilliant",
    "{be} absolutely perfect",
    "{be} amazing",
    "exceeded my expectations",
    "{be} the best part",
]
POS_MILD = [
    "{be} pretty good",
    "{be} nice",
    "{be} good",
    "{be} better than I expected",
    "{be} solid",
    "{be} quite pleasant",
    "{be} decent, even good",
]
NEG_STRONG = [
    "{be} terrible",
    "{be} awful",
    "{be} a complete disaster",
    "{be} dreadful",
    "{be} unacceptable",
    "{be} a total letdown",
    "{be} the worst I've seen",
    "ruined the whole experience",
]
NEG_MILD = [
    "{be} a bit disappointing",
    "{be} slightly underwhelming",
    "could have been better",
    "{be} a little below par",
    "{be} poor",
]
# Minor flaws, outweighed by a strong positive in a mixed sentence.
NEG_MINOR = ["{be} not perfect", "{be} a little disappointing", "could have been better", "{be} a bit meh"]
# Minor praise, outweighed by a strong negative in a mixed sentence.
POS_MINOR = ["{be} fine", "{be} nice enough", "{be} okay", "{be} decent"]
NEU = [
    "{be} okay",
    "{be} fine",
    "{be} average",
    "{be} as expected",
    "{be} standard",
    "{be} about what I expected",
    "{be} neither good nor bad",
    "{be} fine, nothing special",
    "{be} acceptable",
    "{be} adequate",
]
# Negation flips the polarity of the bare word.
POS_NEGATED = [
    "{be}n't bad at all",
    "{be} not bad at all, actually",
    "couldn't have been better",
    "{be}n't a problem at all",
    "{be}n't disappointing in the slightest",
    "left nothing to complain about",
    "{be} not just good but great",
]
NEG_NEGATED = [
    "{be} not great",
    "{be}n't good enough",
    "{be} far from good",
    "{be}n't up to standard",
    "{be} not as good as advertised",
    "{be}n't anywhere near acceptable",
    "{be} not good, sadly",
    "didn't live up to the hype",
]
NEU_NEGATED = [
    "{be}n't great, but {be}n't bad either",
    "{be} not amazing, not awful",
    "{be}n't anything special",
    "{be} not bad, not great",
    "{be}n't impressive, {be}n't terrible",
]

POS_OPENERS = [
    "Honestly,",
    "I have to say,",
    "Pleasantly surprised:",
    "Credit where it's due:",
    "Happy to report",
    "Well,",
]
NEG_OPENERS = ["Sadly,", "Unfortunately,", "I hate to say it, but", "Honestly,", "Well,", "Be warned:"]
NEU_OPENERS = ["For what it's worth,", "Just so you know,", "Honestly,", "Well,", "In short,"]

POS_TAIL = [
    "Highly recommended.",
    "Five stars.",
    "Very happy overall.",
    "Would recommend to anyone.",
    "Overall a great experience.",
    "Really pleased.",
    "Loved it.",
]
NEG_TAIL = [
    "Avoid.",
    "Not recommended.",
    "Save your money.",
    "One star.",
    "Very disappointed overall.",
    "Never again.",
    "Not happy at all.",
]
NEU_TAIL = [
    "Mixed feelings.",
    "Overall, about average.",
    "So, somewhere in the middle.",
    "Hard to say if I'd go back.",
    "It evens out, I suppose.",
    "Neither great nor terrible overall.",
    "Three stars.",
]


# ---------------------------------------------------------------------------------------------------------------
# Composition.
# ---------------------------------------------------------------------------------------------------------------


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _clause(aspect: tuple, predicate: str) -> str:
    subject, plural = aspect[0], aspect[1]
    return f"{subject} {predicate.format(be='were' if plural else 'was')}"


class _Composer:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def c(self, seq):
        return self.rng.choice(seq)

    def two_aspects(self, dom):
        a, b = self.rng.sample(dom["aspects"], 2)
        return a, b

    # predicates drawn from an aspect's own list or the generic lists
    def pos(self, a, strong=False):
        if strong:
            return self.c(a[2] + POS_STRONG)
        return self.c(a[2] + a[2] + POS_STRONG + POS_MILD)

    def neg(self, a, strong=False):
        if strong:
            return self.c(a[3] + NEG_STRONG)
        return self.c(a[3] + a[3] + NEG_STRONG + NEG_MILD)

    def neu(self, a):
        return self.c(a[4] + a[4] + NEU)

    # one review per call
    def positive(self, dom) -> str:
        c, rng = self.c, self.rng
        a, b = self.two_aspects(dom)
        t = rng.randrange(12)
        if t == 0:
            s = f"{_cap(_clause(a, self.pos(a)))}."
        elif t == 1:
            s = f"{_cap(_clause(a, self.pos(a)))}, and {_clause(b, self.pos(b))}."
        elif t == 2:  # mixed, positive wins
            s = f"{_cap(_clause(a, c(NEG_MINOR)))}, but {_clause(b, self.pos(b, strong=True))}."
            if rng.random() < 0.5:
                s += " " + c(POS_TAIL + dom["pos_close"])
        elif t == 3:
            s = f"Although {_clause(a, c(NEG_MINOR))}, {_clause(b, self.pos(b, strong=True))}."
        elif t == 4:  # negated negative
            s = f"{_cap(_clause(a, c(POS_NEGATED)))}."
            if rng.random() < 0.5:
                s += " " + c(POS_TAIL + dom["pos_close"])
        elif t == 5:
            s = f"{c(POS_OPENERS)} {_clause(a, self.pos(a))}."
        elif t == 6:
            s = f"{_cap(_clause(a, self.pos(a)))}. {c(POS_TAIL + dom['pos_close'])}"
        elif t == 7:
            s = f"No complaints about {a[0]}, and {_clause(b, self.pos(b))}."
        elif t == 8:
            s = f"Didn't expect much from {c(dom['product'])}, but {_clause(a, self.pos(a, strong=True))}."
        elif t == 9:
            s = f"{_cap(c(dom['facts']))}. {_cap(_clause(a, self.pos(a)))}."
        elif t == 10:
            s = f"I'd recommend {c(dom['product'])}: {_clause(a, self.pos(a))}."
        else:
            s = f"{_cap(c(dom['facts']))}, and {_clause(a, c(POS_NEGATED + a[2]))}."
        return s

    def negative(self, dom) -> str:
        c, rng = self.c, self.rng
        a, b = self.two_aspects(dom)
        t = rng.randrange(12)
        if t == 0:
            s = f"{_cap(_clause(a, self.neg(a)))}."
        elif t == 1:
            s = f"{_cap(_clause(a, self.neg(a)))}, and {_clause(b, self.neg(b))}."
        elif t == 2:  # mixed, negative wins
            s = f"{_cap(_clause(a, c(POS_MINOR)))}, but {_clause(b, self.neg(b, strong=True))}."
            if rng.random() < 0.5:
                s += " " + c(NEG_TAIL + dom["neg_close"])
        elif t == 3:
            s = f"{_cap(_clause(b, self.neg(b, strong=True)))}, even though {_clause(a, c(POS_MINOR))}."
        elif t == 4:  # negated positive
            s = f"{_cap(_clause(a, c(NEG_NEGATED)))}."
            if rng.random() < 0.5:
                s += " " + c(NEG_TAIL + dom["neg_close"])
        elif t == 5:
            s = f"{c(NEG_OPENERS)} {_clause(a, self.neg(a))}."
        elif t == 6:
            s = f"{_cap(_clause(a, self.neg(a)))}. {c(NEG_TAIL + dom['neg_close'])}"
        elif t == 7:
            s = f"I expected more from {c(dom['product'])}: {_clause(a, self.neg(a))}."
        elif t == 8:
            s = f"Can't recommend {c(dom['product'])}; {_clause(a, self.neg(a))}."
        elif t == 9:
            s = f"{_cap(c(dom['facts']))}. {_cap(_clause(a, self.neg(a)))}."
        elif t == 10:
            s = f"Not impressed with {c(dom['product'])}. {_cap(_clause(a, self.neg(a, strong=True)))}."
        else:
            s = f"{_cap(c(dom['facts']))}, and {_clause(a, c(NEG_NEGATED + a[3]))}."
        return s

    def neutral(self, dom) -> str:
        c, rng = self.c, self.rng
        a, b = self.two_aspects(dom)
        t = rng.randrange(12)
        if t == 0:
            s = f"{_cap(c(dom['facts']))}."
        elif t == 1:
            s = f"{_cap(_clause(a, self.neu(a)))}."
        elif t == 2:  # mixed, evens out
            s = f"{_cap(_clause(a, c(POS_MILD)))}, but {_clause(b, c(NEG_MILD))}. {c(NEU_TAIL)}"
        elif t == 3:
            s = f"Some good, some bad: {_clause(a, c(POS_MILD))}, {_clause(b, c(NEG_MILD))}."
        elif t == 4:
            s = f"{_cap(c(dom['facts']))}. {_cap(_clause(a, self.neu(a)))}."
        elif t == 5:  # negation that lands in the middle
            s = f"{_cap(_clause(a, c(NEU_NEGATED)))}."
        elif t == 6:
            s = c(
                dom["lukewarm"]
                + [
                    f"Nothing special about {c(dom['product'])}, nothing wrong either.",
                    f"I have no strong opinion about {c(dom['product'])}.",
                    f"{_cap(c(dom['product']))} is about what you'd expect for the price.",
                    f"An average experience with {c(dom['product'])}.",
                ]
            )
            if rng.random() < 0.5:
                s = f"{_cap(c(dom['facts']))}. {s}"
        elif t == 7:
            s = f"{_cap(c(dom['facts']))}, and {_clause(a, c(a[4]))}."
        elif t == 8:
            s = f"{c(NEU_OPENERS)} {_clause(a, self.neu(a))}."
        elif t == 9:
            s = f"No strong feelings about {a[0]} either way; {_clause(b, self.neu(b))}."
        elif t == 10:
            s = f"Not sure yet what I think of {c(dom['product'])}. {_cap(_clause(a, c(a[4])))}."
        else:
            s = f"{_cap(_clause(a, c(a[4])))}, and {_clause(b, c(b[4]))}."
        return s


def generate(
    seed: int = DEFAULT_SEED,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    eval_per_class: int = DEFAULT_EVAL_PER_CLASS,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Return (train_rows, eval_rows) of (text, label), balanced per class, shuffled, no text in both splits."""
    rng = random.Random(seed)
    comp = _Composer(rng)
    domains = list(DOMAINS.values())
    need = train_per_class + eval_per_class
    seen: set[str] = set()
    pools: dict[str, list[str]] = {}
    for label in LABELS:
        make = getattr(comp, label)
        pool: list[str] = []
        attempts = 0
        while len(pool) < need:
            attempts += 1
            if attempts > need * 200:
                raise RuntimeError(f"could not compose {need} distinct {label} reviews; ask for fewer")
            text = make(rng.choice(domains))
            if text in seen or not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                continue
            seen.add(text)
            pool.append(text)
        pools[label] = pool
    train = [(t, label) for label in LABELS for t in pools[label][:train_per_class]]
    evals = [(t, label) for label in LABELS for t in pools[label][train_per_class:]]
    rng.shuffle(train)
    rng.shuffle(evals)
    return train, evals


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS)
    p.add_argument("--eval-per-class", type=int, default=DEFAULT_EVAL_PER_CLASS)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = p.parse_args(argv)
    train, evals = generate(args.seed, args.train_per_class, args.eval_per_class)
    write_csv(args.out_dir / "train.csv", train)
    write_csv(args.out_dir / "eval.csv", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval rows to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
