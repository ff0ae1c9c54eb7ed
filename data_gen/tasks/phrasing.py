"""Question and answer templates, kept as data so each question type has many phrasings (>= 15).

Each entry of ``TEMPLATES`` is a question type -> list of ``str.format`` templates. The fields a type may use
are listed in ``FIELDS`` so a test can format every template with dummy values and catch a typo. Reasoning
questions are built from ``REASONING_FRAMES`` x a rule's core questions (``data_gen.tasks.reasoning``).
"""

from __future__ import annotations

import random
import string

TEMPLATES: dict[str, list[str]] = {
    # ---------------------------------------------------------------------------------------------- captions
    "caption": [
        "Describe this image.",
        "Describe the land cover in this image.",
        "Write a caption for this remote sensing image.",
        "What does this aerial image show?",
        "Give a detailed description of this scene.",
        "Summarise what covers the ground in this image.",
        "Describe the scene, including which classes cover the most area.",
        "Can you describe this satellite image in detail?",
        "Provide a description of the land use visible here.",
        "What can you see in this image? Describe it region by region.",
        "Characterise the landscape in this tile.",
        "Explain what this overhead image contains.",
        "Please describe the composition of this scene.",
        "Write a paragraph describing this image.",
        "Tell me about the land cover in this picture, part by part.",
        "How is the land in this image used? Describe it.",
    ],
    "caption_named": [
        "Which named features are visible in this image?",
        "Describe the named places in this image.",
        "Are there any named features here? Describe them.",
        "What named roads, rivers or places appear in this image?",
        "List and describe the named features in this scene.",
        "Tell me about the features in this image that have names.",
        "Which mapped features with names can be seen here?",
        "Describe this image using the names of its features.",
        "Name the features you can see and where they are.",
        "What do the map names tell us about this image?",
        "Identify the named objects in this tile and their positions.",
        "Which streets, waterways or landmarks are named in this image?",
        "Give the names and locations of the mapped features here.",
        "What are the named features in this aerial view?",
        "Describe where each named feature lies in the image.",
    ],
    # ---------------------------------------------------------------------------------------------- VQA
    "presence": [
        "Is there any {cls} in this image?",
        "Does this image contain {cls}?",
        "Can you see any {cls} here?",
        "Is {cls} present in the scene?",
        "Are there areas of {cls} in this image?",
        "Does any {cls} appear in this tile?",
        "Is {cls} visible anywhere in the picture?",
        "Do you see {cls} in this aerial image?",
        "Is some {cls} shown in this image?",
        "Does the scene include {cls}?",
        "Is there {cls} anywhere in this scene?",
        "Can {cls} be found in this image?",
        "Answer yes or no: is there {cls} in the image?",
        "Would you say this image contains {cls}?",
        "Is any part of this image covered by {cls}?",
    ],
    "count": [
        "How many {plural} are there in this image?",
        "Count the {plural} in this image.",
        "What is the number of {plural} in the scene?",
        "How many separate {plural} can you see?",
        "How many {plural} does this image contain?",
        "Give the number of {plural} visible here.",
        "How many distinct {plural} are shown?",
        "Can you count the {plural} in this tile?",
        "How many individual {plural} appear in the image?",
        "Tell me how many {plural} there are.",
        "What is the count of {plural} in this picture?",
        "How many {plural} are visible in this aerial image?",
        "Please count every {singular} in the image.",
        "How many {plural} do you see?",
        "Number of {plural} in this scene?",
    ],
    "area": [
        "How much area does {cls} cover in this image?",
        "What is the area of {cls} in this tile?",
        "How large is the area covered by {cls}?",
        "Estimate the area of {cls} in this image.",
        "How many square metres of {cls} are there?",
        "What area is occupied by {cls}?",
        "How much of the ground is {cls}, in area?",
        "Give the total area of {cls} in the scene.",
        "How big is the {cls} area here?",
        "What is the extent of {cls} in this image?",
        "Measure the area covered by {cls}.",
        "How much land does {cls} take up?",
        "Report the area of {cls} in this picture.",
        "What surface area does {cls} cover?",
        "Tell me the area of the {cls} in this tile.",
    ],
    "position": [
        "Where is the {cls} in this image?",
        "In which part of the image is {cls} found?",
        "Where does {cls} appear in the scene?",
        "Which part of the tile contains {cls}?",
        "Where can I find {cls} in this picture?",
        "Locate the {cls} in terms of image regions.",
        "Where is most of the {cls} located?",
        "In what part of the image do you see {cls}?",
        "Where in the image is the {cls}?",
        "Which region of the image holds the {cls}?",
        "Where is the {cls} concentrated?",
        "Describe where the {cls} lies in the image.",
        "Whereabouts in the scene is the {cls}?",
        "Tell me where the {cls} is.",
        "On which side of the image is the {cls}?",
    ],
    "relation": [
        "Where is the {a} relative to the {b}?",
        "What is the position of the {a} with respect to the {b}?",
        "How is the {a} placed relative to the {b}?",
        "In which direction from the {b} is the {a}?",
        "Where does the {a} lie compared with the {b}?",
        "Describe the position of the {a} relative to the {b}.",
        "On which side of the {b} is the {a}?",
        "Where would I find the {a} if I start at the {b}?",
        "What is the spatial relation between the {a} and the {b}?",
        "Seen from the {b}, where is the {a}?",
        "How are the {a} and the {b} arranged?",
        "Which way is the {a} from the {b}?",
        "Where is the {a} located in relation to the {b}?",
        "Give the direction of the {a} from the {b}.",
        "Relative to the {b}, where is the {a}?",
    ],
    "comparison": [
        "Which covers more of the image, {a} or {b}?",
        "Is there more {a} or more {b} in this image?",
        "Which is larger here: {a} or {b}?",
        "Compare the areas of {a} and {b}.",
        "Does {a} cover more ground than {b}?",
        "Which takes up more space, {a} or {b}?",
        "Between {a} and {b}, which is more extensive?",
        "Which class dominates, {a} or {b}?",
        "Is {a} more widespread than {b} in this scene?",
        "Which occupies a larger share of the tile, {a} or {b}?",
        "How does the area of {a} compare to that of {b}?",
        "Of {a} and {b}, which covers the bigger area?",
        "Which is more common in this image, {a} or {b}?",
        "Tell me whether {a} or {b} covers more of the picture.",
        "Compare how much {a} and {b} there is.",
    ],
    "multilabel": [
        "Which land-cover classes are present in this image?",
        "List the classes that appear in this image.",
        "What types of land cover can you see?",
        "Name all the land-cover types in this scene.",
        "Which categories of land cover does this tile contain?",
        "What kinds of surface are visible here?",
        "Give the set of classes present in the image.",
        "Which land-use classes occur in this picture?",
        "Tag this image with the classes it contains.",
        "What classes would you label in this image?",
        "List every type of land cover in this scene.",
        "Which of the known classes are in this image?",
        "Enumerate the land-cover types shown.",
        "What is in this image, class by class?",
        "Classify this image: which labels apply?",
    ],
    # ---------------------------------------------------------------------------------------------- grounding
    "refer_seg": [
        "Segment {ref}.",
        "Please segment {ref}.",
        "Show me {ref}.",
        "Can you segment {ref} in this image?",
        "Highlight {ref}.",
        "Give the mask of {ref}.",
        "Outline {ref}.",
        "Where exactly is {ref}? Segment it.",
        "Mark {ref} with a mask.",
        "Produce a segmentation mask for {ref}.",
        "Identify and segment {ref}.",
        "Find {ref} and segment it.",
        "Which pixels belong to {ref}?",
        "Delineate {ref}.",
        "Draw the outline of {ref}.",
    ],
    "refer_box": [
        "Give the bounding box of {ref}.",
        "Where is {ref}? Answer with a box.",
        "Locate {ref}.",
        "Find {ref} and give its bounding box.",
        "What is the bounding box of {ref}?",
        "Draw a box around {ref}.",
        "Detect {ref}.",
        "Output the box coordinates of {ref}.",
        "Please localise {ref} with a box.",
        "Put a bounding box on {ref}.",
        "Where can I find {ref}? Give a box.",
        "Box {ref}.",
        "Provide the location of {ref} as a box.",
        "Show the bounding box for {ref}.",
        "Which box contains {ref}?",
    ],
    "refer_obb": [
        "Give the oriented bounding box of {ref}.",
        "Locate {ref} with a rotated box.",
        "What is the oriented box of {ref}?",
        "Draw a rotated bounding box around {ref}.",
        "Find {ref} and give its oriented box.",
        "Output the oriented box for {ref}.",
        "Give a rotated box that fits {ref}.",
        "Where is {ref}? Answer with an oriented box.",
        "Detect {ref} with an oriented bounding box.",
        "Provide the rotated box of {ref}.",
        "Fit an oriented rectangle to {ref}.",
        "Please localise {ref} with an oriented box.",
        "Which rotated box encloses {ref}?",
        "Give the minimum-area rectangle of {ref}.",
        "Mark {ref} with an oriented box.",
    ],
    "all_seg": [
        "Segment all {plural}.",
        "Segment every {singular} in this image.",
        "Show all the {plural}.",
        "Highlight all {plural} in the scene.",
        "Give a mask of all {plural}.",
        "Where are all the {plural}? Segment them.",
        "Mark every {singular} with a mask.",
        "Outline all {plural} in this tile.",
        "Produce a segmentation of the {plural}.",
        "Find all {plural} and segment them.",
        "Which pixels are {plural}?",
        "Please segment each {singular} you can see.",
        "Delineate all {plural}.",
        "Segment the {plural} in this picture.",
        "Can you mask all of the {plural}?",
    ],
    "all_box": [
        "Locate all {plural}.",
        "Give bounding boxes for every {singular}.",
        "Detect all {plural} in this image.",
        "Where are the {plural}? Give boxes.",
        "Find each {singular} and box it.",
        "Draw boxes around all {plural}.",
        "Output boxes for the {plural}.",
        "List the bounding boxes of all {plural}.",
        "Please localise every {singular}.",
        "Box all {plural} in the scene.",
        "Show every {singular} with a bounding box.",
        "Where is each {singular}? Answer with boxes.",
        "Detect the {plural} and give their boxes.",
        "Provide a box for each {singular} in the tile.",
        "Mark all {plural} with bounding boxes.",
    ],
    # ---------------------------------------------------------------------------------------------- gcg
    "gcg": [
        "Describe this image and segment what you mention.",
        "Give a grounded description of the image.",
        "Describe the scene and mark each thing you name.",
        "Write a caption and segment the phrases in it.",
        "Can you describe this image with masks for each part?",
        "Provide a detailed caption with segmentation masks.",
        "Describe the image, grounding every phrase.",
        "Explain what is in the image and outline each element.",
        "Write a grounded caption for this tile.",
        "Describe the land cover and segment each class you mention.",
        "Give a description where every mentioned region is segmented.",
        "What is in this image? Segment the parts as you describe them.",
        "Please produce a grounded conversation-style caption.",
        "Caption this aerial image and provide masks for the phrases.",
        "Describe and segment the main elements of this scene.",
    ],
    # ---------------------------------------------------------------------------------------------- change
    "change_caption": [
        "Describe the changes between the two images.",
        "What changed between the two dates?",
        "Summarise the differences between these images.",
        "Write a change caption for this image pair.",
        "How did the area change from the first to the second image?",
        "Describe what is different in the second image.",
        "What happened in this area between the two dates?",
        "Explain the changes you can see.",
        "Compare the two images and describe the changes.",
        "Give a description of the land-cover change.",
        "Tell me what is new or gone in the second image.",
        "Describe how the scene evolved between the dates.",
        "Caption the change between these two acquisitions.",
        "What are the main differences between the two images?",
        "Describe the transformation of this area over time.",
    ],
    "change_binary": [
        "Has anything changed between the two images?",
        "Is there any change between the two dates?",
        "Did this area change?",
        "Are the two images different?",
        "Is there a visible change from the first to the second image?",
        "Do you see any change in this pair?",
        "Has the land cover changed between the dates?",
        "Answer yes or no: did anything change?",
        "Is there evidence of change between these images?",
        "Has this scene been modified between the two dates?",
        "Can you detect any change here?",
        "Are there changes between image 1 and image 2?",
        "Did anything in this area change?",  # not "did it stay the same?": the answer says yes for a change
        "Is anything different in the second image?",
        "Has any part of the scene changed?",
    ],
    "change_semantic": [
        "What did the changed areas turn into?",
        "Which land-cover transitions happened?",
        "Describe the changes from one class to another.",
        "What was converted into what between the dates?",
        "Which classes changed, and into which classes?",
        "List the from-to changes in this area.",
        "What kind of land-cover change took place?",
        "What did the area look like before and after the change?",
        "Classify the changes by their before and after classes.",
        "Which transitions between classes can you see?",
        "What replaced what in the changed parts?",
        "Give the semantic change between the two images.",
        "How did the land cover of the changed areas change?",
        "Which land-cover classes were lost and which were gained?",
        "Tell me the before and after classes of the changes.",
    ],
    "change_quantify": [
        "How many changed areas are there, and how large are they?",
        "Quantify the change between the two images.",
        "How much of the area changed?",
        "Count the changed regions and give their area.",
        "How many separate changes are there?",
        "What is the total area of change?",
        "How large is the changed area?",
        "Give the number and size of the changes.",
        "How extensive is the change between the dates?",
        "Measure the change in this image pair.",
        "What share of the scene changed?",
        "How many change patches are there?",
        "Estimate the amount of change.",
        "Tell me how many places changed and by how much.",
        "How big are the changes in total?",
    ],
    "change_localise": [
        "Where are the changes?",
        "Segment the changed areas.",
        "Where did the area change? Show it.",
        "Locate the changes between the two images.",
        "In which parts of the image did change happen?",
        "Mark the changed regions.",
        "Show me where things changed.",
        "Give the change mask.",
        "Which parts of the scene are different?",
        "Highlight the areas that changed.",
        "Where should I look for changes?",
        "Outline the changes between the dates.",
        "Where is the change located in the image?",
        "Segment everything that changed.",
        "Point out the changed areas.",
    ],
    # ---------------------------------------------------------------------------------------------- answers
    "yes": [
        "Yes.",
        "Yes, there is {cls}.",
        "Yes, {cls} is present.",
        "Yes, some {cls} is visible.",
        "Yes, the image contains {cls}.",
    ],
    "no": [
        "No.",
        "No, there is no {cls}.",
        "No, {cls} does not appear in this image.",
        "No, I see no {cls} here.",
        "No, the image contains no {cls}.",
    ],
}

