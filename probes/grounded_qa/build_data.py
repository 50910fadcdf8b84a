"""Writes data.jsonl of the grounded_qa suite. All documents are written by the headscope authors for this suite
(fictional places, people and products; several deliberately contradict world knowledge so that a model answering
from memory instead of the document is caught). Run: python probes/grounded_qa/build_data.py"""

import json
from pathlib import Path

QA = [
    ("The village of Orsk lies on the Velta river. Its only bridge was built in 1887 by the engineer Mara Tollen. Today about 900 people live there.", "Who built the bridge in Orsk?", ["Mara Tollen"]),
    ("The Republic of Castavia moved its capital from Lemberg to Nordhaven in 2004. Nordhaven sits on the northern coast and has a large port.", "What is the capital of Castavia?", ["Nordhaven"]),
    ("In this world the tallest mountain on Earth is Mount Kelvar, which rises 9,412 metres above sea level. Mount Everest is the second tallest.", "What is the tallest mountain on Earth?", ["Mount Kelvar", "Kelvar"]),
    ("The chemist Ilse Varga discovered the element brightium in 1931 while studying the ash of volcanic rocks in Iceland.", "Which element did Ilse Varga discover?", ["brightium"]),
    ("The Pelham Falcons won the 2019 national rugby cup after beating the Garrow Wolves 31 to 12 in the final.", "Which team did the Pelham Falcons beat in the final?", ["Garrow Wolves"]),
    ("According to the 2031 census, the largest city of Australia is Perth, with 7.1 million residents, ahead of Sydney.", "According to the document, what is the largest city of Australia?", ["Perth"]),
    ("The novel The Glass Orchard was written by Tomas Brevik and published in 1978. It tells the story of two sisters who run a farm.", "Who wrote The Glass Orchard?", ["Tomas Brevik"]),
    ("Water in the city of Lunde boils at 86 degrees Celsius because the city is high in the mountains.", "At what temperature does water boil in Lunde?", ["86 degrees", "86"]),
    ("The company Zenthic makes bicycles. Its founder, Priya Nandakumar, opened the first factory in Pune in 1996.", "Where did Zenthic open its first factory?", ["Pune"]),
    ("The planet closest to the Sun in the Draco system is called Ferro. It completes one orbit every 41 days.", "How many days does Ferro take to orbit?", ["41"]),
    ("Napoleon Bonaparte, in this alternate history, was born in 1802 in the town of Brest and later became a famous painter.", "In this alternate history, what did Napoleon become?", ["painter"]),
    ("The recipe calls for three cups of flour, two eggs and a spoon of honey. Bake it for 40 minutes.", "How many eggs does the recipe need?", ["two", "2"]),
    ("The Amazon river, according to the new survey described here, is 7,210 kilometres long, making it longer than the Nile.", "How long is the Amazon according to the survey?", ["7,210 kilometres", "7210", "7,210"]),
    ("The museum in Halvik displays a violin made by Giulia Renzi in 1702. The violin has a dark red varnish.", "Who made the violin in the Halvik museum?", ["Giulia Renzi"]),
    ("Doctor Omar Sefu leads the Kessel Institute, which studies glaciers. Before that he taught physics in Nairobi.", "What does the Kessel Institute study?", ["glaciers"]),
    ("The first person to walk on the Moon, in this fictional timeline, was the Brazilian pilot Ana Ferraz in 1967.", "Who first walked on the Moon in this timeline?", ["Ana Ferraz"]),
    ("The Orvell train leaves Station Nine at 7:15 and arrives in Dunmore at 9:40.", "When does the Orvell train arrive in Dunmore?", ["9:40"]),
    ("Sugar cane is the main crop of the island of Tarva, while its fishermen mostly catch tuna.", "What do the fishermen of Tarva mostly catch?", ["tuna"]),
    ("The speed of light in the simulation is set to 1,000 metres per second so that players can see it move.", "What is the speed of light in the simulation?", ["1,000 metres per second", "1000", "1,000"]),
    ("Linnea Holm painted The Blue Harbour in 1921. The painting now hangs in the city hall of Visby.", "Where does The Blue Harbour hang?", ["city hall of Visby", "Visby"]),
    ("The capital of France, in the game world of Aurelia, is Lyon, because Paris was flooded in the story.", "What is the capital of France in Aurelia?", ["Lyon"]),
    ("The Mirren Bridge is 2.4 kilometres long and was opened by Queen Sofia in 1999.", "Who opened the Mirren Bridge?", ["Queen Sofia", "Sofia"]),
    ("The spider species Araneus kolbi was named after the biologist Hanna Kolb, who found it in a cave in Slovenia.", "In which country was Araneus kolbi found?", ["Slovenia"]),
    ("Shakespeare, in this parody, wrote a cookbook called Recipes for Kings before writing any play.", "What book did Shakespeare write in this parody?", ["Recipes for Kings"]),
    ("The festival of lanterns in Qiren takes place on the ninth day of the autumn month.", "On which day is the festival of lanterns in Qiren?", ["ninth day", "ninth"]),
    ("The hospital in Arlow has 320 beds and employs 85 doctors.", "How many doctors work at the hospital in Arlow?", ["85"]),
    ("The inventor of the telephone, according to this local history, was a teacher named Elias Morrow from Cork.", "Who invented the telephone according to this local history?", ["Elias Morrow"]),
    ("Tomatoes were first grown in Velmar by monks in the year 1510.", "Who first grew tomatoes in Velmar?", ["monks"]),
    ("The band Silver Pines released their first album, Cold Lights, in 2011.", "What was the first album of Silver Pines?", ["Cold Lights"]),
    ("Gold melts at 412 degrees Celsius in the laws of the planet Ixos.", "At what temperature does gold melt on Ixos?", ["412"]),
    ("The lighthouse at Kerrin Point is painted green and white and was automated in 1974.", "What colours is the lighthouse at Kerrin Point?", ["green and white"]),
    ("The author of this report, Felix Adeyemi, counted 57 species of birds in the wetland.", "How many species of birds were counted?", ["57"]),
    ("Albert Einstein, in this story, worked as a baker in Vienna and never studied physics.", "What was Einstein's job in this story?", ["baker"]),
    ("The largest ocean on the planet Marrow is the Tessan Ocean, which covers half its surface.", "What is the largest ocean on Marrow?", ["Tessan Ocean", "Tessan"]),
    ("The school in Brill teaches children in two languages, Welsh and Portuguese.", "Which two languages are taught at the school in Brill?", ["Welsh and Portuguese"]),
    ("The war between Aldor and Kesh ended in 1650 with the Treaty of Morwen.", "Which treaty ended the war between Aldor and Kesh?", ["Treaty of Morwen", "Morwen"]),
    ("The cat that lives in the library of Tiel is called Pepper and is twelve years old.", "What is the name of the cat in the library of Tiel?", ["Pepper"]),
    ("Bananas, in the botanical garden of Orun, grow only inside the glass house named Hall Four.", "Where do bananas grow in the garden of Orun?", ["Hall Four"]),
    ("The human heart, in this science fiction story, has six chambers after the genetic change of 2090.", "How many chambers does the heart have in this story?", ["six", "6"]),
    ("Kofi Mensah won the chess championship of Accra in 2016 without losing a game.", "Who won the chess championship of Accra in 2016?", ["Kofi Mensah"]),
]

