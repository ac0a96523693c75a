"""Generate ``core/data/psych_tasks.jsonl``: the built-in psychological-reasoning task set.

    python scripts/make_psych_tasks.py            # writes core/data/psych_tasks.jsonl, prints checks
    python scripts/make_psych_tasks.py --check    # only prints the checks

Every item comes from a hand-written story template (``TEMPLATES`` below) filled with one of
its hand-written variants (settings, objects, events) and names drawn from a pool. Items are
4-way multiple choice with exactly one correct answer. The split is by template: a template's
items are all ``train`` or all ``test``, so no test story shares a template with a train story.
Correct-answer positions are balanced per kind and split (each position once every four items).

The output is deterministic (seeded); re-running rewrites the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20261201
OUT = Path(__file__).resolve().parents[1] / "core" / "data" / "psych_tasks.jsonl"
TEST_PER_KIND = 4  # templates per kind held out as the test split

FEMALE = """Olivia Maya Sofia Amara Chloe Hannah Priya Lucia Grace Nadia Emma Zoe Leila Ruth Ines Mei Fatima
Anna Julia Kate Rosa Aisha Clara Yuki Elena Ava Nora Tara Lena Ivy Greta Sara Mira Alice Beatriz""".split()
MALE = """Liam Noah Omar Ravi Lucas Daniel Mateo Sam Ben Jonas Kenji Tom Leo Hugo Felix Ahmed Diego Ethan
Marcus Pavel Arjun Theo Oscar Max Kofi Luca Jack Henry Adam Ivan Tariq Simon Paul Emil Victor""".split()


@dataclass(frozen=True)
class Person:
    name: str
    female: bool

    def fields(self, key: str) -> dict[str, str]:
        he, him, his = ("she", "her", "her") if self.female else ("he", "him", "his")
        return {
            key: self.name,
            f"{key}_he": he,
            f"{key}_him": him,
            f"{key}_his": his,
            f"{key}_He": he.capitalize(),
            f"{key}_His": his.capitalize(),
            f"{key}_self": "herself" if self.female else "himself",
        }


@dataclass
class Template:
    """A story template: ``story`` and the question(s) use ``{A}``, ``{A_he}``, ... and variant fields.

    ``questions``: one or more ``(question, answer, [3 distractors])``; variant ``i`` uses
    question ``i % len(questions)``. A variant may override ``answer``/``distractors`` through
    its fields ``_answer``/``_distractors`` (used for true-belief controls).
    """

    id: str
    kind: str
    story: str
    questions: list[tuple[str, str, list[str]]]
    variants: list[dict[str, object]]
    genders: dict[str, str] = field(default_factory=dict)  # e.g. {"B": "f"}


def V(*rows: tuple, keys: str) -> list[dict[str, object]]:
    names = keys.split()
    out = []
    for r in rows:
        if len(r) != len(names):
            raise ValueError(f"variant {r} has {len(r)} fields, expected {names}")
        out.append(dict(zip(names, r)))
    return out


T: list[Template] = []

# =============================================================================================
# emotion_inference: a situation; how does X feel (one clearly best emotion)
# =============================================================================================
T.append(Template(
    "emo-found", "emotion_inference",
    "{A} had been searching for {item} for three days, checking {p1} and {p2} again and again. "
    "This morning {A_he} finally spotted it {found}.",
    [("How does {A} most likely feel right now?", "relieved", ["disappointed", "guilty", "jealous"])],
    V(("the passport {A_he} needed for next week's flight", "every drawer", "all of {A_his} coat pockets",
       "tucked inside an old cookbook"),
      ("the ring {A_his} grandmother had left {A_him}", "the bathroom", "the car", "caught in the fold of a towel"),
      ("the USB stick holding {A_his} thesis", "{A_his} backpack", "the library's lost-and-found box",
       "wedged behind the radiator"),
      ("the keys to the shop {A_he} manages", "the staff room", "the front counter", "hanging in the lock of the back door"),
      ("the signed contract {A_his} boss had asked for", "the filing cabinet", "{A_his} desk", "lying in the printer tray"),
      ("the hearing aid {A_he} cannot work without", "the sofa", "the bedside table", "inside a slipper under the bed"),
      keys="item p1 p2 found")))

T.append(Template(
    "emo-laughed", "emotion_inference",
    "During {event}, {A} {blunder}. Several people burst out laughing and turned to look at {A_him}.",
    [("How does {A} most likely feel?", "embarrassed", ["proud", "grateful", "relieved"])],
    V(("a meeting with the whole department", "called {A_his} new boss by the wrong name twice"),
      ("the school assembly", "walked onto the stage with {A_his} sweater on inside out"),
      ("dinner with {A_his} partner's parents", "knocked a full glass of red wine over the white tablecloth"),
      ("a team video call", "forgot the microphone was on and was heard singing loudly in the shower"),
      ("{A_his} first class at a new gym", "slipped off the treadmill in front of the trainers"),
      ("a friend's wedding", "gave a toast using the name of the groom's ex-girlfriend instead of the bride's"),
      keys="event blunder")))

T.append(Template(
    "emo-cancelled", "emotion_inference",
    "{A} had been looking forward to {plan} for weeks. An hour before it was due to start, {B} {cancel}.",
    [("How does {A} most likely feel?", "disappointed", ["relieved", "proud", "amused"])],
    V(("a concert with {B}", "texted to say the band had cancelled the show"),
      ("the camping trip {A_he} had planned with {B}", "called to say the campsite was flooded and the trip was off"),
      ("{A_his} birthday dinner with {B} at a new restaurant", "phoned to say {B_he} had to work late and could not come"),
      ("a day at the beach with {B}", "wrote that {B_his} car had broken down and the trip would have to wait"),
      ("watching the cup final at the stadium with {B}", "messaged that the tickets had turned out to be fake"),
      ("the pottery class {B} had promised to take with {A_him}", "said {B_he} no longer felt like going"),
      keys="plan cancel")))

T.append(Template(
    "emo-credit", "emotion_inference",
    "{A} spent {time} {work}. At the {meeting}, {B} presented the work as {B_his} own, and {A} was not mentioned once.",
    [("How does {A} most likely feel about {B}?", "angry", ["grateful", "admiring", "sympathetic"])],
    V(("two weeks", "building the sales forecast", "monthly review"),
      ("the whole weekend", "designing the new logo", "client meeting on Monday"),
      ("a month", "collecting water samples for the river survey", "science fair"),
      ("three evenings", "writing the grant proposal", "board meeting"),
      ("the whole term", "writing the code for the group's app", "final class presentation"),
      ("several nights", "redesigning the bakery's menu", "owners' meeting"),
      keys="time work meeting")))

T.append(Template(
    "emo-rival", "emotion_inference",
    "{A} and {B} both {compete}. {A} had wanted it badly for years. When the result came out, {B} had {won}, "
    "and everyone crowded around {B_him} to congratulate {B_him}.",
    [("How does {A} most likely feel toward {B}?", "envious", ["grateful", "guilty", "relieved"])],
    V(("auditioned for the lead role in the spring play", "got the part"),
      ("applied for the one scholarship to study in Paris", "received the scholarship"),
      ("entered the town's baking contest", "won first prize"),
      ("tried out to be captain of the swim team", "been named captain"),
      ("applied for the promotion to head nurse", "been given the promotion"),
      ("submitted paintings to the gallery's yearly show", "had {B_his} painting chosen for the front window"),
      keys="compete won")))

T.append(Template(
    "emo-night", "emotion_inference",
    "{A} was home alone late at night {setting}. {A_He} was sure every door was locked. Suddenly {A_he} heard {noise}.",
    [("How does {A} most likely feel?", "frightened", ["bored", "proud", "grateful"])],
    V(("in a farmhouse far from the village", "slow footsteps on the porch"),
      ("during a thunderstorm", "the back door creak open"),
      ("in a flat {A_he} had moved into the day before", "someone trying the handle of the front door"),
      ("in a cabin by the lake", "glass breaking downstairs"),
      ("after reading about burglaries in the area", "a heavy thud from the garage"),
      ("while {A_his} family was away", "whispering voices right under the window"),
      keys="setting noise")))

T.append(Template(
    "emo-borrowed", "emotion_inference",
    "{B} lent {A} {item}{why}. While {using}, {A} {damage}. {B} has not found out yet.",
    [("How does {A} most likely feel?", "guilty", ["proud", "jealous", "amused"])],
    V(("{B_his} camera", " for a weekend trip", "climbing a rocky path", "dropped it and cracked the lens"),
      ("a novel", " that had belonged to {B_his} late father", "reading in the bath", "let it slip into the water"),
      ("{B_his} bicycle", "", "riding to work in the rain", "scraped it along a wall and bent the front wheel"),
      ("a silk scarf", " for a wedding", "eating at the reception", "spilled tomato sauce all over it"),
      ("{B_his} tent", " for a festival", "packing up in a hurry", "tore a long hole in the side"),
      ("a set of {B_his} good kitchen knives", "", "cooking for a party", "chipped two of the blades"),
      keys="item why using damage")))

T.append(Template(
    "emo-kindness", "emotion_inference",
    "{A} had {hard}. When {A_he} got home, {A_he} found that {B}, {who}, had {help}.",
    [("How does {A} most likely feel toward {B}?", "thankful", ["resentful", "jealous", "bored"])],
    V(("spent the week in hospital with pneumonia", "a neighbour {A_he} barely knew", "left a pot of soup and some groceries at the door"),
      ("worked two double shifts in a row", "{A_his} flatmate", "cleaned the whole flat and cooked dinner"),
      ("just come back from hospital with a broken leg", "a colleague", "arranged for people to walk {A_his} dog every day"),
      ("lost {A_his} job that morning", "an old school friend", "sent a kind card and offered to help with {A_his} CV"),
      ("spent all day moving boxes into {A_his} new house", "the teenager next door", "carried the rest of the furniture upstairs"),
      ("spent the night at the airport after a cancelled flight", "{A_his} brother",
       "picked up {A_his} children from school and fed them"),
      keys="hard who help")))

T.append(Template(
    "emo-waiting", "emotion_inference",
    "{A} {did} {when}. {wait}, and {A} keeps checking {A_his} phone and pacing around the room.",
    [("How does {A} most likely feel while waiting?", "anxious", ["proud", "ashamed", "disgusted"])],
    V(("had a biopsy", "last week", "The results are due this afternoon"),
      ("sat the final exam of medical school", "a month ago", "The grades will be emailed at noon"),
      ("interviewed for {A_his} dream job", "on Monday", "The company promised an answer before the end of today"),
      ("applied to adopt a child", "in the spring", "The agency said it would call with its decision today"),
      ("took {A_his} father to hospital for heart surgery", "this morning", "The surgeon has not come out yet"),
      ("sent {A_his} first novel to a publisher", "in January", "The editor promised a decision by tonight"),
      keys="did when wait")))

T.append(Template(
    "emo-achieve", "emotion_inference",
    "For {time}, {A} {practice}. Today {A_he} {success}, and {B}, who had watched {A_him} from the start, "
    "said it was the best {noun} {B_he} had ever seen from a beginner.",
    [("How does {A} most likely feel?", "proud", ["ashamed", "jealous", "guilty"])],
    V(("six months", "trained every morning before work", "finished {A_his} first marathon", "run"),
      ("a year", "practised the piano for an hour every night", "played the whole sonata at the recital without a mistake",
       "performance"),
      ("three months", "studied Spanish on the bus to school", "gave a ten-minute talk in Spanish to the class", "talk"),
      ("two summers", "built a wooden boat in the garage", "launched the boat and sailed it across the lake", "boat"),
      ("many weeks", "practised drawing faces", "sold {A_his} first portrait at the craft fair", "portrait"),
      ("a whole season", "worked on {A_his} tennis serve", "won {A_his} first tournament", "serve"),
      keys="time practice success noun")))

T.append(Template(
    "emo-surprise", "emotion_inference",
    "{A} was sure {belief}. But when {A_he} {arrive}, {reveal}.",
    [("How does {A} most likely feel at that moment?", "astonished", ["bored", "guilty", "jealous"])],
    V(("everyone had forgotten {A_his} birthday", "opened the door to the dark living room",
       "the lights came on and twenty friends shouted {A_his} name"),
      ("{A_his} sister was still living abroad", "answered a knock at the door",
       "{A_his} sister was standing on the step with a suitcase"),
      ("the old lottery ticket in {A_his} wallet was worthless", "checked the numbers online",
       "the ticket turned out to have won a large prize"),
      ("{A_his} quiet neighbour was a retired accountant", "switched on the late-night talk show",
       "that same neighbour was being interviewed as a famous jazz singer"),
      ("the parcel on the step was the printer ink {A_he} had ordered", "opened it",
       "inside was a letter from a childhood friend {A_he} had not heard from in twenty years"),
      ("the exam was next Friday", "walked into class",
       "the teacher was already handing out the exam papers"),
      keys="belief arrive reveal")))

T.append(Template(
    "emo-farewell", "emotion_inference",
    "{B} has been {A}'s closest friend since {since}. Today {B} {leave}, and the two of them {final}.",
    [("How does {A} most likely feel?", "sad", ["relieved", "amused", "annoyed"])],
    V(("primary school", "is moving to Australia with {B_his} family for good", "hugged goodbye at the airport gate"),
      ("they started at the factory together", "is moving to the far side of the country", "shared one last lunch in the canteen"),
      ("their first week at university", "is leaving to work on another continent", "packed the last of {B_his} books into boxes"),
      ("they were children on the same street", "is moving to a care home in a distant town", "sat on the porch together one final time"),
      ("they joined the choir together", "is emigrating for a job overseas",
       "sang their last song side by side"),
      ("kindergarten", "is leaving for two years of service overseas", "waved to each other at the train station"),
      keys="since leave final")))

# =============================================================================================
# false_belief: first-order false belief (plus a few true-belief controls)
# =============================================================================================
T.append(Template(
    "fb-moved", "false_belief",
    "{A} put {obj} {L1} and then {away}. While {A_he} was gone, {B} found {obj}, thought about putting {it} {L3}, and in the end put {it} {L2}. {seen}",
    [("When {A} comes back, where will {A_he} look for {obj} first?", "{L1}", ["{L2}", "{L3}", "{L4}"])],
    V(("{A_his} chocolate bar", "in the blue cupboard", "in the green drawer", "in the fridge", "in the bread bin",
       "went out to play", "{A} did not see this.", None, "it"),
      ("the car keys", "in the bowl by the door", "in {B_his} coat pocket", "in the kitchen drawer", "on the hall shelf",
       "went upstairs to shower", "", None, "them"),
      ("{A_his} library book", "in {A_his} school bag", "on the top bookshelf", "under the bed", "in the toy box",
       "went to football practice", "", None, "it"),
      ("the scissors", "in the sewing basket", "in the desk drawer", "in the toolbox", "in the cupboard under the sink",
       "went to answer the phone", "{A} watched the whole thing from the doorway.", "{L2}", "them"),
      ("{A_his} phone charger", "on the bedside table", "on the kitchen counter", "in the backpack", "behind the sofa",
       "went out for a run", "", None, "it"),
      ("the birthday card", "under the sofa cushion", "inside the piano bench", "in the post box", "behind the clock",
       "went to buy flowers", "", None, "it"),
      keys="obj L1 L2 L3 L4 away seen _answer it")))

T.append(Template(
    "fb-contents", "false_belief",
    "{A} found an old {box} on the shelf. When {A_he} opened it, {A_he} saw that it held {real}, not {label}. "
    "Next to it on the shelf was a bag of {o1}. {A_He} closed the {box} and put it back. Then {B}, who had never looked inside, came into the room.",
    [("Before opening it, what will {B} think is inside the {box}?", "{label}", ["{real}", "{o1}", "{o2}"])],
    V(("crayon box", "birthday candles", "crayons", "chalk", "pencils"),
      ("biscuit tin", "sewing needles and thread", "biscuits", "old coins", "photographs"),
      ("egg carton", "golf balls", "eggs", "tomatoes", "candle stubs"),
      ("tea caddy", "spare keys", "tea", "seeds", "batteries"),
      ("cereal box", "dog treats", "cereal", "rice", "plastic toys"),
      ("jewellery box", "fishing hooks", "jewellery", "buttons", "stamps"),
      keys="box real label o1 o2")))

T.append(Template(
    "fb-room", "false_belief",
    "The {event} was planned for {R1}, next to {R3}. {A} left to {errand}. While {A_he} was out, {C} announced that the {event} "
    "had been moved to {R2} because {why}. {told}",
    [("Where will {A} go for the {event}?", "to {R1}", ["to {R2}", "to {R3}", "to {R4}"])],
    V(("team meeting", "room 4", "pick up a parcel from reception", "room 9", "the heating was broken", "room 2",
       "the canteen", "Nobody told {A}.", None),
      ("piano lesson", "the small hall", "buy sheet music", "the music library", "the hall was being painted",
       "the chapel", "the staff room", "", None),
      ("book club", "the café on Main Street", "collect {A_his} daughter from school", "the public library",
       "the café was closed for a private party", "the park", "the town hall", "", None),
      ("chess match", "the gym", "fetch {A_his} glasses", "the art room", "a basketball game needed the gym",
       "the canteen", "the science lab", "{C} phoned {A} straight away and told {A_him}.", "to {R2}"),
      ("choir practice", "the church", "post a letter", "the community centre", "the church roof was leaking",
       "the school hall", "the pub", "", None),
      ("yoga class", "studio A", "move {A_his} car", "the rooftop terrace", "the weather was lovely",
       "studio B", "the basement", "", None),
      keys="event R1 errand R2 why R3 R4 told _answer")))

T.append(Template(
    "fb-van", "false_belief",
    "{A} and {B} were at {P1}, not far from {P3}, when the {seller} said it would stay there all afternoon. {A} went home to fetch "
    "some money. After {A_he} left, the {seller} told {B} that it was moving to {P2}, and it drove off there.",
    [("When {A} comes back with the money, where will {A_he} go to find the {seller}?", "to {P1}",
      ["to {P2}", "to {P3}", "to {P4}"])],
    V(("the park", "ice-cream van", "the beach", "the church", "the school"),
      ("the market square", "coffee truck", "the train station", "the harbour", "the stadium"),
      ("the playground", "popcorn van", "the swimming pool", "the museum",
       "the library"),
      ("the river bank", "fish-and-chip van", "the football ground", "the bus depot", "the cinema"),
      ("the town hall", "taco truck", "the university", "the hospital", "the zoo"),
      ("the campsite", "pizza van", "the lake", "the village green", "the petrol station"),
      keys="P1 seller P2 P3 P4")))

T.append(Template(
    "fb-time", "false_belief",
    "{A} read on the timetable that the {thing} would leave at {t1}; there was also a departure at {t3}, which was too expensive. Later that morning, while {A} was {busy}, "
    "the company changed the departure to {t2} and {notice}. {A} did not check again.",
    [("At what time will {A} expect the {thing} to leave?", "at {t1}", ["at {t2}", "at {t3}", "at {t4}"])],
    V(("coach to the airport", "9:15", "at the dentist", "10:40", "put a note on its website", "8:30", "11:00"),
      ("ferry to the island", "2 p.m.", "swimming in the bay", "4 p.m.", "posted a sign at the pier", "noon", "3 p.m."),
      ("last train to the city", "11:20 p.m.", "at a concert", "10:50 p.m.", "announced it at the station",
       "midnight", "11:45 p.m."),
      ("school trip bus", "7:45", "asleep", "8:15", "emailed the other parents", "7:00", "9:00"),
      ("tour boat", "half past ten", "in a museum with no signal", "eleven o'clock", "told the hotel desk",
       "ten o'clock", "quarter past eleven"),
      ("night bus", "1 a.m.", "at a wedding", "12:30 a.m.", "updated its app", "2 a.m.", "midnight"),
      keys="thing t1 busy t2 notice t3 t4")))

T.append(Template(
    "fb-jar", "false_belief",
    "{B} emptied the {jar} and, as a joke, filled it with {new}, which looks just the same. The {jar} stands next to the {o1}. {B} told no one. "
    "The next morning {A} took a big spoonful from the {jar} for {A_his} {use}.",
    [("What does {A} think {A_he} is putting in {A_his} {use}?", "{old}", ["{new}", "{o1}", "{o2}"])],
    V(("sugar bowl", "salt", "coffee", "sugar", "flour", "milk powder"),
      ("honey jar", "cooking oil", "porridge", "honey", "jam", "maple syrup"),
      ("flour tin", "baking soda", "pancake batter", "flour", "oats", "cocoa"),
      ("salt cellar", "sugar", "soup", "salt", "pepper", "chilli flakes"),
      ("cinnamon jar", "chilli powder", "apple pie", "cinnamon", "nutmeg", "ginger"),
      ("coffee tin", "cocoa", "morning cup", "coffee", "tea leaves", "malt powder"),
      keys="jar new use old o1 o2")))

T.append(Template(
    "fb-looks", "false_belief",
    "{A} bought {thing} that looks exactly like {looks}. {A_He} put it on the {spot}. {B} had never seen it before "
    "and noticed it from across the room.",
    [("What will {B} think the object is at first?", "{looks}", ["{thing}", "{o1}", "{o2}"])],
    V(("a candle", "a red apple", "kitchen table", "a tomato", "a pin cushion"),
      ("an eraser", "a strawberry", "desk", "a cherry", "a red button"),
      ("a sponge", "a grey rock", "bathroom shelf", "a bar of soap", "a seashell"),
      ("a money box", "a real pineapple", "windowsill", "a potted cactus", "a lamp"),
      ("a soap", "a slice of lemon", "sink", "a slice of cheese", "a yellow flower"),
      ("a cushion", "a sleeping cat", "armchair", "a folded blanket", "a toy dog"),
      keys="thing looks spot o1 o2")))

T.append(Template(
    "fb-pet", "false_belief",
    "When {A} left for {place} in the morning, {pet} was {W1}. During the day {B} {moved}. {A} has not been home since.",
    [("Where does {A} think {pet} is right now?", "{W1}", ["{W2}", "{W3}", "{W4}"])],
    V(("school", "the dog", "asleep in the garden", "took the dog to the vet for its injection", "at the vet",
       "in the car", "at the groomer's"),
      ("work", "the cat", "curled up on the sofa", "drove the cat to {B_his} own flat to keep {B_him} company",
       "at {B}'s flat", "in the cellar", "at the neighbour's"),
      ("the office", "the tortoise", "in its box in the kitchen", "carried the tortoise out onto the lawn",
       "on the lawn", "under the stairs", "at the pet shop"),
      ("university", "the rabbit", "in its hutch in the yard", "brought the rabbit into the bathroom because of the storm",
       "in the bathroom", "in the garage", "in the attic"),
      ("a trip to town", "the parrot", "in its cage by the window", "moved the parrot's cage to the bedroom",
       "in the bedroom", "on the balcony", "in the hallway"),
      ("the gym", "the puppy", "in the laundry room", "took the puppy for a long walk in the woods",
       "in the woods", "in the basement", "at the park"),
      keys="place pet W1 moved W2 W3 W4")))

T.append(Template(
    "fb-file", "false_belief",
    "{A} saved {A_his} {doc} in the folder called '{F1}', just below the folder '{F3}', and went home. In the evening, {B} tidied the shared drive "
    "and moved the file into the folder '{F2}'. {seen}",
    [("The next morning, in which folder will {A} look for the {doc} first?", "in '{F1}'",
      ["in '{F2}'", "in '{F3}'", "in '{F4}'"])],
    V(("budget spreadsheet", "Finance", "Archive 2024", "Drafts", "Downloads", "{B} did not mention it.", None),
      ("holiday photos", "Pictures", "Family", "Desktop", "Old stuff", "", None),
      ("lecture notes", "Week 5", "Biology", "Exams", "Misc", "", None),
      ("cover letter", "Jobs", "Applications", "Letters", "Temp", "{B} sent {A} a message about it, and {A} read it.",
       "in '{F2}'"),
      ("song recording", "Music", "Band", "Demos", "Voice memos", "", None),
      ("project plan", "Current", "Q3 projects", "Meetings", "Templates", "", None),
      keys="doc F1 F2 F3 F4 seen _answer")))

T.append(Template(
    "fb-meetfriend", "false_belief",
    "{B} told {A}, \"I'll be studying at {P1} all afternoon, not at {P3}, so come and find me there.\" Later {B} changed {B_his} mind "
    "and went to {P2} instead. {B_His} phone had run out of battery, so {B_he} could not tell {A}.",
    [("Where will {A} go to find {B}?", "to {P1}", ["to {P2}", "to {P3}", "to {P4}"])],
    V(("the library", "the café on the corner", "the sports hall", "the gym"),
      ("the reading room", "the park bench by the pond", "the computer lab", "the bus stop"),
      ("the coffee shop", "the student union", "the train station", "the bookshop"),
      ("the town library", "{B_his} aunt's house", "the bakery", "the swimming pool"),
      ("the study hall", "the garden behind the school", "the canteen", "the cinema"),
      ("the museum café", "the art gallery", "the hotel lobby", "the market"),
      keys="P1 P2 P3 P4")))

T.append(Template(
    "fb-price", "false_belief",
    "Last week {A} saw {item} in a shop window with a price tag of {p1}; a smaller one next to it cost {p3}. {A_He} saved up exactly that amount. "
    "Yesterday, while {A} was {busy}, the shop changed the price to {p2}.",
    [("How much does {A} believe the {short} costs?", "{p1}", ["{p2}", "{p3}", "{p4}"])],
    V(("a red bicycle", "120 pounds", "away visiting {A_his} grandmother", "150 pounds", "bicycle", "100 pounds",
       "200 pounds"),
      ("a pair of hiking boots", "80 euros", "at work", "65 euros", "boots", "50 euros", "95 euros"),
      ("a guitar", "300 dollars", "on a school trip", "350 dollars", "guitar", "250 dollars", "400 dollars"),
      ("a board game", "40 dollars", "ill in bed", "25 dollars", "game", "30 dollars", "55 dollars"),
      ("a winter coat", "90 pounds", "at a football match", "110 pounds", "coat", "70 pounds", "130 pounds"),
      ("a second-hand camera", "200 euros", "on a hike", "240 euros", "camera", "180 euros", "260 euros"),
      keys="item p1 busy p2 short p3 p4")))

T.append(Template(
    "fb-weather", "false_belief",
    "Before {A} went into {place} in the morning, the sky was {w1}. {A} spent the whole day {inside}, "
    "where there are no windows. Around noon the weather changed and it became {w2}.",
    [("Late in the afternoon, what does {A} think the weather is like outside?", "{w1}", ["{w2}", "{w3}", "{w4}"])],
    V(("the hospital", "clear and sunny", "in the operating theatre", "stormy", "foggy", "snowy"),
      ("the mine", "bright and warm", "underground", "pouring with rain", "freezing and icy", "misty"),
      ("the recording studio", "cloudy and grey", "behind soundproof walls", "hot and sunny", "snowy", "windy"),
      ("the cinema", "raining heavily", "watching a film festival", "sunny", "foggy", "hailing"),
      ("the casino", "snowing", "at the card tables", "mild and sunny", "stormy", "drizzly"),
      ("the laboratory", "calm and clear", "in the basement lab", "very windy", "sleeting", "hazy"),
      keys="place w1 inside w2 w3 w4")))

# =============================================================================================
# second_order_belief: what X thinks Y believes
# =============================================================================================
T.append(Template(
    "sob-window", "second_order_belief",
    "{A} put {obj} {L1} instead of {L3}, and went outside. While {A} was out, {B} took {obj} and put {it} {L2}. Through the window, {A} secretly "
    "watched {B} do it. {noticed}",
    [("Where does {B} think {A} will look for {obj}?", "{L1}", ["{L2}", "{L3}", "{L4}"])],
    V(("{A_his} sweets", "in the red tin", "in the cupboard above the sink", "in the freezer", "under the stairs",
       "{B} did not notice {A} at the window.", None, "them"),
      ("the TV remote", "on the armchair", "in the magazine rack", "under the rug", "on top of the fridge",
       "{B} had no idea {A} was watching.", None, "it"),
      ("{A_his} diary", "under {A_his} pillow", "in the wardrobe", "in the laundry basket", "in the bathroom cabinet",
       "{B} never saw {A} at the window.", None, "it"),
      ("the spare key", "under the doormat", "inside the flowerpot", "in the letterbox", "on the window ledge",
       "{B} looked up, saw {A} at the window, and waved.", "{L2}", "it"),
      ("the football", "in the shed", "behind the compost bin", "in the car boot", "in the garage",
       "{B} did not realise {A} could see {B_him}.", None, "it"),
      ("{A_his} wallet", "on the desk", "in the top drawer", "in the bread bin", "in the coat rack",
       "{B} did not notice {A} at the window.", None, "it"),
      keys="obj L1 L2 L3 L4 noticed _answer it")))

T.append(Template(
    "sob-van", "second_order_belief",
    "{A} and {B} were at {P1}, across the road from {P3}. The {seller} said it would be there all day. {B} went home for lunch. Then the "
    "{seller} told {A} it was moving to {P2}. On the way, it passed {B}'s house and told {B} about the move too. "
    "{A} does not know that {B} was told.",
    [("Where does {A} think {B} will go to find the {seller}?", "to {P1}", ["to {P2}", "to {P3}", "to {P4}"])],
    V(("the park", "ice-cream van", "the church", "the beach", "the school"),
      ("the harbour", "coffee truck", "the market", "the station", "the stadium"),
      ("the fairground", "hot-dog stand", "the car park", "the lake", "the museum"),
      ("the square", "crêpe van", "the university", "the zoo", "the river bank"),
      ("the football pitch", "lemonade cart", "the playground", "the library", "the bus station"),
      ("the village green", "noodle truck", "the sports hall", "the post office", "the campsite"),
      keys="P1 seller P2 P3 P4")))

T.append(Template(
    "sob-gift", "second_order_belief",
    "{A} bought {gift} for {B}'s birthday and hid it {L}. While {A} was at work, {B} found it, looked at it, and "
    "put it back exactly as it was. {A} has no idea this happened.",
    [("What does {A} think {B} knows about the gift?", "that {B} knows nothing about it",
      ["that {B} found it {L}", "that {B} has already opened it", "that {B} chose it {B_self}"])],
    V(("a watch", "in the sock drawer"),
      ("concert tickets", "inside a cookbook"),
      ("a silver necklace", "behind the towels in the cupboard"),
      ("a new phone", "in the boot of the car"),
      ("a leather jacket", "on the top shelf of the wardrobe"),
      ("a telescope", "in the garden shed"),
      keys="gift L")))

T.append(Template(
    "sob-meeting", "second_order_belief",
    "The {event} was set for {t1}, because {t3} was already taken. The organiser moved it to {t2} and phoned {A} about the change. Separately, "
    "{B} saw the new time on the notice board. {A} and {B} have not spoken to each other since.",
    [("At what time does {A} think {B} will come to the {event}?", "at {t1}", ["at {t2}", "at {t3}", "at {t4}"])],
    V(("staff meeting", "10 a.m.", "2 p.m.", "noon", "4 p.m."),
      ("rehearsal", "6 p.m.", "7:30 p.m.", "5 p.m.", "8 p.m."),
      ("parents' evening", "5:30 p.m.", "6:30 p.m.", "7 p.m.", "4:30 p.m."),
      ("training session", "9 a.m.", "11 a.m.", "8 a.m.", "1 p.m."),
      ("committee meeting", "3 p.m.", "1 p.m.", "2 p.m.", "5 p.m."),
      ("exam review", "Monday morning", "Tuesday morning", "Monday evening", "Wednesday morning"),
      keys="event t1 t2 t3 t4")))

T.append(Template(
    "sob-doorway", "second_order_belief",
    "{A} moved {obj} from {L1} to {L2} so that {A_his} {rel} {B} would not find {them}. {A} did not notice that {B} "
    "was standing in the doorway and saw everything.",
    [("Where does {A} think {B} will look for {obj}?", "{L1}", ["{L2}", "{L3}", "{L4}"])],
    V(("the cookies", "the cookie jar", "the top shelf", "them", "son", "the fridge", "the pantry"),
      ("the video game", "the living-room cabinet", "the locked wardrobe", "it", "daughter", "the attic", "the car"),
      ("the chocolate eggs", "the kitchen drawer", "the bread box", "them", "little brother", "the oven", "the garage"),
      ("the tablet", "the sofa", "the high cupboard", "it", "nephew", "the bookcase", "the laundry room"),
      ("the birthday presents", "the hall closet", "the basement", "them", "sister", "the attic", "the shed"),
      ("the sweets", "the glass bowl", "the medicine cabinet", "them", "grandson", "the biscuit tin", "the sideboard"),
      keys="obj L1 L2 them rel L3 L4")))

T.append(Template(
    "sob-platform", "second_order_belief",
    "{A} and {B} were meeting for the {train}, which was due at platform {p1}, opposite platform {p3}. The station changed it to platform "
    "{p2}. {A} heard the announcement in the café, and {B} read it on the app in {B_his} car. Neither of them "
    "knows that the other found out.",
    [("Which platform does {A} think {B} will wait at?", "platform {p1}", ["platform {p2}", "platform {p3}", "platform {p4}"])],
    V(("8:05 to Leeds", "3", "7", "1", "5"),
      ("express to the airport", "2", "6", "4", "9"),
      ("night train to Vienna", "11", "4", "8", "2"),
      ("slow train to the coast", "5", "1", "3", "10"),
      ("10:15 to Glasgow", "9", "12", "6", "2"),
      ("first train to Milan", "4", "8", "2", "1"),
      keys="train p1 p2 p3 p4")))

T.append(Template(
    "sob-hide", "second_order_belief",
    "{A} and {B} were playing hide-and-seek. {B} hid {spot}. While counting, {A} peeked and saw {B} in {mirror}. "
    "{noticed}",
    [("Does {B} think {A} knows where {B} is hiding?", "No, {B} thinks {A} has no idea",
      ["Yes, {B} thinks {A} saw the hiding place", "{B} thinks {A} is hiding too", "{B} thinks {A} has given up and gone home"])],
    V(("behind the long curtains", "the hall mirror", "{B} did not see {A} peek.", None),
      ("inside the wardrobe", "the reflection of the dark window", "{B} never noticed the peek.", None),
      ("under the bed", "the big mirror on the dresser", "{B} did not see {A} peek.", None),
      ("behind the shed", "the shiny car door", "{B} saw {A} peeking and groaned.", "Yes, {B} thinks {A} saw the hiding place"),
      ("in the empty bathtub", "the bathroom mirror", "{B} did not catch {A} peeking.", None),
      ("behind the sofa", "the glass of the TV screen", "{B} had no idea {A} had peeked.", None),
      keys="spot mirror noticed _answer")))

T.append(Template(
    "sob-letter", "second_order_belief",
    "A letter from {sender} arrived for {A}. {B} opened it by mistake, read it, and carefully sealed it again. "
    "{B} believes {A} will never notice. But {A} saw the torn flap and realised that someone had read the letter.",
    [("According to {B}, what does {A} believe about the letter?", "that nobody else has read it",
      ["that {B} read it first", "that it was lost in the post for a month", "that it was meant for {B}"])],
    V(("the university",), ("the bank",), ("the hospital",), ("an old friend abroad",), ("the tax office",),
      ("the landlord",), keys="sender")))

T.append(Template(
    "sob-dog", "second_order_belief",
    "The {pet} was {W1}. While {A} was upstairs, {B} {moved}. From the upstairs window, {A} saw the {pet} {W2}. "
    "{B} does not know that {A} looked out of the window.",
    [("Where does {B} think {A} believes the {pet} is?", "{W1}", ["{W2}", "{W3}", "{W4}"])],
    V(("dog", "in the kitchen", "let the dog out", "in the garden", "at the vet", "in the car"),
      ("cat", "on the sofa", "carried the cat outside", "on the garden wall", "in the basement", "in the laundry basket"),
      ("goat", "in the barn", "led the goat out", "in the orchard", "in the village", "on the road"),
      ("horse", "in the stable", "turned the horse out", "in the top field", "at the farrier's", "in the trailer"),
      ("puppy", "in its crate", "took the puppy out", "on the lawn", "at the neighbour's", "in the bath"),
      ("hens", "in the coop", "let the hens out", "by the pond", "in the shed", "in the lane"),
      keys="pet W1 moved W2 W3 W4")))

T.append(Template(
    "sob-prank", "second_order_belief",
    "The {jar} stood next to the {o1}. As a prank, {B} filled the {jar} with {new}. Through the kitchen window, {A} saw {B} do it. {noticed}",
    [("What does {B} think {A} believes is in the {jar}?", "{old}", ["{new}", "{o1}", "{o2}"])],
    V(("sugar jar", "salt", "{B} did not see {A}.", "sugar", "rice", "flour", None),
      ("shampoo bottle", "mayonnaise", "{B} has no idea {A} was watching.", "shampoo", "conditioner", "hand soap", None),
      ("ketchup bottle", "chilli sauce", "{B} did not notice {A}.", "ketchup", "mustard", "vinegar", None),
      ("biscuit tin", "buttons", "{B} spotted {A} at the window and laughed.", "biscuits", "cake", "crackers", "{new}"),
      ("milk carton", "orange juice", "{B} did not notice {A} at the window.", "milk", "cream", "water", None),
      ("pepper pot", "cinnamon", "{B} did not see {A} there.", "pepper", "salt", "paprika", None),
      keys="jar new noticed old o1 o2 _answer")))

T.append(Template(
    "sob-test", "second_order_belief",
    "The {subject} test was set for {d1}. While {A} was off sick, the teacher moved it to {d2} and sent {A} an email "
    "about it. {B}, who sits next to {A}, does not know about the email.",
    [("On which day does {B} think {A} expects the test?", "on {d1}", ["on {d2}", "on {d3}", "on {d4}"])],
    V(("maths", "Monday", "Friday", "Wednesday", "Thursday"),
      ("history", "Tuesday", "Thursday", "Monday", "Friday"),
      ("chemistry", "Wednesday", "Monday", "Tuesday", "Friday"),
      ("French", "Thursday", "Tuesday", "Wednesday", "Monday"),
      ("biology", "Friday", "Wednesday", "Thursday", "Tuesday"),
      ("geography", "Monday", "Thursday", "Tuesday", "Wednesday"),
      keys="subject d1 d2 d3 d4")))

T.append(Template(
    "sob-towed", "second_order_belief",
    "{A} parked {A_his} car on {S1}, near {S3}. In the morning, the council towed it to {S2} for street cleaning. {B}, "
    "a neighbour, watched it being towed. {A} got a phone call from the council about it, but {B} does not know "
    "that {A} was told.",
    [("Where does {B} think {A} will go to get the car?", "to {S1}", ["to {S2}", "to {S3}", "to {S4}"])],
    V(("Elm Street", "the depot on Mill Road", "the supermarket car park", "the police station"),
      ("Harbour Lane", "the council yard", "the garage on Bridge Street", "the train station car park"),
      ("Oak Avenue", "the pound behind the stadium", "the hospital car park", "the mechanic's"),
      ("Church Road", "the storage lot by the river", "the school car park", "the petrol station"),
      ("Station Road", "the compound on King Street", "the shopping centre", "the car wash"),
      ("Park Lane", "the yard next to the bus depot", "the multi-storey car park", "the town square"),
      keys="S1 S2 S3 S4")))

# =============================================================================================
# intention: why did X do it
# =============================================================================================
T.append(Template(
    "int-help", "intention",
    "{A} was {doing} when {A_he} saw {B} {struggle}. {A} put down what {A_he} was holding and walked quickly over to {B}.",
    [("Why did {A} walk over to {B}?", "to help {B} {task}",
      ["to ask {B} where {B_he} got the {noun}", "to complain that the {noun} was in the way", "to sell {B} something"])],
    V(("reading on a bench", "trying to lift a heavy suitcase onto the train", "get it up", "suitcase"),
      ("watering the garden", "pushing a stalled car off the road", "move it", "car"),
      ("waiting for the lift", "dropping a stack of files all over the floor", "gather them up", "files"),
      ("drinking coffee outside a café", "dragging a huge box up the steps", "carry it", "box"),
      ("walking the dog", "trying to put up a tent in strong wind", "hold it down", "tent"),
      ("queuing at the post office", "losing grip of three large parcels", "carry them", "parcels"),
      keys="doing struggle task noun")))

T.append(Template(
    "int-hide", "intention",
    "{A} was {making} for {B}'s {occasion} when {A_he} heard {B}'s key in the front door. {A} quickly {hid}.",
    [("Why did {A} hide it?", "to keep it a surprise for {B}",
      ["because {A_he} was ashamed of how it looked", "because it was broken", "to stop the cat from reaching it"])],
    V(("wrapping a new bike", "birthday", "threw a blanket over the bike"),
      ("icing a cake", "anniversary", "pushed the cake into the oven"),
      ("painting a portrait", "fortieth birthday", "turned the canvas to face the wall"),
      ("knitting a scarf", "Christmas present", "stuffed the scarf under a cushion"),
      ("writing a song", "wedding", "shut the laptop and hid the lyrics in a drawer"),
      ("framing old photos", "retirement party", "slid the frames under the bed"),
      keys="making occasion hid")))

T.append(Template(
    "int-whitelie", "intention",
    "{B} proudly showed {A} {made} and asked what {A_he} thought. {A} privately found it {bad}, but {A_he} smiled "
    "and said it was lovely.",
    [("Why did {A} say it was lovely?", "to avoid hurting {B}'s feelings",
      ["because {A_he} truly loved it", "so that {B} would give it to {A_him}", "because {A_he} wanted to buy one"])],
    V(("the jumper {B_he} had knitted", "itchy and far too big"),
      ("a painting {B_he} had just finished", "muddy and strange"),
      ("{B_his} new haircut", "much too short"),
      ("the poem {B_he} had written", "dull and far too long"),
      ("the vase {B_he} had made in pottery class", "lopsided and ugly"),
      ("the soup {B_he} had cooked", "bland and too salty"),
      keys="made bad")))

T.append(Template(
    "int-accident", "intention",
    "{A} was {doing} in {B}'s flat when {A_his} {part} brushed against {obj} on the {where}. It fell and broke. "
    "{A} gasped and immediately began to apologise.",
    [("Why did the {short} fall?", "{A} knocked it by accident",
      ["{A} threw it on purpose because {A_he} was angry", "{B} pushed it off", "the wind blew it over"])],
    V(("carrying a tray of drinks", "elbow", "a glass vase", "side table", "vase"),
      ("putting on {A_his} coat", "sleeve", "a picture frame", "shelf", "frame"),
      ("dancing", "hand", "a lamp", "bookcase", "lamp"),
      ("stretching after a nap", "arm", "a china teapot", "windowsill", "teapot"),
      ("looking for {A_his} keys", "bag", "a bowl of fruit", "counter", "bowl"),
      ("playing with the children", "foot", "a potted plant", "low stool", "pot"),
      keys="doing part obj where short")))

T.append(Template(
    "int-blame", "intention",
    "{A} broke {obj} while {game}. When {C} came in and asked what had happened, {A} pointed at {A_his} little "
    "brother and said, \"He did it!\"",
    [("Why did {A} say that {A_his} brother did it?", "to avoid getting into trouble",
      ["because the brother really broke it", "to make the brother feel proud", "because {A_he} forgot what happened"])],
    V(("the kitchen window", "kicking a ball in the garden"),
      ("{C}'s reading glasses", "sitting on the sofa"),
      ("the new lamp", "jumping on the bed"),
      ("the remote control", "throwing it at a cushion"),
      ("a plate from the good set", "juggling in the kitchen"),
      ("the garden gnome", "riding {A_his} scooter"),
      keys="obj game")))

T.append(Template(
    "int-baby", "intention",
    "{A} turned {device} down to almost nothing and tiptoed across the room. {B}'s baby had just fallen asleep {where}.",
    [("Why did {A} turn {device} down?", "so as not to wake the child",
      ["because the song had ended", "so the baby could hear it better", "because it was broken"])],
    V(("the radio", "in the cot by the window"),
      ("the television", "on the sofa"),
      ("the music", "in the pram next to the table"),
      ("the speaker", "in {B}'s arms"),
      ("the game's volume", "in the next room with the door open"),
      ("the kitchen radio", "in the car seat on the floor"),
      keys="device where")))

T.append(Template(
    "int-leave", "intention",
    "During {event}, {A} kept glancing at the clock. At {t1}, {A_he} grabbed {A_his} coat, said a quick goodbye and "
    "hurried out. The last {transport} to {A_his} {home} leaves at {t2}.",
    [("Why did {A} leave in such a hurry?", "so as not to be stranded for the night",
      ["because {A_he} was angry with the host", "to meet {B} at the cinema", "because {A_he} had left the oven on"])],
    V(("a friend's birthday party", "10:35", "bus", "village", "10:50"),
      ("a long dinner with colleagues", "11:10", "train", "town", "11:30"),
      ("the school quiz night", "9:40", "ferry", "island", "10:00"),
      ("a concert in the city", "11:45", "tram", "neighbourhood", "midnight"),
      ("a wedding reception", "12:20", "night bus", "suburb", "12:40"),
      ("a neighbour's dinner party", "10:05", "cable car", "mountain village", "10:15"),
      keys="event t1 transport home t2")))

T.append(Template(
    "int-rehearse", "intention",
    "{A} read {A_his} {text} aloud {count} in front of the mirror, timing {A_self} with a stopwatch. Tomorrow {A_he} {event}.",
    [("Why did {A} read it aloud so many times?", "to make sure the real thing goes smoothly",
      ["because {A_he} could not read well", "to annoy {A_his} neighbours", "because the mirror was new"])],
    V(("speech", "ten times", "gives the best-man speech at {A_his} brother's wedding"),
      ("presentation", "six times", "presents {A_his} research to the whole company"),
      ("lines", "all evening", "plays the lead in the school play"),
      ("poem", "over and over", "recites it at the national poetry competition"),
      ("sales pitch", "eight times", "meets the investors"),
      ("eulogy", "again and again", "speaks at {A_his} grandfather's funeral"),
      keys="text count event")))

T.append(Template(
    "int-avoid", "intention",
    "{A} saw {B}, who always talks for hours about {topic}, walking toward {A_him} {where}. {A} pulled out {A_his} phone "
    "and pretended to be deep in a call.",
    [("Why did {A} pretend to be on a call?", "to avoid a long conversation with {B}",
      ["to show {B} {A_his} new phone", "to call for help", "to take a picture of {B}"])],
    V(("{B_his} model trains", "in the supermarket"),
      ("{B_his} ongoing argument with the council", "across the car park"),
      ("the history of {B_his} family", "in the hospital corridor"),
      ("{B_his} diet and fitness plan", "at the bus stop"),
      ("{B_his} cat's health problems", "in the school playground"),
      ("cryptocurrency", "in the office kitchen"),
      keys="topic where")))

T.append(Template(
    "int-seat", "intention",
    "On the crowded {vehicle}, {A} noticed {person} standing near {A_him} {burden}. {A} still had {n} stops to go, "
    "but {A_he} stood up and caught {pron}'s eye.",
    [("Why did {A} stand up?", "to offer {pron} {A_his} seat",
      ["because {A_he} had reached {A_his} stop", "to get a better view out of the window", "because {A_his} seat was wet"])],
    V(("bus", "an old man", "leaning on a walking stick", "six", "the man"),
      ("train", "a pregnant woman", "holding on to the rail", "five", "the woman"),
      ("tram", "a father", "with a sleeping toddler in his arms", "four", "the father"),
      ("underground train", "a woman", "on crutches", "seven", "the woman"),
      ("bus", "an elderly lady", "carrying two heavy shopping bags", "eight", "the lady"),
      ("ferry", "a man", "with his arm in a sling", "three", "the man"),
      keys="vehicle person burden n pron")))

T.append(Template(
    "int-trick", "intention",
    "There was only one {item} left, and both {A} and {B} wanted it. {A} told {B}, \"{lie}\" As soon as {B} had hurried off, "
    "{A} took the {item}. What {A} had said was not true.",
    [("Why did {A} tell {B} that?", "so that {A_he} could have it {A_self}",
      ["to warn {B} about something important", "to make {B} laugh", "because {A_he} wanted {B} to have the {item}"])],
    V(("slice of cake", "Your mum is on the phone for you in the hall."),
      ("comfy chair", "The teacher is looking for you in the office."),
      ("free concert ticket", "There's a parcel for you at the front desk."),
      ("chocolate croissant", "Someone just scratched your bike outside."),
      ("window seat", "Your friend is waving at you from the back of the bus."),
      ("signed poster", "The manager wants to see you right now."),
      keys="item lie")))

T.append(Template(
    "int-save", "intention",
    "{A} started bringing lunch from home, cancelled {A_his} streaming subscriptions and sold {A_his} {sold}. "
    "{A_He} taped a picture of {goal} to the fridge and ticks off a box on a chart every week.",
    [("Why did {A} make these changes?", "to save money for {short}",
      ["because {A_his} doctor told {A_him} to", "because {A_his} streaming subscriptions had stopped working", "to spend more time with {A_his} family"])],
    V(("old game console", "a small house by the sea", "a home of {A_his} own"),
      ("second car", "a trip to Japan", "a big journey abroad"),
      ("designer jacket", "a new violin", "a musical instrument"),
      ("record collection", "a university campus", "{A_his} studies"),
      ("spare bicycle", "a wedding venue", "getting married"),
      ("camera lenses", "a puppy", "a pet"),
      keys="sold goal short")))

# =============================================================================================
# faux_pas: who said what they should not have / how the other feels / did the speaker know
# =============================================================================================
_WHO = "Did anyone say something they should not have said? If so, who?"
_NOONE = "Nobody"


def fp(tid: str, story: str, fact: str, feel: str, feel_d: list[str], variants, keys: str, genders=None,
       control: bool = False) -> Template:
    """A faux-pas template with three question types (who / how does B feel / did A know)."""
    if control:
        qs = [(_WHO, _NOONE, ["{A}", "{B}", "{C}"]), ("How did {B} most likely feel?", feel, feel_d)]
    else:
        qs = [(_WHO, "{A}", ["{B}", "{C}", _NOONE]),
              ("How did {B} most likely feel after hearing the remark?", feel, feel_d),
              (f"When {{A}} spoke, did {{A_he}} know {fact}?", "No, {A_he} did not know",
               ["Yes, and {A_he} wanted to upset {B}", "Yes, because {C} had just told {A_him}",
                "Yes, {B} had told {A_him} that morning"])]
    return Template(tid, "faux_pas", story, qs, V(*variants, keys=keys), genders or {})


T.append(fp(
    "fp-newthing",
    "{B} had just {did}. {A} and {C} came over for tea. Looking around, {A} said, \"{remark}\"",
    "that {thing}", "upset", ["glad", "proud", "flattered"],
    [("put up new curtains in the living room", "Those curtains are horrible. I hope you're getting new ones soon.",
      "{B} had just bought the curtains"),
     ("painted the hallway a bright orange", "Who chose that orange? It looks like a prison corridor.",
      "{B} had just painted the hallway {B_self}"),
     ("bought a leather sofa", "That sofa looks so uncomfortable. Did it come from a skip?",
      "the sofa was {B}'s new purchase"),
     ("hung a painting {B_he} had made {B_self}", "Whoever painted that should stick to their day job.",
      "{B} had painted the picture"),
     ("planted a row of roses by the gate", "Those roses look half dead. I'd pull them all out.",
      "{B} had just planted the roses"),
     ("laid a new carpet in the lounge", "This carpet is hideous. It looks like something from a cheap hotel.",
      "the carpet was brand new"),
     ],
    "did remark thing"))

T.append(fp(
    "fp-pregnant",
    "At {event}, {A} saw {B} for the first time in months. {A} smiled, pointed at {B}'s stomach and said, "
    "\"Congratulations! When is the baby due?\" {C} went quiet. {B} was not pregnant{extra}.",
    "that {B} was not pregnant", "mortified", ["flattered", "proud", "happy"],
    [("the office party", ""), ("a cousin's wedding", "; {B_he} had simply been unwell"),
     ("the school gate", ""), ("a neighbour's barbecue", ""),
     ("the gym reception", ""), ("the supermarket checkout", "; {B_he} was wearing a loose dress")],
    "event extra", genders={"B": "f"}))

T.append(fp(
    "fp-boss",
    "At {event}, {A} chatted with a stranger by the {spot}, while {A_his} friend {C} listened. \"The new {role} at my "
    "work is hopeless,\" {A} said. \"{complaint}\" The stranger was {B}, who had just started as that new {role}.",
    "who the stranger was", "offended", ["flattered", "amused and proud", "grateful"],
    [("a wedding", "buffet", "manager", "Nobody knows why they hired {B_him}."),
     ("a conference", "coffee machine", "director", "All {B_he} does is send pointless emails."),
     ("a neighbour's party", "fire pit", "head teacher", "The whole school is falling apart."),
     ("a charity dinner", "bar", "team leader", "I've never met anyone so disorganised."),
     ("the gym", "water fountain", "chef", "The food has gone completely downhill."),
     ("a book launch", "window", "editor", "{B_He} has ruined the magazine in a month.")],
    "event spot role complaint"))

T.append(fp(
    "fp-potluck",
    "At the street's potluck supper, nobody had put their names on the dishes. {A} tasted the {dish} and said loudly to "
    "{B} and {C}, \"{remark}\" {B} had made the {dish}.",
    "who had made the {dish}", "humiliated", ["proud", "cheerful", "grateful"],
    [("lasagne", "Whoever made this lasagne should never cook again."),
     ("potato salad", "This potato salad tastes like glue."),
     ("curry", "This curry is so salty it's inedible."),
     ("apple pie", "Who brought this pie? The pastry is raw."),
     ("chilli", "This chilli is a disaster. I'd throw it out."),
     ("fruit cake", "This cake is as dry as sand. Awful.")],
    "dish remark"))

T.append(fp(
    "fp-grandchild",
    "{B} was {where} with a small {child}. {A}, who had just moved in next door, stopped beside them while {C} "
    "held the gate. \"What a lovely {wrong}!\" {A} said. The {child} was {B}'s own {right}.",
    "that the {child} was {B}'s own {right}", "upset", ["flattered", "thrilled", "grateful"],
    [("in the park", "boy", "grandson", "son"), ("at the playground", "girl", "granddaughter", "daughter"),
     ("outside the school", "boy", "grandson you have", "son"), ("at the bus stop", "girl", "granddaughter you have", "daughter"),
     ("in the front garden", "boy", "little grandson", "son"), ("at the library", "girl", "little granddaughter", "daughter")],
    "where child wrong right"))

T.append(fp(
    "fp-uninvited",
    "{A} was throwing a {party} on Saturday and had invited everyone in the {group} except {B}. In the {place}, {A} "
    "said to {C}, \"I'm so glad everyone can make it on Saturday!\" {B} was sitting right behind {A}.",
    "that {B} was sitting behind {A_him}", "left out", ["relieved", "proud", "amused"],
    [("birthday party", "office", "lift"), ("garden party", "book club", "café"),
     ("dinner party", "class", "corridor"), ("barbecue", "running club", "changing room"),
     ("leaving party", "team", "canteen"), ("film night", "choir", "foyer")],
    "party group place"))

T.append(fp(
    "fp-song",
    "At the {event}, {A} leaned over to {B} and {C} and whispered, \"This {piece} is so boring. Whoever wrote it has no "
    "talent.\" {B}'s {rel} had written the {piece}.",
    "who had written the {piece}", "hurt", ["proud", "flattered", "cheerful"],
    [("school concert", "song", "daughter"), ("village theatre night", "play", "son"),
     ("poetry evening", "poem", "husband"), ("church recital", "hymn", "sister"),
     ("jazz festival", "tune", "brother"), ("film club screening", "short film", "wife")],
    "event piece rel"))

T.append(fp(
    "fp-oldcar",
    "{A} was telling {B} and {C} about {A_his} plans. \"I'd never {act},\" {A} said. \"People who {do} just don't care "
    "how they look.\" {B} {fact}.",
    "what {B} {fact2}", "insulted", ["flattered", "grateful", "proud"],
    [("drive a car older than five years", "drive old cars", "had arrived that morning in a twenty-year-old car",
      "drove"),
     ("wear second-hand clothes", "shop at charity shops", "had bought everything {B_he} was wearing at a charity shop",
      "was wearing"),
     ("live in a tiny flat", "live in tiny flats", "lived in a tiny studio flat", "lived in"),
     ("carry a cheap plastic bag", "carry plastic bags to work", "had brought {B_his} lunch in a plastic bag",
      "had brought"),
     ("cut my own hair", "cut their own hair", "had cut {B_his} own hair the night before", "had done"),
     ("ride an old bike", "ride rusty bikes", "had ridden there on a rusty old bike", "had ridden")],
    "act do fact fact2"))

T.append(fp(
    "fp-pet",
    "{B}'s {pet}, {pname}, died last week. {A} had been abroad for two months and had only just come back. "
    "When they met {where} with {C}, {A} said cheerfully, \"How's {pname}? Give {pname} a hug from me!\"",
    "that {pname} had died", "saddened", ["amused", "proud", "relieved"],
    [("dog", "Biscuit", "at the corner shop"), ("cat", "Pepper", "outside the bank"),
     ("old horse", "Duke", "at the farmers' market"), ("dog", "Rosie", "on the bus"),
     ("parrot", "Captain", "in the bakery queue"), ("cat", "Misty", "at the swimming pool")],
    "pet pname where"))

T.append(fp(
    "fp-shop",
    "{A} and {C} met {B} at a party. \"Have you been to {shop} on {street}?\" {A} asked {B}. \"{remark}\" {B} had "
    "opened {shop} the year before and owned it.",
    "that {B} owned {shop}", "offended", ["flattered", "grateful", "excited"],
    [("the bakery", "Market Street", "Don't bother. Their bread tastes like cardboard."),
     ("the bike shop", "Canal Road", "They overcharge everyone and fix nothing."),
     ("the little bookshop", "High Street", "It's dusty and the owner is so rude."),
     ("the Thai restaurant", "Station Road", "I got food poisoning there. Avoid it."),
     ("the hair salon", "Bridge Street", "They ruin everyone's hair."),
     ("the garden centre", "the ring road", "Every plant I bought there died in a week.")],
    "shop street remark"))

T.append(fp(
    "fp-control-praise",
    "{B} had just {did}. {A} and {C} came over to see it. {A} said, \"{remark}\" {B} smiled and thanked {A_him}.",
    "", "pleased", ["insulted", "embarrassed", "hurt"],
    [("finished decorating the nursery", "What a cosy room. The baby will love it."),
     ("repainted {B_his} boat", "The blue looks great. You did a neat job."),
     ("planted a vegetable garden", "Look at those tomatoes! You must have worked hard."),
     ("rearranged {B_his} living room", "It feels so much bigger now. Good idea."),
     ("hung new shelves in the kitchen", "Those shelves look really solid."),
     ("baked bread for the first time", "It smells wonderful. Can I try some?")],
    "did remark", control=True))

T.append(fp(
    "fp-control-ask",
    "{A}, {B} and {C} were having lunch at {B}'s house. {A} noticed the {item} on the wall and asked about it. {B} explained "
    "that {origin}. {A} said, \"{remark}\"",
    "", "pleased", ["insulted", "ashamed", "hurt"],
    [("clock", "it had belonged to {B_his} grandfather", "It suits this room perfectly."),
     ("map", "{B_he} had found it in a market in Lisbon", "What a great find."),
     ("photograph", "{B_his} daughter had taken it on holiday", "She has a real eye for it."),
     ("mirror", "{B_he} had rescued it from a skip and cleaned it up", "You'd never guess. It looks lovely."),
     ("quilt", "{B_his} aunt had sewn it by hand", "The colours are beautiful."),
     ("mask", "a friend had brought it back from Venice", "It's stunning. Is it very old?")],
    "item origin remark", control=True))

# =============================================================================================
# mixed_emotion: two feelings at once
# =============================================================================================


def mx(tid: str, story: str, x: str, y: str, w: str, z: str, v: str, variants, keys: str, q: str | None = None):
    """Correct (x, y); distractors (x, w), (z, w), (z, v): each correct word is as frequent as a wrong one."""
    q = q or "Which pair of feelings best describes how {A} feels?"
    return Template(tid, "mixed_emotion", story,
                    [(q, f"{x} and {y}", [f"{x} and {w}", f"{z} and {w}", f"{v} and {z}"])], V(*variants, keys=keys))


T.append(mx(
    "mix-graduate",
    "{A} {achieve}. It is something {A_he} has worked toward for years. But it also means {loss}.",
    "proud", "sad", "disgusted", "jealous", "terrified",
    [("graduated from university today with top marks", "saying goodbye to the friends {A_he} has lived with for four years"),
     ("retired today after forty years as the town's doctor", "no longer seeing the patients {A_he} has cared for"),
     ("was picked to play for the national team", "leaving the small club where {A_he} grew up"),
     ("finished building the family house {A_his} father started", "that {A_his} father is no longer alive to see it"),
     ("watched {A_his} only child leave to study medicine abroad", "an empty, quiet house from now on"),
     ("sold {A_his} bakery for a good price after thirty years", "handing the keys to a stranger tomorrow")],
    "achieve loss"))

T.append(mx(
    "mix-newjob",
    "{A} has just accepted {job} in {city}, a place {A_he} has never been. {A_He} starts in two weeks and does not know "
    "a single person there.",
    "excited", "nervous", "disgusted", "bored", "ashamed",
    [("{A_his} dream job at a film studio", "Los Angeles"), ("a research post at a famous lab", "Tokyo"),
     ("a place at a top ballet school", "Moscow"), ("a job as a ship's engineer", "Singapore"),
     ("a position as head chef", "Lyon"), ("a teaching job at an international school", "Nairobi")],
    "job city"))

T.append(mx(
    "mix-pet",
    "{A}'s {pet} {pname} had been very ill for months and was in constant pain. This morning the vet put {pname} to sleep, "
    "peacefully, with {A} stroking {pname}'s head.",
    "sad", "relieved", "amused", "triumphant", "jealous",
    [("old dog", "Max"), ("cat", "Luna"), ("horse", "Star"), ("rabbit", "Clover"), ("dog", "Buddy"), ("cat", "Oscar")],
    "pet pname"))

T.append(mx(
    "mix-beatfriend",
    "{A} beat {A_his} best friend {B} in the final of the {contest}. {B} had trained for years and badly needed the prize "
    "money for {need}. {B} left in tears.",
    "happy", "guilty", "bored", "frightened", "jealous",
    [("chess championship", "{B_his} rent"), ("cooking contest", "{B_his} mother's operation"),
     ("local marathon", "{B_his} university fees"), ("piano competition", "a new instrument"),
     ("art prize", "{B_his} studio"), ("spelling bee", "a school trip")],
    "contest need"))

T.append(mx(
    "mix-sibling",
    "{A} and {A_his} {rel} {B} both applied for the same {job}. {B} got it, and {A} did not. {A} and {B} are very close.",
    "happy for {B}", "envious", "terrified", "disgusted", "ashamed",
    [("cousin", "job at the newspaper"), ("best friend", "place on the expedition"), ("twin", "role in the film"),
     ("flatmate", "position at the hospital"), ("oldest friend", "scholarship"), ("neighbour", "apprenticeship")],
    "rel job"))

T.append(mx(
    "mix-paidfor",
    "{A} went out for {meal} with friends but found that {A_his} card had been declined. Before {A_he} could say anything, "
    "{B} quietly paid for {A_his} share.",
    "grateful", "embarrassed", "victorious", "terrified", "triumphant",
    [("dinner",), ("a birthday lunch",), ("pizza",), ("drinks",), ("brunch",), ("a curry",)],
    "meal"))

T.append(mx(
    "mix-late",
    "{A}'s teenage {child} was supposed to be home by {t1} but did not come back or answer the phone. At {t2}, the {child} "
    "finally walked in, {state}, saying {excuse}.",
    "relieved", "angry", "nostalgic", "jealous", "triumphant",
    [("son", "ten", "two in the morning", "safe and smiling", "his phone had died at a party"),
     ("daughter", "eleven", "three in the morning", "unharmed", "she had lost track of time"),
     ("son", "midnight", "four in the morning", "perfectly fine", "he had missed the last bus and walked"),
     ("daughter", "nine", "one in the morning", "giggling", "she had been at a friend's house"),
     ("son", "eight", "midnight", "without a scratch", "he forgot to charge his phone"),
     ("daughter", "ten", "two in the morning", "calm and cheerful", "she thought she had told {A_him}")],
    "child t1 t2 state excuse"))

T.append(mx(
    "mix-promotion",
    "{A} had hoped for the promotion to {role} for a long time. It would have meant moving to {place}, far away from "
    "{A_his} {family}. Today {A_he} learned that someone else got it.",
    "disappointed", "relieved", "triumphant", "guilty", "amused",
    [("regional manager", "another country", "elderly parents"), ("head of sales", "the capital", "young children"),
     ("chief editor", "the other office overseas", "sick sister"), ("senior partner", "a city in the north", "grandchildren"),
     ("lead designer", "the branch in Canada", "best friends"), ("principal", "a school across the country", "twin brothers")],
    "role place family"))

T.append(mx(
    "mix-firsttrip",
    "{A}'s {child}, who is {age}, is {trip} alone for the first time. {A} watched {them} {go} until {sub} disappeared from view.",
    "proud", "worried", "disgusted", "guilty", "amused",
    [("son", "twelve", "taking the train to his grandmother's", "him", "wave from the carriage", "he"),
     ("daughter", "sixteen", "flying to a language camp abroad", "her", "walk through security", "she"),
     ("son", "ten", "cycling to school", "him", "pedal down the hill", "he"),
     ("daughter", "eighteen", "driving across the country", "her", "drive off", "she"),
     ("son", "fourteen", "sailing a dinghy across the bay", "him", "steer past the harbour wall", "he"),
     ("daughter", "eleven", "walking to the shop", "her", "turn the corner", "she")],
    "child age trip them go sub"))

T.append(mx(
    "mix-funeral",
    "At {A_his} {rel}'s funeral, {A} saw {who}, whom {A_he} had not seen for over {years} years. They hugged for a long time "
    "and spent the evening sharing stories.",
    "sad", "glad", "triumphant", "proud", "jealous",
    [("grandfather", "{A_his} cousins from Canada", "ten"), ("aunt", "{A_his} childhood best friend", "fifteen"),
     ("uncle", "{A_his} older brother", "eight"), ("grandmother", "{A_his} old neighbours", "twenty"),
     ("godfather", "{A_his} university friends", "twelve"), ("teacher", "{A_his} former classmates", "thirty")],
    "rel who years"))

T.append(mx(
    "mix-dogsandwich",
    "{A} had just made {A_self} {food} when {A_his} puppy grabbed it and ran around the {room}, {antics}.",
    "amused", "annoyed", "ashamed", "frightened", "jealous",
    [("a huge sandwich", "garden", "tripping over its own ears"),
     ("a slice of pizza", "living room", "spinning in circles with its tail wagging"),
     ("a burger", "kitchen", "sliding across the tiles"),
     ("a sausage roll", "yard", "doing zoomies around the washing line"),
     ("a bacon roll", "hallway", "bouncing off the sofa cushions"),
     ("a cheese toastie", "park", "rolling over and over in the grass")],
    "food room antics"))

T.append(mx(
    "mix-thrill",
    "{A} is standing at {place}, about to {act} for the very first time. {A_His} heart is pounding, but {A_he} has wanted "
    "to do this since {A_he} was a child.",
    "thrilled", "scared", "guilty", "bored", "ashamed",
    [("the open door of the plane", "skydive"), ("the edge of the bridge", "bungee jump"),
     ("the top of the tallest roller coaster in the country", "ride it"), ("the edge of the cliff", "paraglide"),
     ("the side of the shark cage", "dive with sharks"), ("the start of the ski jump", "jump")],
    "place act"))


# =============================================================================================
# generation
# =============================================================================================
def _fill(text: str, fields: dict[str, str]) -> str:
    for _ in range(3):  # variant fields may themselves hold {A_he} etc.
        if "{" not in text:
            break
        text = text.format(**fields)
    if "{" in text or "}" in text:
        raise ValueError(f"unfilled placeholder in {text!r}")
    return text


def _people(rng: random.Random, genders: dict[str, str], used: set[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    names_here: set[str] = set()
    for key in ("A", "B", "C"):
        g = genders.get(key) or rng.choice("fm")
        pool = [n for n in (FEMALE if g == "f" else MALE) if n not in used and n not in names_here]
        if not pool:  # every name used in this template: reuse, but never twice in one story
            pool = [n for n in (FEMALE if g == "f" else MALE) if n not in names_here]
        name = rng.choice(pool)
        names_here.add(name)
        fields.update(Person(name, g == "f").fields(key))
    used |= names_here
    return fields


def build(seed: int = SEED) -> list[dict[str, object]]:
    rng = random.Random(seed)
    by_kind: dict[str, list[Template]] = defaultdict(list)
    for t in T:
        by_kind[t.kind].append(t)
    test_ids: set[str] = set()
    for kind, ts in by_kind.items():
        test_ids |= {t.id for t in rng.sample(ts, TEST_PER_KIND)}
    rows: list[dict[str, object]] = []
    for t in T:
        used: set[str] = set()
        for i, var in enumerate(t.variants):
            fields = _people(rng, t.genders, used)
            fields.update({k: v for k, v in var.items() if isinstance(v, str) and not k.startswith("_")})
            q, ans, dis = t.questions[i % len(t.questions)]
            if var.get("_answer"):  # a control variant: the answer is another option
                new = var["_answer"]
                dis = [ans if d == new else d for d in dis]
                ans = new
            story = _fill(t.story, fields)
            story = re.sub(r"\s+", " ", story).strip()
            row = {
                "id": f"{t.id}-{i + 1:02d}",
                "kind": t.kind,
                "story": story,
                "question": _fill(q, fields),
                "answer": _fill(ans, fields),
                "distractors": [_fill(d, fields) for d in dis],
                "split": "test" if t.id in test_ids else "train",
                "template": t.id,
            }
            rows.append(row)
    # balanced answer positions: within each (kind, split), position = rank % 4 in a shuffled order
    groups: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["split"])].append(r)  # type: ignore[index]
    for key in sorted(groups):
        members = groups[key]
        order = list(range(len(members)))
        rng.shuffle(order)
        offset = rng.randrange(4)
        for rank, idx in enumerate(order):
            r = members[idx]
            pos = (rank + offset) % 4
            dis = list(r.pop("distractors"))  # type: ignore[arg-type]
            rng.shuffle(dis)
            dis.insert(pos, r["answer"])
            r["choices"] = dis
    out = []
    for r in rows:
        out.append({k: r[k] for k in ("id", "kind", "story", "question", "choices", "answer", "split", "template")})
    return out


def check(rows: list[dict[str, object]]) -> list[str]:
    problems: list[str] = []
    kinds = Counter(r["kind"] for r in rows)
    lines = [f"{len(rows)} items; by kind {dict(kinds)}; test {sum(r['split'] == 'test' for r in rows)}"]
    for r in rows:
        ch = r["choices"]
        if len(ch) != 4 or len(set(ch)) != 4 or r["answer"] not in ch:  # type: ignore[arg-type]
            problems.append(f"{r['id']}: bad choices {ch}")
    stories = Counter(r["story"] for r in rows)
    problems += [f"duplicate story: {s[:60]}" for s, n in stories.items() if n > 1]
    words = re.compile(r"[a-z']+")
    for kind in kinds:
        rs = [r for r in rows if r["kind"] == kind]
        pos = Counter(r["choices"].index(r["answer"]) for r in rs)  # type: ignore[union-attr]
        longest = sum(len(r["answer"]) == max(len(c) for c in r["choices"]) for r in rs)  # type: ignore[union-attr]
        shortest = sum(len(r["answer"]) == min(len(c) for c in r["choices"]) for r in rs)  # type: ignore[union-attr]
        overlap_best = 0
        for r in rs:
            sw = set(words.findall(str(r["story"]).lower()))
            ov = [len(set(words.findall(c.lower())) & sw) / max(1, len(words.findall(c.lower()))) for c in r["choices"]]
            if ov[r["choices"].index(r["answer"])] == max(ov) and ov.count(max(ov)) == 1:
                overlap_best += 1
        lines.append(
            f"  {kind:20s} n={len(rs)} templates={len({r['template'] for r in rs})} positions={dict(sorted(pos.items()))} "
            f"answer-longest={longest / len(rs):.2f} answer-shortest={shortest / len(rs):.2f} "
            f"answer-unique-max-overlap={overlap_best / len(rs):.2f}"
        )
    return lines + problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="print the checks only; write nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows = build()
    report = check(rows)
    print("\n".join(report))
    if any(not line.startswith((" ", str(len(rows)))) for line in report):
        return 1
    if not args.check:
        args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
