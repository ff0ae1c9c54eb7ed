"""What geometry decides in a turn: presence, counts, one referred patch, grounded captions, missing elements, yes/no.

A 135M LLM is right about the form of an answer far more often than about what the image shows. So after the
model's turn the assistant asks the mask decoder, which does read the image, and lets its masks decide
(``decide``):

- "Is there any water?" on one image: the mask of the question's subject at the calibrated share, or by its
  concept's presence model where calibration fitted one (``rsvlm.presence``); two dates keep the model's yes or no;
- "How many buildings?": the patches of the mask of the question's own noun (``rsvlm.answer_facts``);
- "the second largest patch of bare land in the bottom left": that one patch (``rsvlm.referring``);
- "Where could a boat be launched?": the mask an affordance builds from the concepts it reads
  (``rsvlm.affordances``), whatever phrase the model named;
- a grounded caption with no mask: the common land covers the decoder finds (``rsvlm.asked.VOCABULARY``);
- "Describe this image.", where the checkpoint says ``describe_from_land_cover``: those covers, each pixel counted
  once, in words (``rsvlm.describe``);
- a mask, boxes, oriented boxes or a place asked for and missing: cut from a mask (``rsvlm.asked``);
- a yes/no question answered without one: the model's own choice between "Yes" and "No" goes first.

Where the answer cannot depend on what the model says (a presence question naming its subject, a description
from the land covers, a count of a named noun, a request only to see where a calibrated class is, "Outline the
buildings."), the assistant does not run the model on one image at all (``answered_by_decoder``): ``decide``
starts from an empty answer.

``Turn`` holds what one turn read (its prompt, image features, reference image and its ``ImageMeta``); every mask
it decodes comes back on the source pixels through ``rsvlm.placement.to_source``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rsvlm import affordances, asked, geo, instances, presence, referring
from rsvlm.answer_facts import count_patches, speck_pixels
from rsvlm.describe import describe
from rsvlm.grounding import GRID, Box, OrientedBox, Region, normalise_phrase
from rsvlm.placement import to_source


@dataclass
class Turn:
    """One model turn's inputs: ``assistant`` (model, processor, lock), the prompt's ids, the encoded images, the
    image answered about with its ``ImageMeta``, the turn's warnings (appended to) and its valid pixel count.
    ``present``: for each phrase decoded with a presence model for its concept, whether the model finds it
    (``rsvlm.presence.model_says_present``, on the valid model-input pixels)."""

    assistant: Any
    prompt_ids: torch.Tensor
    features: Any
    reference: geo.GeoImage
    meta: Any
    warnings: list[str]
    valid: int
    present: dict[str, bool] = field(default_factory=dict)

    def decode(self, phrases: list[str]) -> list[np.ndarray]:
        """Bool masks (model-input pixels) of these phrases, one decoder pass."""
        return [p > 0.5 for p in self.probabilities(phrases)]

    def probabilities(self, phrases: list[str]) -> list[np.ndarray]:
        """The decoder's probability per model-input pixel for each phrase, one pass, calibrated so that 0.5 is
        the phrase's threshold (``rsvlm.presence.calibrated_logits``)."""
        assistant = self.assistant
        with assistant.lock, assistant.inference():
            logits = assistant.model.decode_masks(None, [0] * len(phrases), self.features, phrases)
        config = assistant.model.config
        logits = presence.calibrated_logits(logits.float(), phrases, config)
        probabilities = [np.asarray(torch.sigmoid(lg).cpu()) for lg in logits]
        models = {phrase: presence.presence_model(phrase, config) for phrase in phrases}
        if any(models.values()):
            valid = self.model_valid
            for phrase, probability in zip(phrases, probabilities):
                if models[phrase] is not None:
                    self.present[phrase] = presence.model_says_present(probability[valid], models[phrase])
        return probabilities

    @property
    def model_valid(self) -> np.ndarray:
        """Bool [S, S]: the model-input pixels of the image (not padding) that are not nodata."""
        size = self.meta.image_size
        rows, cols = self.meta.resized_height, self.meta.resized_width
        valid = np.zeros((size, size), bool)
        source = self.reference.valid
        if source is None:
            valid[:rows, :cols] = True
            return valid
        ys = np.minimum((np.arange(rows) / self.meta.scale).astype(int), source.shape[0] - 1)
        xs = np.minimum((np.arange(cols) / self.meta.scale).astype(int), source.shape[1] - 1)
        valid[:rows, :cols] = source[np.ix_(ys, xs)]
        return valid

    def there(self, phrase: str, pixels: int, valid: int, share: float) -> bool:
        """Whether ``phrase``'s mask (``pixels`` of ``valid``) is there: its presence model's answer where one read
        its probabilities this turn, else the mask covers more than ``share``."""
        if phrase in self.present:
            return self.present[phrase] and pixels > 0
        return presence.is_present(pixels, valid, share)

    def objects_mask(self, phrase: str) -> Region:
        """The mask (source pixels) of ``phrase`` with touching objects cut apart and objects too small to be one
        left out (``rsvlm.instances``): one patch per object, for counting them."""
        (probability,) = self.probabilities([phrase])
        min_pixels = instances.min_object_pixels(presence.concept_of([phrase]), self.model_gsd)
        objects = instances.separate(probability, min_pixels=min_pixels)
        return self.on_source(Region(label=phrase, mask=objects))

    @property
    def model_gsd(self) -> float | None:
        """Metres per model-input pixel (a model pixel is 1 / scale of the read image's), None without a CRS."""
        source_gsd = self.reference.gsd
        return source_gsd / self.meta.scale if source_gsd else None

    def shows(self, region: Region) -> bool:
        """Whether a mask of a calibrated concept covers its concept's share (``presence.concept_min_share``), so
        "outline the trees" finds trees exactly where "are there trees?" says yes; other masks always show."""
        label = region.label or ""
        share = presence.concept_min_share(label, self.assistant.model.config)
        if share is None or not isinstance(region.mask, np.ndarray):
            return True
        return self.there(label, int(region.mask.sum()), self.valid, share)

    def on_source(self, region: Region) -> Region:
        return to_source(region, self.reference, self.meta, self.warnings)

    def phrase_mask(self, phrase: str | None = None) -> Region | None:
        """The mask (source pixels) of ``phrase``, or of what the question is about: the model continues the turn's
        prompt with an answer forced to open with ``<p>``, and the phrase it closes prompts the decoder (None when
        it closes none)."""
        if phrase is None:
            assistant = self.assistant
            processor = assistant.processor
            opener = processor.tokenizer("<p>", add_special_tokens=False, return_tensors="pt")
            input_ids = torch.cat([self.prompt_ids, opener["input_ids"]], dim=1)
            with assistant.lock, assistant.inference():
                result = assistant.model.generate(
                    input_ids=input_ids.to(assistant.model.device),
                    attention_mask=torch.ones_like(input_ids).to(assistant.model.device),
                    image_features=self.features,
                    max_new_tokens=32,
                )
            phrase = presence.phrase_from_continuation(processor.decode(result.sequences[0]))
            if phrase is None:
                return None
        (mask,) = self.decode([phrase])
        return self.on_source(Region(label=phrase, mask=mask))

    def shapes(self, region: Region, wanted: str, every: bool) -> list[Region]:
        """Boxes or oriented boxes of the mask's patches (the largest, or every one up to ``asked.MAX_BOXES``)."""
        meta = self.meta
        out = []
        for patch in asked.patches(region.mask, asked.MAX_BOXES if every else 1):
            if wanted == "obb":
                cx, cy, w, h, angle = asked.min_area_rect(patch)
                gx, gy = meta.source_to_grid(cx, cy)
                gw, gh = meta.source_to_grid(w, h)
                shape = Region(label=region.label, obb=OrientedBox(gx, gy, gw, gh, angle))
            else:
                x1, y1, x2, y2 = asked.pixel_box(patch)
                shape = Region(
                    label=region.label, box=Box(*meta.source_to_grid(x1, y1), *meta.source_to_grid(x2, y2))
                )
            out.append(self.on_source(shape))
        return out

    def referred_patch(self, expression: referring.Reference) -> Region | None:
        """The patch ``expression`` names in the decoder's mask of its class noun (source pixels), or None."""
        (mask,) = self.decode([expression.noun])
        rows, cols = mask.shape
        height, width = self.reference.data.shape[1:]

        # Model pixels -> fractions of the read image (the model grid may be padded).
        def fraction(x: float, y: float) -> tuple[float, float]:
            sx, sy = self.meta.grid_to_source(x * GRID / cols, y * GRID / rows)
            return sx / width, sy / height

        patch = referring.select(mask, expression, fraction)
        return None if patch is None else self.on_source(Region(label=expression.noun, mask=patch))

    def afforded(self, affordance: affordances.Affordance) -> tuple[list[Region], str]:
        """The regions and text of a reasoning question (``rsvlm.affordances``): the concepts it reads, decoded in
        one pass (a concept under its share is not there), and the affordance's mask built from theirs."""
        config = self.assistant.model.config
        concepts = affordance.concepts
        phrases = [affordances.CONCEPT_PHRASES[c] for c in concepts]
        rows, cols = self.meta.resized_height, self.meta.resized_width  # the image's part of the model square
        there = {}
        for concept, phrase, mask in zip(concepts, phrases, self.decode(phrases)):
            pixels = int(mask[:rows, :cols].sum())
            if self.there(phrase, pixels, rows * cols, presence.min_share_for(phrase, config)):
                there[concept] = mask
        missing = affordance.missing(there)
        if missing:
            words = [" or ".join(affordances.CONCEPT_PHRASES[c] for c in group) for group in missing]
            return [], f"None here: I find no {', and no '.join(words)}."
        mask = affordance.select(there, 1.0 / self.model_gsd if self.model_gsd else 0.0)
        region = self.on_source(Region(label=affordance.phrase, mask=mask))
        if int(region.mask.sum()) < speck_pixels(region.mask.shape):  # a thin water's edge is an answer
            return [], f"None here: I find no {affordance.phrase.removeprefix('the ')}."
        return [region], f"Here it is: {affordance.because}."

    def grounded_regions(self) -> list[Region]:
        """The masks of ``asked.VOCABULARY`` that cover at least ``asked.GROUNDED_MIN_SHARE`` of the valid pixels,
        largest first, at most ``asked.GROUNDED_MAX`` (one decoder pass for all the phrases)."""
        phrases = list(asked.VOCABULARY)
        return self._covers(phrases, self.decode(phrases))[: asked.GROUNDED_MAX]

    def land_cover(self) -> list[Region]:
        """The image cut into ``asked.VOCABULARY``'s land covers: each pixel goes to the phrase the decoder is surest
        of among those above their threshold (trees are vegetation too, a pixel is counted once); the covers with
        at least ``asked.GROUNDED_MIN_SHARE`` of the valid pixels, largest first (one decoder pass)."""
        phrases = list(asked.VOCABULARY)
        probability = np.stack(self.probabilities(phrases))
        owner = np.where(probability.max(axis=0) > 0.5, probability.argmax(axis=0), -1)
        return self._covers(phrases, [owner == k for k in range(len(phrases))])

    def _covers(self, phrases: list[str], masks: list[np.ndarray]) -> list[Region]:
        """The phrases' masks (model-input pixels) on the source pixels, those covering at least
        ``asked.GROUNDED_MIN_SHARE`` of the valid pixels and shown (``shows``), largest first."""
        regions = []
        for phrase, mask in zip(phrases, masks):
            region = self.on_source(Region(label=phrase, mask=mask))
            if presence.is_present(
                int(region.mask.sum()), self.valid, asked.GROUNDED_MIN_SHARE
            ) and self.shows(region):
                regions.append(region)
        regions.sort(key=lambda r: -int(r.mask.sum()))
        return regions

    def forced_yes_no(self) -> str:
        """ "Yes." or "No.", whichever the model scores higher as its answer's first token."""
        assistant = self.assistant
        tokenizer = assistant.processor.tokenizer
        yes, no = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
        with assistant.lock, assistant.inference():
            logits = assistant.model.next_token_logits(self.prompt_ids, None, self.features)
        return "Yes." if logits[yes] >= logits[no] else "No."

    def cut_asked_element(
        self, wanted: str, question: str, regions: list[Region], text: str, two_dates: bool
    ) -> tuple[list[Region], str]:
        """Regions and text for an answer that lacks the ``wanted`` element: boxes cut from a mask the answer has,
        or the element cut from the mask of the class a request for every one of it names ("Mark every patch of
        bare ground"), or of the phrase the model names when asked for only that (two dates: "the changed areas",
        the phrase the change path is trained on), or of the answer's own region's label."""
        region = None
        if wanted in ("box", "obb"):
            region = next((r for r in regions if r.mask is not None and asked.has_element([r], "mask")), None)
        if region is None:
            # The user's own noun, when the request names one: the model's phrase is its guess at it.
            named = None if two_dates else (asked.every_subject(question) or requested_class(question))
            region = self.phrase_mask(asked.CHANGE_PHRASE if two_dates else named)
        if region is None:  # the model closed no phrase: the label of the answer's own region, if any
            fallback = next((r.label for r in regions if r.label), None)
            if fallback:
                region = self.phrase_mask(fallback)
        if region is None:
            return regions, text
        if not (presence.is_present(int(region.mask.sum()), self.valid) and self.shows(region)):
            return [], f"None here: I find no {normalise_phrase(region.label) or region.label}."
        if wanted in ("mask", "place"):
            return [region], "Here it is."
        shapes = self.shapes(region, wanted, asked.wants_every(question))
        return shapes, f"Here {'they are' if len(shapes) > 1 else 'it is'}."