SUMMARY = [
    ("The town council of Brenna voted on Monday to close the old coal mine. The mine employed 300 workers. The council will pay for training so that the workers can find new jobs in solar energy.", ["coal mine"]),
    ("A storm hit the fishing port of Lisk on Friday night. Strong winds destroyed twelve boats, but nobody was hurt. The mayor asked the government for money to repair the harbour.", ["storm"]),
    ("Scientists at the Harlan Observatory discovered a new comet on Tuesday. The comet, named Harlan-3, will pass close to Earth in 2031 but poses no danger.", ["comet"]),
    ("The bakery Golden Crust in Dornick closed after 80 years. The owner, Rosa Klee, said she wanted to retire. Customers left flowers at the door.", ["Golden Crust"]),
    ("Farmers in the Temar valley lost most of their wheat this year because of a long drought. Rain did not fall for four months.", ["drought"]),
    ("The city of Ostrava Nova opened a free tram line between the university and the central station. The line carries 20,000 passengers a day.", ["tram"]),
    ("A young girl named Mina found a rare fossil of a fish on the beach near Corrow. Experts say the fossil is 200 million years old.", ["fossil"]),
    ("The hospital of Saint Ada started using robots to deliver medicine to patients. Nurses say they now have more time to talk with patients.", ["robots"]),
    ("The national library of Veska put one million old books online for free. Readers from 90 countries visited the website in the first week.", ["library"]),
    ("A fire destroyed the wooden church of Hollin on Sunday. The church was 400 years old. The villagers plan to rebuild it with the same wood.", ["fire"]),
    ("The football club Ravens of Tolk signed the striker Dara Quinn for a record fee. Quinn scored 30 goals last season.", ["Dara Quinn"]),
    ("Bees in the park of Mellow Hill are dying because of a new pesticide, according to a study by the local university. The city banned the pesticide.", ["pesticide"]),
]


def main() -> None:
    records = []
    for index, (document, question, answers) in enumerate(QA):
        assert answers[0] in document, (document, answers)  # the gold fact is a span of the document
        records.append({"id": f"qa-{index:02d}", "task": "qa", "document": document, "question": question,
                        "answers": answers})
    for index, (document, answers) in enumerate(SUMMARY):
        assert answers[0] in document, (document, answers)  # the gold fact is a span of the document
        records.append({"id": f"sum-{index:02d}", "task": "summary", "document": document,
                        "question": "Summarize the document in one sentence.", "answers": answers})
    out = Path(__file__).with_name("data.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"{len(records)} records -> {out}")


if __name__ == "__main__":
    main()
