"""Generate haystack.txt: neutral, procedurally generated prose about invented places (seeded, no real text).

Run `python build_haystack.py` to rebuild; the output is deterministic for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 20240415
N_PARAGRAPHS = 160

PLACES = ["Ashford Vale", "Brindle Cove", "Corran Heath", "Dunmere", "Elmstead", "Fallow Reach", "Greyholm",
          "Harrowgate Lea", "Ivel Crossing", "Juniper Hollow", "Kestrel Point", "Lowmarsh", "Millbrook",
          "Northwick", "Oakhurst", "Pellworth", "Quarry End", "Redfern", "Stonebridge", "Thornbury",
          "Upton Marsh", "Westerleigh", "Yarrow Fields", "Saltmere", "Coldharbour", "Fernhill"]
FEATURES = ["river", "market square", "stone bridge", "harbour", "library", "orchard", "mill", "bell tower",
            "footpath", "meadow", "canal", "reservoir", "woodland", "railway halt", "village green", "quarry",
            "ferry landing", "town hall", "grain store", "weather station"]
ADJECTIVES = ["quiet", "narrow", "broad", "old", "newly repaired", "modest", "busy", "sheltered", "windy",
              "well kept", "gently sloping", "low", "wide", "long", "small", "tidy"]
PEOPLE = ["farmers", "teachers", "fishermen", "students", "shopkeepers", "walkers", "carpenters", "bakers",
          "visitors", "volunteers", "surveyors", "gardeners", "weavers", "clerks", "musicians", "potters"]
GOODS = ["barley", "apples", "wool", "timber", "cheese", "honey", "pottery", "rope", "salt", "linen",
         "cider", "turnips", "candles", "baskets", "slate", "hay"]
SEASONS = ["spring", "summer", "autumn", "winter"]
WEATHER = ["light rain", "morning fog", "steady wind", "clear skies", "low cloud", "mild sunshine",
           "sudden showers", "a hard frost", "long dry spells", "heavy dew"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "fifteen", "twenty"]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October", "November"]

TEMPLATES = [
    "The {feature} at {place} is {adj} and is used mostly by {people}.",
    "In {season}, {place} usually sees {weather}, and the {people} plan their work around it.",
    "Most households in {place} trade {good} and {good2} at the weekly market.",
    "A {adj} road runs from {place} to {place2}, passing the {feature} on the way.",
    "The records of {place} list {number} families who have kept {good} for many years.",
    "Every {month}, the {people} of {place} gather near the {feature} to count the season's {good}.",
    "Travellers often remark that the {feature} of {place} looks much like the one at {place2}.",
    "The council of {place} meets {number} times a year to discuss the upkeep of the {feature}.",
    "During {season} the {feature} becomes {adj}, and few {people} pass that way.",
    "Children in {place} learn to recognise {weather} long before they learn to read.",
    "The path beside the {feature} was widened after {number} {people} asked for it.",
    "Stores of {good} are kept in a {adj} shed behind the {feature} in {place}.",
    "Visitors to {place} are advised to bring a coat, since {weather} is common in {season}.",
    "The {people} of {place2} and {place} have shared the {feature} for {number} generations.",
    "On market days, carts of {good} line the {adj} lanes of {place}.",
    "A small notice near the {feature} gives the opening hours in plain letters.",
    "The hills east of {place} are covered with {adj} fields of {good}.",
    "Some {people} say the {feature} was built before the town itself, though no record shows it.",
    "In {month} the price of {good} in {place} tends to fall by a small amount.",
    "Water from the {feature} is carried to {number} farms on the edge of {place}.",
    "There is no inn at {place}, so most {people} stay in {place2} instead.",
    "The {adj} {feature} is painted every {season} by a group of local {people}.",
    "Maps of the district show {place} as a cluster of houses around the {feature}.",
    "Long ago the {people} of {place} exchanged {good} for {good2} with traders from {place2}.",
    "Rain gauges near the {feature} record {weather} on most days of {month}.",
    "It takes about {number} minutes to walk from the {feature} to the edge of {place}.",
    "The school in {place} keeps a record of {weather} for every day of the year.",
    "A {adj} wall marks the boundary between {place} and the fields of {place2}.",
]


def sentence(rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    place, place2 = rng.sample(PLACES, 2)
    good, good2 = rng.sample(GOODS, 2)
    return template.format(
        place=place, place2=place2, good=good, good2=good2, feature=rng.choice(FEATURES),
        adj=rng.choice(ADJECTIVES), people=rng.choice(PEOPLE), season=rng.choice(SEASONS),
        weather=rng.choice(WEATHER), number=rng.choice(NUMBERS), month=rng.choice(MONTHS),
    )


def build(seed: int = SEED, n_paragraphs: int = N_PARAGRAPHS) -> str:
    rng = random.Random(seed)
    paragraphs = [" ".join(sentence(rng) for _ in range(rng.randint(4, 8))) for _ in range(n_paragraphs)]
    return "\n\n".join(paragraphs) + "\n"


if __name__ == "__main__":
    Path(__file__).with_name("haystack.txt").write_text(build())
