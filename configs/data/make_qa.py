"""Writes qa.jsonl: short factual questions with one-sentence answers (columns ``Question`` and ``Best Answer``,
the seed's names). Written for this project from facts listed here; deterministic (``python make_qa.py``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Kenya": "Nairobi", "Japan": "Tokyo", "Canada": "Ottawa", "Peru": "Lima", "Egypt": "Cairo",
    "Norway": "Oslo", "Chile": "Santiago", "Ghana": "Accra", "Spain": "Madrid", "Italy": "Rome", "Greece": "Athens",
    "Poland": "Warsaw", "Austria": "Vienna", "Portugal": "Lisbon", "Ireland": "Dublin", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Hungary": "Budapest", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Argentina": "Buenos Aires", "Colombia": "Bogota", "Cuba": "Havana", "Morocco": "Rabat", "Nigeria": "Abuja",
    "Australia": "Canberra", "Germany": "Berlin", "India": "New Delhi", "Mexico": "Mexico City", "Turkey": "Ankara",
    "Iceland": "Reykjavik", "Nepal": "Kathmandu", "Belgium": "Brussels", "Ukraine": "Kyiv", "Uganda": "Kampala",
    "Senegal": "Dakar", "Jordan": "Amman", "Mongolia": "Ulaanbaatar",
}
OPPOSITES = {
    "hot": "cold", "tall": "short", "early": "late", "happy": "sad", "open": "closed", "full": "empty", "heavy": "light",
    "fast": "slow", "rich": "poor", "wet": "dry", "loud": "quiet", "hard": "soft", "young": "old", "strong": "weak",
    "first": "last", "above": "below", "inside": "outside", "win": "lose", "buy": "sell", "push": "pull", "cheap": "expensive",
    "thick": "thin", "brave": "cowardly", "wide": "narrow", "deep": "shallow", "clean": "dirty", "sharp": "blunt",
    "smooth": "rough", "awake": "asleep", "arrive": "depart",
}
PLURALS = {
    "mouse": "mice", "child": "children", "goose": "geese", "tooth": "teeth", "foot": "feet", "man": "men",
    "woman": "women", "person": "people", "leaf": "leaves", "knife": "knives", "wolf": "wolves", "cactus": "cacti",
    "city": "cities", "box": "boxes", "bus": "buses", "sheep": "sheep", "fish": "fish", "ox": "oxen", "half": "halves",
    "potato": "potatoes", "hero": "heroes", "baby": "babies", "church": "churches", "wife": "wives", "crisis": "crises",
}
SYMBOLS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "oxygen": "O", "hydrogen": "H", "carbon": "C", "sodium": "Na",
    "potassium": "K", "copper": "Cu", "lead": "Pb", "helium": "He", "nitrogen": "N", "calcium": "Ca", "zinc": "Zn",
    "tin": "Sn", "mercury": "Hg", "neon": "Ne", "sulfur": "S", "chlorine": "Cl", "uranium": "U",
}
YOUNG = {
    "cat": "kitten", "dog": "puppy", "cow": "calf", "horse": "foal", "sheep": "lamb", "goat": "kid", "frog": "tadpole",
    "kangaroo": "joey", "swan": "cygnet", "owl": "owlet", "bear": "cub", "lion": "cub", "deer": "fawn", "goose": "gosling",
    "duck": "duckling", "pig": "piglet", "hen": "chick", "eagle": "eaglet", "seal": "pup", "whale": "calf",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = {"January": 31, "March": 31, "April": 30, "May": 31, "June": 30, "July": 31, "August": 31, "September": 30,
          "October": 31, "November": 30, "December": 31}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def rows(rng: random.Random) -> list[dict[str, str]]:
    out: list[tuple[str, str]] = []
    for country, city in CAPITALS.items():
        out.append((f"What is the capital of {country}?", f"The capital of {country} is {city}."))
    for word, opposite in OPPOSITES.items():
        out.append((f"What is the opposite of '{word}'?", f"The opposite of {word} is {opposite}."))
    for word, plural in PLURALS.items():
        out.append((f"What is the plural of '{word}'?", f"The plural of {word} is {plural}."))
    for element, symbol in SYMBOLS.items():
        out.append((f"What is the chemical symbol for {element}?", f"The chemical symbol for {element} is {symbol}."))
    for animal, young in YOUNG.items():
        article = "an" if young[0] in "aeiou" else "a"
        out.append((f"What is a baby {animal} called?", f"A baby {animal} is called {article} {young}."))
    for i, day in enumerate(DAYS):
        out.append((f"Which day comes after {day}?", f"The day after {day} is {DAYS[(i + 1) % 7]}."))
        out.append((f"Which day comes before {day}?", f"The day before {day} is {DAYS[i - 1]}."))
    for month, days in MONTHS.items():
        out.append((f"How many days are there in {month}?", f"{month} has {days} days."))
    pairs = set()
    while len(pairs) < 60:
        pairs.add((rng.randint(2, 60), rng.randint(2, 60)))
    for a, b in sorted(pairs):
        out.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    products = set()
    while len(products) < 40:
        products.add((rng.randint(2, 12), rng.randint(2, 12)))
    for a, b in sorted(products):
        out.append((f"What is {a} times {b}?", f"{a} times {b} is {a * b}."))
    for hours in range(2, 14):
        out.append((f"How many minutes are there in {hours} hours?", f"There are {hours * 60} minutes in {hours} hours."))
    for weeks in range(2, 14):
        out.append((f"How many days are there in {weeks} weeks?", f"There are {weeks * 7} days in {weeks} weeks."))
    for n in range(1, 13):
        out.append((f"How do you write the number {n} in words?", f"The number {n} is written as {NUMBER_WORDS[n]}."))
    rng.shuffle(out)
    return [{"Question": q, "Best Answer": a} for q, a in out]


if __name__ == "__main__":
    data = rows(random.Random(0))
    path = Path(__file__).with_name("qa.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    print(f"{len(data)} rows -> {path}")