def requested_class(question: str) -> str | None:
    """The user's noun when the question only asks to see where a class the decoder is calibrated for is
    ("Outline the buildings." -> "buildings"; ``rsvlm.presence.CONCEPTS``), else None."""
    noun = asked.class_request(question)
    if noun is None or presence.concept_of([noun]) == "other" or presence.asks_yes_no(question):
        return None
    return noun


def describes_from_land_cover(question: str, config) -> bool:
    """A plain description request (not a yes/no) that this checkpoint answers from the decoder's land covers."""
    return (
        bool(getattr(config, "describe_from_land_cover", False))
        and asked.asks_description(question)
        and not presence.asks_yes_no(question)
    )


def answered_by_decoder(question: str, config) -> bool:
    """Whether one image's answer to ``question`` is the decoder's alone, so the assistant skips the language
    model: a description ("Describe this image.", ``rsvlm.describe``) where the checkpoint's config says
    ``describe_from_land_cover``, a presence question naming its subject ("Is there any water?", whose answer
    ``decide`` writes from the subject's mask whatever the model said), a count of a named noun ("How many
    buildings?", the patches of that noun's mask whatever the model said), or a request to see a calibrated class,
    which ``decide`` answers with the mask of the user's noun whatever the model wrote (it goes to
    ``Turn.cut_asked_element`` when the model's answer has no mask, and a mask of the model's own phrase for the
    class is no better a prompt than the user's word)."""
    if describes_from_land_cover(question, config):
        return True  # described from the land covers the decoder finds (rsvlm.describe)
    if presence.asks_presence(question) and presence.question_subject(question) is not None:
        return True  # "Is there any water?": decide's yes or no and region replace whatever the model said
    if asked.asks_count(question) and asked.count_subject(question) and not presence.asks_yes_no(question):
        return True  # "How many buildings?": decide counts the patches of the noun's mask, whatever the model said
    return requested_class(question) is not None and affordances.asked_for(question) is None


