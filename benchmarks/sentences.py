"""Varied English sentences made from templates and word lists (nothing is downloaded).

Sixteen topics, each with its own subjects, actions, objects and settings, are
combined through a dozen sentence templates, with shared openings, times and
moods mixed in, so sentences of one topic sit near each other without being
near-copies, and a sentence's nearest neighbour is a real question for an
embedding model. :func:`sentences` is deterministic for a seed; callers take
disjoint sets by seed and :func:`disjoint` (validation vs unseen scoring rows).
"""

from __future__ import annotations

import numpy as np

TOPICS: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    # topic: (subjects, actions, objects, settings)
    "cooking": (
        ["the chef", "my grandmother", "a young cook", "the baker", "our neighbour"],
        ["slowly stirred", "carefully seasoned", "burned", "baked", "chopped", "tasted"],
        [
            "the tomato soup",
            "a loaf of rye bread",
            "the garlic and onions",
            "a lemon tart",
            "the spicy curry",
            "fresh pasta dough",
        ],
        [
            "in the small kitchen",
            "for the family dinner",
            "before the guests arrived",
            "over a low flame",
            "at the restaurant",
        ],
    ),
    "football": (
        ["the striker", "the home team", "the goalkeeper", "our coach", "the young defender"],
        ["scored", "missed", "defended", "celebrated", "argued about", "practised"],
        [
            "a late penalty",
            "the winning goal",
            "the free kick",
            "the final whistle",
            "a corner in extra time",
            "the league title",
        ],
        [
            "in front of a full stadium",
            "during the derby",
            "in the pouring rain",
            "at the training ground",
            "in the cup final",
        ],
    ),
    "weather": (
        ["the forecast", "a cold front", "the storm", "the morning fog", "heavy snow"],
        ["brought", "delayed", "covered", "threatened", "cleared", "flooded"],
        [
            "the coastal roads",
            "the whole valley",
            "the airport runways",
            "the mountain pass",
            "the farmers' fields",
            "the city centre",
        ],
        [
            "overnight",
            "by late afternoon",
            "for the third day in a row",
            "before the weekend",
            "across the north",
        ],
    ),
    "finance": (
        ["the central bank", "investors", "the hedge fund", "the finance minister", "the market"],
        ["raised", "cut", "sold off", "worried about", "bought", "forecast"],
        [
            "interest rates",
            "government bonds",
            "tech shares",
            "the quarterly earnings",
            "the currency",
            "oil futures",
        ],
        [
            "after the report",
            "on Wall Street",
            "amid inflation fears",
            "before the close",
            "in early trading",
        ],
    ),
    "medicine": (
        ["the doctor", "a nurse", "the surgeon", "the patient", "the clinic"],
        ["prescribed", "treated", "examined", "recovered from", "diagnosed", "monitored"],
        [
            "a broken wrist",
            "the fever",
            "high blood pressure",
            "a mild infection",
            "the heart condition",
            "a persistent cough",
        ],
        [
            "at the hospital",
            "in the emergency room",
            "after the operation",
            "during the night shift",
            "with antibiotics",
        ],
    ),
    "computing": (
        ["the developer", "our server", "the compiler", "a new laptop", "the database"],
        ["crashed while running", "optimised", "compiled", "downloaded", "debugged", "deployed"],
        [
            "the web application",
            "a memory leak",
            "the latest update",
            "the machine learning model",
            "the backup script",
            "a security patch",
        ],
        [
            "in production",
            "on the cloud",
            "late on Friday",
            "after the release",
            "in the data centre",
        ],
    ),
    "music": (
        ["the orchestra", "a jazz pianist", "the band", "the young violinist", "the choir"],
        ["performed", "recorded", "rehearsed", "improvised", "composed", "sang"],
        [
            "a slow ballad",
            "the symphony",
            "an old folk song",
            "the new album",
            "a piano concerto",
            "the encore",
        ],
        [
            "at the concert hall",
            "in a tiny club",
            "at the summer festival",
            "in the studio",
            "on live radio",
        ],
    ),
    "travel": (
        ["the tourists", "my sister", "a backpacker", "the tour guide", "our family"],
        ["booked", "missed", "explored", "photographed", "cancelled", "visited"],
        [
            "the night train",
            "the old harbour",
            "a cheap flight",
            "the museum",
            "the mountain village",
            "a hotel by the sea",
        ],
        [
            "in Lisbon",
            "during the holidays",
            "on a rainy morning",
            "last summer",
            "across the border",
        ],
    ),
    "gardening": (
        ["the gardener", "my father", "the children", "a retired teacher", "the volunteers"],
        ["planted", "watered", "pruned", "harvested", "weeded", "repotted"],
        [
            "the rose bushes",
            "rows of carrots",
            "the apple tree",
            "the herb garden",
            "tulip bulbs",
            "the vegetable patch",
        ],
        [
            "in early spring",
            "behind the house",
            "after the frost",
            "in the allotment",
            "every Sunday",
        ],
    ),
    "animals": (
        ["the dog", "a stray cat", "the old horse", "a family of ducks", "the parrot"],
        ["chased", "ignored", "slept beside", "barked at", "followed", "played with"],
        [
            "the postman",
            "a red ball",
            "the garden hose",
            "the neighbour's rabbit",
            "the children",
            "a squirrel",
        ],
        ["in the park", "all afternoon", "near the pond", "on the farm", "by the fireplace"],
    ),
    "politics": (
        ["the senator", "the prime minister", "the opposition", "voters", "the committee"],
        ["debated", "rejected", "announced", "criticised", "approved", "campaigned for"],
        [
            "the new tax law",
            "the budget",
            "an election reform",
            "the trade agreement",
            "the health bill",
            "stricter immigration rules",
        ],
        [
            "in parliament",
            "before the election",
            "at a press conference",
            "after months of talks",
            "in the capital",
        ],
    ),
    "science": (
        ["the physicist", "a team of biologists", "the telescope", "the laboratory", "the chemist"],
        ["discovered", "measured", "observed", "published", "tested", "simulated"],
        [
            "a distant galaxy",
            "a new protein",
            "the particle decay",
            "the climate data",
            "a rare mineral",
            "the gene mutation",
        ],
        [
            "in the journal",
            "at the observatory",
            "after years of work",
            "under the microscope",
            "in the experiment",
        ],
    ),
    "school": (
        ["the teacher", "the students", "the headmaster", "a shy pupil", "the class"],
        ["graded", "forgot", "studied", "presented", "failed", "wrote"],
        [
            "the history essay",
            "the maths exam",
            "a science project",
            "the reading list",
            "the homework",
            "the spelling test",
        ],
        [
            "before the bell",
            "in the library",
            "during the break",
            "at the end of term",
            "in the classroom",
        ],
    ),
    "cars": (
        ["the mechanic", "my brother", "the driver", "the rental company", "a taxi driver"],
        ["repaired", "crashed", "washed", "sold", "parked", "towed"],
        [
            "the old van",
            "an electric car",
            "the flat tyre",
            "the broken engine",
            "a vintage motorbike",
            "the brakes",
        ],
        [
            "on the motorway",
            "at the garage",
            "in the car park",
            "after the accident",
            "near the station",
        ],
    ),
    "shopping": (
        ["the customer", "my mother", "the shop assistant", "a group of teenagers", "the cashier"],
        ["returned", "paid for", "compared", "ordered", "wrapped", "discounted"],
        [
            "a winter coat",
            "new running shoes",
            "the groceries",
            "a birthday present",
            "the television",
            "a pair of jeans",
        ],
        ["at the market", "online", "in the sale", "at the supermarket", "before Christmas"],
    ),
    "art": (
        ["the painter", "a sculptor", "the gallery", "the art student", "the curator"],
        ["painted", "restored", "exhibited", "sketched", "sold", "framed"],
        [
            "a portrait of the queen",
            "the marble statue",
            "an abstract landscape",
            "the old fresco",
            "a series of prints",
            "the watercolours",
        ],
        [
            "in the museum",
            "at the auction",
            "in her studio",
            "for the exhibition",
            "in the cathedral",
        ],
    ),
}
OPENINGS = [
    "",
    "",
    "",
    "Yesterday ",
    "Apparently ",
    "Last week ",
    "This morning ",
    "As expected, ",
    "To everyone's surprise, ",
    "Once again ",
]
MOODS = [
    "",
    "",
    "",
    " and everyone was pleased",
    " but nobody noticed",
    " which caused a long delay",
    " and it was on the news",
    " for the first time",
]
TEMPLATES = [
    "{open}{subject} {action} {object} {setting}{mood}.",
    "{open}{subject} {action} {object}{mood}.",
    "{Setting}, {subject} {action} {object}.",
    "Did {subject} really say that they {action} {object} {setting}?",
    "It was {subject} who {action} {object} {setting}.",
    "{open}{subject} never {action} {object} {setting}.",
    "Nobody expected that {subject} {action} {object}{mood}.",
    "{object_cap} was what {subject} {action} {setting}.",
    "{open}{subject} {action} {object}, then {action2} {object2} {setting}.",
    "According to the report, {subject} {action} {object} {setting}.",
    "I heard that {subject} {action} {object}.",
    "{open}{subject} {action} {object} {setting}, as always.",
]


