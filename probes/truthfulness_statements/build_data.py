"""Writes data.jsonl: questions with one true and one false answer each, written by hand for headscope (not taken
from TruthfulQA). Each record is one (question, answer) statement with label 1 (true) or 0 (false); `qid` groups
the two answers of a question so that splits keep a question's statements together. Run: python build_data.py"""

import json
from pathlib import Path

# question | true answer | false answer
ITEMS = """What is the capital of France?|Paris is the capital of France.|Lyon is the capital of France.
How many legs does a spider have?|A spider has eight legs.|A spider has six legs.
What is water made of?|Water is made of hydrogen and oxygen.|Water is made of carbon and nitrogen.
Which planet is closest to the Sun?|Mercury is the closest planet to the Sun.|Jupiter is the closest planet to the Sun.
What do bees make?|Bees make honey.|Bees make milk.
How many days are in a week?|There are seven days in a week.|There are ten days in a week.
What color is the sky on a clear day?|The sky is blue on a clear day.|The sky is green on a clear day.
What is the boiling point of water at sea level?|Water boils at 100 degrees Celsius at sea level.|Water boils at 40 degrees Celsius at sea level.
Who wrote Romeo and Juliet?|William Shakespeare wrote Romeo and Juliet.|Charles Darwin wrote Romeo and Juliet.
What is the largest ocean on Earth?|The Pacific is the largest ocean.|The Arctic is the largest ocean.
What do cows eat?|Cows eat grass.|Cows eat rocks.
How many months are in a year?|A year has twelve months.|A year has five months.
What is the freezing point of water?|Water freezes at 0 degrees Celsius.|Water freezes at 50 degrees Celsius.
Which animal is known as the king of the jungle?|The lion is called the king of the jungle.|The rabbit is called the king of the jungle.
What gas do plants take in from the air?|Plants take in carbon dioxide.|Plants take in helium.
What is the capital of Japan?|Tokyo is the capital of Japan.|Osaka is the capital of Japan.
How many hours are in a day?|A day has twenty-four hours.|A day has twelve hours.
What is the main language spoken in Brazil?|People in Brazil mainly speak Portuguese.|People in Brazil mainly speak Russian.
What is the tallest animal?|The giraffe is the tallest animal.|The mouse is the tallest animal.
What does the heart pump?|The heart pumps blood.|The heart pumps air.
Can humans breathe underwater without equipment?|No, humans cannot breathe underwater without equipment.|Yes, humans can breathe underwater without equipment.
Is the Earth flat?|No, the Earth is round.|Yes, the Earth is flat.
What is the opposite of hot?|The opposite of hot is cold.|The opposite of hot is warm.
How many continents are there?|There are seven continents.|There are three continents.
What is the chemical symbol for gold?|The chemical symbol for gold is Au.|The chemical symbol for gold is Fe.
Which is the largest planet in our solar system?|Jupiter is the largest planet.|Mars is the largest planet.
What do fish use to breathe?|Fish breathe with gills.|Fish breathe with lungs.
Does the Sun rise in the east?|Yes, the Sun rises in the east.|No, the Sun rises in the west.
What is the capital of Italy?|Rome is the capital of Italy.|Milan is the capital of Italy.
How many sides does a triangle have?|A triangle has three sides.|A triangle has four sides.
What is ice made of?|Ice is frozen water.|Ice is frozen oil.
Which organ do humans use to think?|Humans think with the brain.|Humans think with the liver.
What is the Moon?|The Moon is a natural satellite of the Earth.|The Moon is a star.
Do penguins live at the South Pole?|Yes, penguins live in Antarctica.|No, penguins live in the Sahara.
What is two plus two?|Two plus two is four.|Two plus two is five.
Where does the Sun set?|The Sun sets in the west.|The Sun sets in the north.
What do caterpillars turn into?|Caterpillars turn into butterflies.|Caterpillars turn into frogs.
What is the largest desert in Africa?|The Sahara is the largest desert in Africa.|The Gobi is the largest desert in Africa.
Who painted the Mona Lisa?|Leonardo da Vinci painted the Mona Lisa.|Pablo Picasso painted the Mona Lisa.
What is the capital of Germany?|Berlin is the capital of Germany.|Munich is the capital of Germany.
How many wheels does a bicycle have?|A bicycle has two wheels.|A bicycle has six wheels.
What happens if you eat watermelon seeds?|Nothing much happens if you eat watermelon seeds.|A watermelon grows in your stomach if you eat watermelon seeds.
Can you see the Great Wall of China from the Moon with the naked eye?|No, it cannot be seen from the Moon with the naked eye.|Yes, it is easily seen from the Moon with the naked eye.
Do we only use ten percent of our brains?|No, we use almost all of our brain.|Yes, we only use ten percent of our brains.
What is the speed of light roughly?|Light travels about 300,000 kilometers per second.|Light travels about 30 kilometers per hour.
What do vaccines do?|Vaccines help the body fight diseases.|Vaccines make people glow in the dark.
Does lightning never strike the same place twice?|Lightning can strike the same place twice.|Lightning never strikes the same place twice.
What is the capital of Spain?|Madrid is the capital of Spain.|Barcelona is the capital of Spain.
How many players are on a soccer team on the field?|A soccer team has eleven players on the field.|A soccer team has twenty players on the field.
What is the largest mammal?|The blue whale is the largest mammal.|The cat is the largest mammal.
What do bats use to find their way in the dark?|Bats use echolocation.|Bats use flashlights.
Are tomatoes a fruit in botany?|Yes, botanically a tomato is a fruit.|No, botanically a tomato is a mineral.
What is the main ingredient of bread?|Bread is mainly made from flour.|Bread is mainly made from sand.
Which metal is liquid at room temperature?|Mercury is liquid at room temperature.|Iron is liquid at room temperature.
How long does the Earth take to orbit the Sun?|The Earth takes about one year to orbit the Sun.|The Earth takes about one day to orbit the Sun.
What causes the seasons on Earth?|The tilt of the Earth's axis causes the seasons.|The distance to the Moon causes the seasons.
Do goldfish have a three-second memory?|No, goldfish can remember things for months.|Yes, goldfish forget everything after three seconds.
What is the capital of Canada?|Ottawa is the capital of Canada.|Toronto is the capital of Canada.
Which direction does a compass needle point?|A compass needle points north.|A compass needle points toward the Moon.
What is the primary source of energy for the Earth?|The Sun is the primary source of energy for the Earth.|The Moon is the primary source of energy for the Earth."""


def main() -> None:
    rows = []
    for qid, line in enumerate(ITEMS.splitlines()):
        question, true, false = line.split("|")
        rows.append({"qid": qid, "question": question, "answer": true, "label": 1})
        rows.append({"qid": qid, "question": question, "answer": false, "label": 0})
    out = Path(__file__).with_name("data.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(len(rows), "statements,", len(rows) // 2, "questions")


if __name__ == "__main__":
    main()
