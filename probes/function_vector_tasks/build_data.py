"""Writes data.jsonl: word pairs of six in-context-learning tasks, written by hand for headscope (not copied from
ericwtodd/function_vectors' dataset_files). Run: python build_data.py"""

import json
from pathlib import Path

TASKS = {
    "antonym": """hot cold|big small|up down|fast slow|happy sad|light dark|open closed|early late|rich poor|strong weak
    old new|high low|good bad|wet dry|full empty|hard soft|long short|loud quiet|thick thin|win lose
    push pull|true false|clean dirty|inside outside|first last|left right|buy sell|love hate|start finish|near far
    top bottom|young old|cheap expensive|safe dangerous|heavy light|deep shallow|wide narrow|sweet sour|brave afraid|give take""",
    "capitalize": """apple Apple|river River|table Table|green Green|music Music|house House|water Water|money Money|paper Paper|window Window
    garden Garden|summer Summer|winter Winter|horse Horse|doctor Doctor|teacher Teacher|letter Letter|island Island|forest Forest|silver Silver
    market Market|bridge Bridge|castle Castle|dragon Dragon|engine Engine|flower Flower|guitar Guitar|hammer Hammer|jacket Jacket|kitchen Kitchen
    lemon Lemon|mirror Mirror|number Number|orange Orange|pencil Pencil|rabbit Rabbit|school School|ticket Ticket|valley Valley|yellow Yellow""",
    "country_capital": """France Paris|Germany Berlin|Italy Rome|Spain Madrid|Japan Tokyo|China Beijing|Russia Moscow|Egypt Cairo|Greece Athens|Portugal Lisbon
    Ireland Dublin|Austria Vienna|Norway Oslo|Sweden Stockholm|Finland Helsinki|Denmark Copenhagen|Poland Warsaw|Hungary Budapest|Thailand Bangkok|Kenya Nairobi
    Peru Lima|Chile Santiago|Cuba Havana|Canada Ottawa|Australia Canberra|India Delhi|Iran Tehran|Iraq Baghdad|Belgium Brussels|Netherlands Amsterdam
    Mexico Mexico|Argentina Buenos|Turkey Ankara|Ukraine Kyiv|Vietnam Hanoi|Indonesia Jakarta|Philippines Manila|Colombia Bogota|Nigeria Abuja|Scotland Edinburgh""",
    "english_french": """cat chat|dog chien|house maison|water eau|book livre|red rouge|white blanc|black noir|sun soleil|moon lune
    bread pain|cheese fromage|wine vin|milk lait|tree arbre|flower fleur|city ville|car voiture|friend ami|woman femme
    man homme|child enfant|day jour|night nuit|year an|king roi|sea mer|door porte|hand main|head tete
    green vert|blue bleu|small petit|big grand|good bon|new nouveau|apple pomme|bird oiseau|fish poisson|school ecole""",
    "present_past": """walk walked|play played|jump jumped|talk talked|run ran|eat ate|go went|see saw|write wrote|sing sang
    swim swam|drink drank|take took|give gave|come came|make made|find found|think thought|buy bought|bring brought
    speak spoke|break broke|drive drove|fly flew|grow grew|know knew|throw threw|begin began|sit sat|stand stood
    open opened|close closed|help helped|live lived|call called|move moved|teach taught|catch caught|fall fell|win won""",
    "singular_plural": """cat cats|dog dogs|car cars|book books|tree trees|house houses|apple apples|bird birds|chair chairs|table tables
    box boxes|bus buses|church churches|glass glasses|dish dishes|city cities|baby babies|story stories|party parties|lady ladies
    man men|woman women|child children|foot feet|tooth teeth|mouse mice|goose geese|knife knives|leaf leaves|wolf wolves
    girl girls|boy boys|river rivers|horse horses|flower flowers|window windows|door doors|hand hands|friend friends|king kings""",
}


def main() -> None:
    rows = []
    for task, text in TASKS.items():
        pairs = [p.split() for p in text.replace("\n", "|").split("|") if p.strip()]
        assert all(len(p) == 2 for p in pairs), task
        rows += [{"task": task, "input": a, "output": b} for a, b in pairs]
    out = Path(__file__).with_name("data.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(len(rows), "pairs")


if __name__ == "__main__":
    main()
