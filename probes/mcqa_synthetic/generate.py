"""Writes data.jsonl: 40 four-option questions whose context states the answer (seeded, reproducible)."""

import json
import random
from pathlib import Path

WORDS = ["apple", "river", "candle", "tiger", "window", "garden", "pencil", "rocket", "silver", "forest",
         "bottle", "castle", "dragon", "button", "orange", "planet", "hammer", "violin", "jacket", "pillow",
         "island", "mirror", "wallet", "carrot", "ticket", "spider", "bridge", "coffee", "helmet", "rabbit"]
FRAMES = [
    ("The secret word is {w}.", "Which word is the secret word?"),
    ("Remember this: the password is {w}.", "What is the password?"),
    ("Anna put a {w} in the box.", "What did Anna put in the box?"),
    ("The label on the door says {w}.", "What does the label on the door say?"),
]


def main() -> None:
    rng = random.Random(2410_02343)
    answers = [i % 4 for i in range(40)]
    rng.shuffle(answers)  # 10 items per letter, in random order
    rows = []
    for n, answer in enumerate(answers):
        context, question = FRAMES[n % len(FRAMES)]
        words = rng.sample(WORDS, 4)
        target = words[0]
        others = words[1:]
        choices = others[:answer] + [target] + others[answer:]
        rows.append({"id": f"syn-{n:02d}", "context": context.format(w=target), "question": question,
                     "choices": choices, "answer": answer})
    with open(Path(__file__).with_name("data.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
