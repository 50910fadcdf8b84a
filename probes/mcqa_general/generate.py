"""Writes data.jsonl: 40 general-knowledge questions (hand-written), correct option moved by a seeded permutation."""

import json
import random
from pathlib import Path

# (question, correct, three distractors): common facts, written for headscope.
FACTS = [
    ("What is the capital of France?", "Paris", ["Berlin", "Madrid", "Rome"]),
    ("What is the capital of Japan?", "Tokyo", ["Seoul", "Beijing", "Bangkok"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Vienna", "Athens"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Paris", "Warsaw"]),
    ("What is the capital of Spain?", "Madrid", ["Lisbon", "Barcelona", "Rome"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Chicago", "Dublin"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Saturn"]),
    ("Which planet is the largest in the solar system?", "Jupiter", ["Mars", "Earth", "Mercury"]),
    ("What is the closest star to the Earth?", "the Sun", ["Sirius", "Polaris", "Vega"]),
    ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many hours are in a day?", "24", ["12", "60", "100"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("Which animal is known as the king of the jungle?", "the lion", ["the mouse", "the cow", "the rabbit"]),
    ("Which animal has a very long neck?", "the giraffe", ["the pig", "the dog", "the hamster"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "oil"]),
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "brown"]),
    ("What colour are ripe bananas?", "yellow", ["purple", "blue", "black"]),
    ("What gas do people need to breathe?", "oxygen", ["helium", "neon", "argon"]),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees", ["50 degrees", "0 degrees", "200 degrees"]),
    ("Which ocean is the largest?", "the Pacific Ocean", ["the Indian Ocean", "the Arctic Ocean", "the Atlantic Ocean"]),
    ("Which continent is Egypt in?", "Africa", ["Europe", "Asia", "South America"]),
    ("Which continent is Brazil in?", "South America", ["Africa", "Europe", "Asia"]),
    ("What is the tallest mountain on Earth?", "Mount Everest", ["Mont Blanc", "Mount Fuji", "Kilimanjaro"]),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Mark Twain", "Jane Austen"]),
    ("What is 2 plus 2?", "4", ["3", "5", "22"]),
    ("What is 10 times 10?", "100", ["20", "1000", "110"]),
    ("What is the square root of 9?", "3", ["4", "9", "81"]),
    ("Which organ pumps blood through the body?", "the heart", ["the lung", "the liver", "the stomach"]),
    ("What do plants need from the Sun to make food?", "light", ["sound", "salt", "smoke"]),
    ("Which is the fastest land animal?", "the cheetah", ["the turtle", "the snail", "the elephant"]),
    ("What is the main language spoken in Brazil?", "Portuguese", ["Spanish", "French", "German"]),
    ("Which metal is liquid at room temperature?", "mercury", ["iron", "gold", "copper"]),
    ("How many continents are there?", "seven", ["three", "five", "eleven"]),
    ("What is the opposite of hot?", "cold", ["warm", "loud", "tall"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("What do cows drink?", "water", ["milk", "juice", "coffee"]),
    ("Which instrument has black and white keys?", "the piano", ["the drum", "the flute", "the trumpet"]),
    ("What is the currency of the United States?", "the dollar", ["the euro", "the yen", "the pound"]),
    ("Which shape has three sides?", "a triangle", ["a square", "a circle", "a hexagon"]),
]


def main() -> None:
    rng = random.Random(2410_02343)
    answers = [i % 4 for i in range(len(FACTS))]
    rng.shuffle(answers)  # 10 items per letter
    with open(Path(__file__).with_name("data.jsonl"), "w") as f:
        for n, ((question, correct, wrong), answer) in enumerate(zip(FACTS, answers)):
            wrong = list(wrong)
            rng.shuffle(wrong)
            choices = wrong[:answer] + [correct] + wrong[answer:]
            f.write(json.dumps({"id": f"gen-{n:02d}", "question": question, "choices": choices, "answer": answer}) + "\n")


if __name__ == "__main__":
    main()
