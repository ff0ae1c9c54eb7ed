"""The embedded default's recipe on tiny models: corpus data -> stage A (heads) -> stage B data -> combine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.train.conftest import make_dataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A one-source corpus (``ds``: the tiny landcover.ai scene) and its recipe."""
    root = tmp_path_factory.mktemp("corpus")
    make_dataset(root)
    recipe = root / "corpus.yaml"
    recipe.write_text(
        yaml.safe_dump({"sources": {"ds": {"gen": {"labels": "l.tif", "taxonomy": "landcover.ai"}}}})
    )
    return root, recipe


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory, tiny_llm_dir, tiny_vit_dir) -> Path:
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("init")
    RSVLMForConditionalGeneration(RSVLMConfig.tiny(str(tiny_llm_dir), str(tiny_vit_dir))).save_pretrained(
        path
    )
    return path


@pytest.fixture(scope="module")
def pair_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A one-source corpus of two-date tiles (``pairs``): date 2 has a new building where date 1 had grass."""
    from data_gen.config import GenConfig
    from data_gen.driver import build_dataset
    from tests.train.conftest import scene_labels, scene_rgb, write_raster

    root = tmp_path_factory.mktemp("pairs")
    lab = scene_labels()
    lab2 = lab.copy()
    lab2[70:78, 64:86] = 1
    for name, labels in (("1", lab), ("2", lab2)):
        write_raster(root / "scene" / f"image{name}.tif", scene_rgb(labels))
        write_raster(root / "scene" / f"labels{name}.tif", labels)
    cfg = GenConfig(image=str(root / "scene" / "image1.tif"), image2=str(root / "scene" / "image2.tif"),
                    labels=str(root / "scene" / "labels1.tif"), labels2=str(root / "scene" / "labels2.tif"),
                    taxonomy="landcover.ai", tile_size=64, block_size=1, split_fractions=(0.5, 0.5, 0.0),
                    tasks=("change",), out=str(root / "pairs"))  # fmt: skip
    build_dataset(cfg)
    recipe = root / "corpus.yaml"
    recipe.write_text(yaml.safe_dump({"sources": {"pairs": {"gen": {"image2": "b.tif"}}}}))
    return root, recipe


def run_heads(corpus, init, out: Path, steps: int, *extra: str) -> None:
    from train.heads import main

    root, recipe = corpus
    args = ["--corpus", str(root), "--recipe", str(recipe), "--init", str(init), "--out", str(out),
            "--max-steps", str(steps), "--eval-every", "2", "--log-every", "1", "--batch", "2", "--variants", "2",
            "--threads", "1", "--warmup", "1", *extra]  # fmt: skip
    assert main(args) == 0


def test_dense_labels_give_positives_and_negatives(corpus):
    from train.heads_data import collect_tiles

    root, recipe = corpus
    tiles = collect_tiles(root, yaml.safe_load(recipe.read_text()), {"train", "validation"})
    assert len(tiles) == 4
    concepts = {(t.concept, t.positive) for tile in tiles for t in tile.targets}
    assert ("building", True) in concepts and ("water", True) in concepts
    assert any(not positive for _, positive in concepts)  # a class absent from a tile is an empty target


def test_building_cores_keep_one_core_per_object_and_part_objects_that_the_outline_joins(corpus):
    from scipy import ndimage

    from train.heads_data import CORE_PHRASE, Target, collect_tiles, core_target

    mask = np.zeros((40, 40), bool)
    mask[2:20, 2:20] = True  # a square house
    mask[25:31, 2:38] = True  # a long shed
    mask[35, 5] = True  # one pixel
    core = core_target(Target(mask, ["building"], "building")).mask
    assert not (core & ~mask).any()
    assert ndimage.label(core, structure=np.ones((3, 3)))[1] == 3  # one core per object, the pixel its own
    joined = ndimage.binary_dilation(mask, iterations=3)  # an outline that joins house and shed
    assert ndimage.label(joined, structure=np.ones((3, 3)))[1] == 1  # counted by its patches: 1
    root, recipe = corpus
    tiles = collect_tiles(root, yaml.safe_load(recipe.read_text()), {"train"}, cores=True)
    for tile in tiles:
        buildings = [t for t in tile.targets if t.concept == "building"]
        cores = [t for t in tile.targets if t.concept == "building_core"]
        assert len(cores) == len(buildings) and all(c.phrases == [CORE_PHRASE] for c in cores)
        assert all(c.positive == b.positive for c, b in zip(cores, buildings))


def test_concept_balance_draws_the_rare_concept_as_often_as_the_common_one():
    import random
    from types import SimpleNamespace

    import numpy as np

    from train.heads import sample_batch, sampling_pools
    from train.heads_data import Target, TileTargets

    full, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    common = [TileTargets(f"b{k}", "city", "train", np.zeros((4, 4, 3), np.uint8),
                          [Target(full, ["building"], "building"), Target(empty, ["trees"], "tree")])
              for k in range(30)]  # fmt: skip
    rare = [
        TileTargets("t0", "forest", "train", np.zeros((4, 4, 3), np.uint8), [Target(full, ["trees"], "tree")])
    ]
    tiles = common + rare
    items = SimpleNamespace(sources=[t.source for t in tiles], tile_index=list(range(len(tiles))))

    def tree_positives(balance):
        pools = sampling_pools(items, tiles, balance)
        _, targets = sample_batch(items, tiles, random.Random(0), 400, 1, pools)
        return sum(t.concept == "tree" and t.positive for t in targets) / len(targets)

    assert tree_positives("source") < 0.3  # sqrt(30) vs sqrt(1): the forest tile is drawn ~15 % of the time
    assert 0.4 < tree_positives("concept") < 0.6  # half the renderings are anchored on a tree positive
    pools = sampling_pools(items, tiles, "concept")
    _, targets = sample_batch(items, tiles, random.Random(0), 400, 1, pools, {"tree": 3.0})
    weighted = sum(t.concept == "tree" and t.positive for t in targets) / len(targets)
    assert 0.65 < weighted < 0.85  # tree=3 against building=1: three renderings in four


def test_concept_weight_reads_concept_equals_weight_and_refuses_the_rest():
    import argparse

    from train.heads import concept_weight

    assert concept_weight("tree=2") == ("tree", 2.0)
    for bad in ("trees=2", "tree", "tree=0", "tree=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="CONCEPT=W"):
            concept_weight(bad)


def test_share_auc_is_the_chance_a_present_target_outranks_an_absent_one():
    from train.heads import rank_auc, summarise

    assert rank_auc([0.3, 0.5], [0.1, 0.2]) == 1.0
    assert rank_auc([0.1], [0.1, 0.2]) == 0.25  # one tie (half), one loss
    entry = lambda positive, share: (positive, 1.0, 0.0, positive, (0, 0, 0, 1), share)  # noqa: E731
    rows = {("oscd", "change"): [entry(True, 0.0), entry(True, 0.3), entry(False, 0.2), entry(False, 0.4)]}
    assert summarise(rows)["by_concept"]["change"]["share_auc"] == 0.25


def test_stage_a_trains_only_the_heads_and_keeps_the_best(corpus, init_checkpoint, tmp_path):
    run_heads(corpus, init_checkpoint, tmp_path / "a", 4)
    before = load_file(init_checkpoint / "model.safetensors")
    after = load_file(tmp_path / "a" / "best" / "model.safetensors")
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"mask_decoder", "phrase_projector"}
    report = json.loads((tmp_path / "a" / "best" / "validation.json").read_text())
    assert 0 <= report["score"] <= 1 and "building" in report["by_concept"]


def test_stage_a_resumes_to_the_same_weights(corpus, init_checkpoint, tmp_path):
    run_heads(corpus, init_checkpoint, tmp_path / "once", 4)
    run_heads(
        corpus, init_checkpoint, tmp_path / "twice", 4, "--stop-after", "3"
    )  # a sitting stopped at step 3
    run_heads(corpus, init_checkpoint, tmp_path / "twice", 4)  # resumes from its step-3 checkpoint
    a = load_file(tmp_path / "once" / "checkpoints" / "step-000004" / "model.safetensors")
    b = load_file(tmp_path / "twice" / "checkpoints" / "step-000004" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_change_pairs_keep_both_dates_and_their_change_mask(pair_corpus):
    from train.heads_data import collect_pairs

    root, recipe = pair_corpus
    tiles = collect_pairs(root, yaml.safe_load(recipe.read_text()), {"train", "validation"})
    assert len(tiles) == 4 and all(t.image.shape == (2, 64, 64, 3) for t in tiles)
    changed = [t for t in tiles if t.targets[0].positive]
    assert len(changed) == 1 and changed[0].targets[0].mask.sum() == 8 * 22  # the new building, in one tile
    assert all(len(t.targets) == 1 and t.targets[0].concept == "change" for t in tiles)


def test_stage_a2_trains_only_the_change_path(pair_corpus, init_checkpoint, tmp_path):
    run_heads(pair_corpus, init_checkpoint, tmp_path / "c", 3, "--change")
    before = load_file(init_checkpoint / "model.safetensors")
    after = load_file(tmp_path / "c" / "best" / "model.safetensors")
    changed = {k.rsplit(".", 1)[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("change_fusion.", "mask_decoder.pair_fuse")) for k in changed), (
        changed
    )
    report = json.loads((tmp_path / "c" / "best" / "validation.json").read_text())
    assert (
        set(report["by_concept"]) == {"change"}
        and report["score"] == report["by_concept"]["change"]["f1_pooled"]
    )


def test_stage_b_rows_lose_quantity_turns_with_their_masks():
    from train.answers import rewrite_row

    row = {
        "conversations": [
            {"role": "user", "content": "<image>\nHow big is the water?"},
            {
                "role": "assistant",
                "content": "Water covers 3,072 m², about a third (34 %): <p>water</p> [SEG]",
            },
            {"role": "user", "content": "Outline the trees."},
            {"role": "assistant", "content": "<p>trees</p> [SEG], about a tenth (9 %) of the tile"},
        ],
        "masks": ["water-mask", "tree-mask"],
        "meta": json.dumps({"types": ["area", "refer_seg"], "facts": []}),
        "task": "vqa",
    }
    new = rewrite_row(row, max_turns=2)
    assert new["conversations"] == [
        {"role": "user", "content": "<image>\nOutline the trees."},
        {"role": "assistant", "content": "<p>trees</p> [SEG], about a tenth of the tile"},
    ]
    assert new["masks"] == ["tree-mask"] and json.loads(new["meta"])["types"] == ["refer_seg"]
    only_quantities = {**row, "meta": json.dumps({"types": ["area", "count"]})}
    assert rewrite_row(only_quantities, max_turns=2) is None


def test_combine_takes_the_heads_of_stage_a_and_the_rest_of_stage_b(corpus, init_checkpoint, tmp_path):
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration
    from train.combine import combine

    run_heads(corpus, init_checkpoint, tmp_path / "a", 2)
    config = json.loads((init_checkpoint / "config.json").read_text())
    config.pop("architectures", None)
    torch.manual_seed(1)
    text = RSVLMForConditionalGeneration(RSVLMConfig(**{**config, "bce_weight": 0.0}))
    text.save_pretrained(tmp_path / "b")
    torch.manual_seed(2)
    RSVLMForConditionalGeneration(RSVLMConfig(**config)).save_pretrained(
        tmp_path / "c"
    )  # a stage A2 stand-in
    out = combine(tmp_path / "a" / "best", tmp_path / "b", tmp_path / "default", change=tmp_path / "c")
    joined, heads, rest, change = (
        load_file(p / "model.safetensors")
        for p in (out, tmp_path / "a" / "best", tmp_path / "b", tmp_path / "c")
    )
    for key, value in joined.items():
        if key.startswith(("change_fusion.", "mask_decoder.pair_fuse.")):
            source = change
        elif key.startswith(("mask_decoder.", "phrase_projector.")):
            source = heads
        else:
            source = rest
        assert torch.equal(value, source[key]), key
    assert json.loads((out / "config.json").read_text())["bce_weight"] == RSVLMConfig().bce_weight


def _scored(share: float, yes: bool, concept: str = "water", inside: float = 0.9):
    """A calibration target of 1,000 pixels whose first ``share`` of pixels have probability ``inside`` (the rest
    0.05) and, for a yes, are the truth too."""
    from train.calibrate import Scored

    n = round(share * 1000)
    probability = np.full(1000, 0.05, np.float32)
    probability[:n] = inside
    truth = np.zeros(1000, bool)
    if yes:
        truth[: max(n, 20)] = True
    return Scored(probability, truth, concept)


def test_calibration_picks_the_share_that_separates_yes_from_no():
    from train.calibrate import best_share

    targets = [_scored(0.015, False)] * 20 + [_scored(0.0, False)] * 20
    targets += [_scored(0.04, True)] * 30 + [_scored(0.3, True)] * 10
    share, scores = best_share(targets)
    assert share == 0.02 and scores[share] == 1.0 and scores[0.001] < 1.0


def test_change_calibration_reaches_the_shares_an_unchanged_pair_shows():
    """Unchanged pairs that look different light up more of a change map than strays do of a class mask: the
    change share may lie above every class candidate, and its cross-validated accuracy is reported beside it."""
    from train.calibrate import CANDIDATES, calibrate_change

    targets = [_scored(0.1, False, "change")] * 20 + [_scored(0.3, True, "change")] * 20
    share, scores, cross_validated = calibrate_change(targets)
    assert share > max(CANDIDATES) and scores[share] == 1.0 and scores[max(CANDIDATES)] == 0.5
    assert cross_validated == 1.0


def test_calibration_per_concept_picks_a_pixel_threshold_and_a_share():
    from train.calibrate import calibrate_concepts

    # Roads leave many stray pixels; trees are found, but at probability 0.35 (unsure), so 0.5 finds none.
    road = [_scored(0.04, False, "road")] * 20 + [_scored(0.1, True, "road")] * 20
    tree = [_scored(0.0, False, "tree")] * 20 + [_scored(0.2, True, "tree", inside=0.35)] * 20
    few = [_scored(0.5, True, "water")] * 3
    calibrated = calibrate_concepts(road + tree + few, min_each=15)
    assert sorted(calibrated) == ["road", "tree"]
    assert calibrated["road"].share == 0.05 and calibrated["road"].threshold == 0.5  # ties keep 0.5
    assert calibrated["tree"].threshold <= 0.3 and calibrated["tree"].giou == 1.0
    assert calibrated["tree"].giou_uncalibrated == 0.5  # only the empty targets right at 0.5


def test_the_presence_model_tells_sure_pixels_from_as_many_stray_ones():
    """Yes tiles have a few pixels the decoder is sure of; no tiles as many pixels just over the threshold. One share
    cannot tell them apart; the presence model, reading how sure the pixels are, does."""
    from rsvlm.presence import model_says_present
    from train.calibrate import best_share, calibrated_probability, fit_presence_model

    rng = np.random.default_rng(0)

    def target(yes: bool):
        from train.calibrate import Scored

        probability = rng.uniform(0.0, 0.2, 1000).astype(np.float32)
        share = rng.uniform(0.005, 0.03)
        n = round(share * 1000)
        probability[:n] = rng.uniform(0.9, 1.0, n) if yes else rng.uniform(0.55, 0.7, n)
        truth = np.zeros(1000, bool)
        truth[:n] = yes
        return Scored(probability, truth, "tree")

    targets = [target(i % 2 == 0) for i in range(80)]
    _, scores = best_share(targets)
    assert max(scores.values()) < 0.8  # the share alone is little better than a coin
    model, strength, accuracy = fit_presence_model(targets, threshold=0.5)
    assert accuracy > 0.95 and strength in (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
    held_out = [target(i % 2 == 0) for i in range(40)]
    said = [model_says_present(calibrated_probability(t.probability, 0.5), model) for t in held_out]
    assert sum(s == t.yes for s, t in zip(said, held_out)) >= 38
    assert not model_says_present(np.full(100, 0.4), model)  # no pixel above threshold: never there


def test_calibrated_probability_moves_the_threshold_to_one_half():
    from train.calibrate import calibrated_probability

    shifted = calibrated_probability(np.array([0.3, 0.35, 0.4]), 0.35)
    assert shifted[0] < 0.5 and abs(shifted[1] - 0.5) < 1e-9 and shifted[2] > 0.5


def test_calibrated_logits_move_each_phrases_threshold_to_zero():
    from types import SimpleNamespace

    from rsvlm import presence

    config = SimpleNamespace(mask_threshold_by_concept={"tree": 0.3})
    logits = torch.logit(torch.tensor([[0.35, 0.25], [0.35, 0.25]]))
    shifted = presence.calibrated_logits(logits, ["the trees", "water"], config)
    assert (shifted[0] > 0).tolist() == [True, False]  # trees at 0.3
    assert torch.equal(shifted[1], logits[1])  # water: no threshold of its own, 0.5
    assert presence.calibrated_logits(logits, ["a", "b"], SimpleNamespace()) is logits


def test_presence_uses_the_concepts_share_then_the_global_one():
    from types import SimpleNamespace

    from rsvlm import presence

    config = SimpleNamespace(presence_min_share=0.03, presence_min_share_by_concept={"road": 0.005})
    assert presence.min_share_for("the roads", config) == 0.005
    assert presence.min_share_for("water", config) == 0.03
    assert presence.min_share_for("water", SimpleNamespace()) == presence.MIN_SHARE


def test_calibrate_writes_presence_models_and_the_evaluation_reads_them(
    corpus, init_checkpoint, tmp_path, capsys
):
    """``train.calibrate`` writes thresholds, shares and the presence models that beat the share rule into the
    checkpoint's config.json; ``train.heads --evaluate`` empties a mask its concept's presence model says is not
    there."""
    import shutil

    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.presence import presence_features, presence_model
    from train.calibrate import main as calibrate
    from train.heads import main as heads

    model = tmp_path / "model"
    shutil.copytree(init_checkpoint, model)
    root, recipe = corpus
    args = ["--model", str(model), "--corpus", str(root), "--recipe", str(recipe), "--split", "train"]
    assert calibrate([*args, "--min-per-concept", "1"]) == 0
    config = json.loads((model / "config.json").read_text())
    concepts = sorted(config["mask_threshold_by_concept"])
    assert concepts and set(config["presence_model_by_concept"]) <= set(concepts)
    printed = capsys.readouterr().out
    for concept in concepts:
        chosen = "presence model" if concept in config["presence_model_by_concept"] else "share rule"
        assert f"-> {chosen}" in printed.split(f"  {concept} ")[1].split("\n")[1]
    # A presence model that never finds the concept: every mask of it goes, so no positive is outlined.
    concept = concepts[0]
    n = len(presence_features(np.zeros(3)))
    never = {"mean": [0.0] * n, "scale": [1.0] * n, "weight": [0.0] * n, "bias": -1.0}
    config["presence_model_by_concept"] = {concept: never}
    (model / "config.json").write_text(json.dumps(config))
    phrase = {"building": "buildings", "water": "water", "tree": "trees", "road": "roads"}[concept]
    assert presence_model(phrase, RSVLMConfig.from_pretrained(model)) == never
    report = tmp_path / "report.json"
    evaluate = ["--evaluate", str(model), "--corpus", str(root), "--recipe", str(recipe), "--split", "train"]
    assert heads([*evaluate, "--report", str(report), "--threads", "1"]) == 0
    scored = json.loads(report.read_text())["by_concept"][concept]
    assert scored["positives"] > 0 and scored["giou_pos"] == 0.0