def decide(
    turn: Turn, question: str, regions: list[Region], text: str, two_dates: bool, overview: bool
) -> tuple[list[Region], str]:
    """The answer's regions and text once geometry has decided what it decides (the module's list)."""
    config = turn.assistant.model.config
    share = presence.change_min_share(config) if two_dates else None
    if share is not None and presence.asks_presence(question, two_dates=True):
        # "Did it change?": the change mask's share, calibrated on validation pairs (train.calibrate --change),
        # whatever the model said; without a calibration the model's own yes or no stands.
        region = turn.phrase_mask(asked.CHANGE_PHRASE)
        if region is not None:
            changed = presence.is_present(int(region.mask.sum()), turn.valid, share)
            text = presence.change_answer_text(changed, presence.asks_absence(question))
            regions = [region] if changed else []
    if presence.asks_presence(question, two_dates) and not two_dates:
        # Whatever the model said ("No.", "None here: ...", a mask of something else), the yes or no is the
        # mask's (rsvlm.presence): of the question's own subject, or of the phrase the model names.
        region = turn.phrase_mask(presence.question_subject(question))
        if region is not None:
            min_share = presence.min_share_for(region.label, config)
            present = turn.there(region.label, int(region.mask.sum()), turn.valid, min_share)
            text = presence.answer_text(present, region.label, presence.asks_absence(question))
            regions = [region] if present else []
    if not (two_dates or overview):
        # A class mask under its concept's calibrated share is not there (Turn.shows), as a presence answer says.
        shown, hidden = [], []
        for region in regions:
            (shown if turn.shows(region) else hidden).append(region)
        regions = shown
        if hidden and not asked.has_element(regions, "mask"):
            text = f"None here: I find no {normalise_phrase(hidden[0].label) or hidden[0].label}."
    yes_no_question = presence.asks_yes_no(question)
    counting = asked.asks_count(question) and not yes_no_question
    wanted = asked.element(question) or ("mask" if counting else None)
    counted = picked = None
    affordance = None if (two_dates or overview or counting) else affordances.asked_for(question)
    if counting and not overview and asked.count_subject(question):
        # "How many buildings?": the question's own noun prompts the decoder, whatever the model's phrase;
        # buildings are objects, so touching ones are cut apart first (land covers are counted as patches).
        subject = asked.count_subject(question)
        objects = presence.concept_of([subject]) == "building"
        counted = turn.objects_mask(subject) if objects else turn.phrase_mask(subject)
    elif (
        affordance is None
        and wanted
        and not (two_dates or yes_no_question or overview or asked.wants_every(question))
    ):
        expression = referring.parse(question)
        picked = expression and turn.referred_patch(expression)
    if affordance is not None:
        # "Where could a boat be launched?": the affordance's mask from the concepts it reads, not the model's
        # phrase (a 135M LLM names "the area" there); the yes of "Is there a strip where a plane could land?"
        # is whether that mask has anything.
        regions, text = turn.afforded(affordance)
        if regions and wanted in ("box", "obb"):
            regions = turn.shapes(regions[0], wanted, asked.wants_every(question))
        if yes_no_question:
            text = f"{'Yes' if regions else 'No'}. {text}"
    elif counted is not None:
        n = count_patches(counted.mask) if turn.shows(counted) else 0
        regions = [counted] if n else []  # specks alone are not a patch: no region beside "No X found."
        text = asked.count_text(n, normalise_phrase(counted.label) or counted.label)
    elif picked is not None:
        # "the second largest patch of bare land in the bottom left": that one patch of the class's mask
        # (rsvlm.referring), as a mask or cut into the box asked for.
        regions = [picked] if wanted in ("mask", "place") else turn.shapes(picked, wanted, False)
        text = "Here it is."
    elif (
        asked.asks_grounded_caption(question)
        and not two_dates
        and not overview
        and not asked.has_element(regions, "mask")
    ):
        # A grounded description without a mask: the common land covers the decoder finds, each with its mask.
        regions = turn.grounded_regions()
        text = asked.grounded_sentence([r.label for r in regions])
    elif describes_from_land_cover(question, config) and not (two_dates or overview):
        # "Describe this image.": the land covers the decoder finds, in data_gen's caption words (rsvlm.describe).
        regions = turn.land_cover()
        text = describe(regions, turn.reference.valid)
    elif wanted and not yes_no_question and not asked.has_element(regions, wanted, overview):
        # The element asked for is missing: cut it from a mask (rsvlm.asked).
        regions, text = turn.cut_asked_element(wanted, question, regions, text, two_dates)
    if counting and not overview and counted is None:
        # "How many?" with no noun of its own: the number of patches of the returned mask, never the LLM's.
        masks = [r for r in regions if isinstance(r.mask, np.ndarray)]
        if masks:
            n = sum(count_patches(r.mask) for r in masks)
            text = asked.count_text(n, normalise_phrase(masks[0].label) or masks[0].label)
    if yes_no_question and presence.leading_yes_no(text) is None:
        # A yes/no question answered without one: the model's own choice between "Yes" and "No" goes first.
        text = f"{turn.forced_yes_no()} {text}".strip()
    return regions, text