# Fields each question type's templates may use.
FIELDS: dict[str, tuple[str, ...]] = {
    "presence": ("cls",),
    "area": ("cls",),
    "position": ("cls",),
    "count": ("plural", "singular"),
    "all_seg": ("plural", "singular"),
    "all_box": ("plural", "singular"),
    "relation": ("a", "b"),
    "comparison": ("a", "b"),
    "refer_seg": ("ref",),
    "refer_box": ("ref",),
    "refer_obb": ("ref",),
    "yes": ("cls",),
    "no": ("cls",),
}

# Question types (the rest are answer fragments with fewer variants).
QUESTION_TYPES = tuple(k for k in TEMPLATES if k not in ("yes", "no"))

# Frames a reasoning rule's core question is set in; "{q}" is the core question.
REASONING_FRAMES: list[str] = [
    "{q}",
    "{q} Segment it.",
    "{q} Please show it with a mask.",
    "Looking at this image, {ql}",
    "Based on the image, {ql}",
    "I am planning a visit. {q}",
    "{q} Explain briefly and segment the area.",
    "Question about this scene: {ql}",
    "From what you can see, {ql}",
    "{q} Mark the answer in the image.",
    "Can you help? {q}",
    "In this aerial view, {ql}",
    "{q} Highlight the relevant pixels.",
    "Think about the land cover. {q}",
    "Using this image, {ql}",
]


def pick(rng: random.Random, qtype: str, **fields: str) -> str:
    """One phrasing of ``qtype`` chosen by ``rng``, formatted with ``fields``."""
    return rng.choice(TEMPLATES[qtype]).format(**fields)


def frame_reasoning(rng: random.Random, core: str) -> str:
    """Set a reasoning core question in one of the frames (lower-casing its first letter where it follows)."""
    frame = rng.choice(REASONING_FRAMES)
    return frame.format(q=core, ql=core[:1].lower() + core[1:])


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def plural(word: str) -> str:
    """English plural of a class name (last word), good enough for class names."""
    if not word:
        return word
    head, _, last = word.rpartition(" ")
    if last.endswith("s") and not last.endswith(("ss", "us", "is")):
        pass  # already plural: OSM "garages", "steps", "terraced houses"
    elif last.endswith(("s", "sh", "ch", "x", "z")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (by its first letter: 'an industrial building', 'a house')."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def join_words(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