def _one(rng: np.random.Generator, topic: str) -> str:
    subjects, actions, objects, settings = TOPICS[topic]
    action, action2 = rng.choice(actions, 2, replace=False)
    obj, obj2 = rng.choice(objects, 2, replace=False)
    setting = str(rng.choice(settings))
    text = str(rng.choice(TEMPLATES)).format(
        open=rng.choice(OPENINGS),
        subject=rng.choice(subjects),
        action=action,
        action2=action2,
        object=obj,
        object2=obj2,
        object_cap=obj[0].upper() + obj[1:],
        setting=setting,
        Setting=setting[0].upper() + setting[1:],
        mood=rng.choice(MOODS),
    )
    return text[0].upper() + text[1:]


def sentences(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``count`` distinct sentences over every topic in turn, none of them in ``exclude``."""
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    found: list[str] = []
    seen = set(exclude)
    attempts = 0
    while len(found) < count:
        attempts += 1
        if attempts > 100 * count:
            raise ValueError(f"cannot make {count} distinct sentences (got {len(found)})")
        text = _one(rng, topics[len(found) % len(topics)])
        if text not in seen:
            seen.add(text)
            found.append(text)
    return found


def disjoint(sizes: dict[str, int], seed: int = 0) -> dict[str, list[str]]:
    """Named sets of sentences that share no sentence (e.g. calibration, validation, unseen)."""
    taken: set[str] = set()
    sets = {}
    for offset, (name, size) in enumerate(sizes.items()):
        sets[name] = sentences(size, seed + offset, frozenset(taken))
        taken.update(sets[name])
    return sets
