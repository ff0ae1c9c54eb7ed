"""Our caption path against pycocoevalcap itself on the real LEVIR-CC reference captions (slow: 50k captions).

The PTB tokens need Java (pycocoevalcap runs CoreNLP); BLEU / ROUGE-L / CIDEr-D are pycocoevalcap's pure-Python
scorers, fed the same tokens. Skipped without the data, pycocoevalcap (``pip install .[captions]``) or Java.
"""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from eval import metrics as m
from eval.ptb import ptb_text

CAPTIONS = Path(__file__).resolve().parents[2] / "../shared/data/change_captions/levir_cc_captions.json.gz"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def levir_cc() -> dict[str, list[str]]:
    if not CAPTIONS.exists():
        pytest.skip("../shared/data LEVIR-CC captions are not available")
    return json.loads(gzip.open(CAPTIONS).read())["captions"]


def test_ptb_tokens_equal_corenlps_on_every_levir_cc_caption(levir_cc):
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime")
    caps = [c for cs in levir_cc.values() for c in cs]
    java = ptb.PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    mismatches = [(c, java[i][0]) for i, c in enumerate(caps) if java[i][0] != ptb_text(c)]
    assert len(caps) > 50_000 and mismatches == []


def test_bleu_rouge_cider_equal_pycocoevalcaps_on_the_levir_cc_test_split(levir_cc):
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = [k for k in levir_cc if k.startswith("test_")][:400]
    cands = [levir_cc[k][0] for k in ids]  # the first caption scored against the other four
    refs = [levir_cc[k][1:] for k in ids]
    res = {i: [ptb_text(c)] for i, c in enumerate(cands)}
    gts = {i: [ptb_text(r) for r in rs] for i, rs in enumerate(refs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    ours = m.caption_scores(cands, refs)
    assert [ours[f"bleu{k}"] for k in range(1, 5)] == pytest.approx(bleu, abs=1e-9)
    assert ours["rouge_l"] == pytest.approx(rouge, abs=1e-9)
    assert ours["cider_d"] == pytest.approx(cider, abs=1e-9)


def test_meteor_equals_pycocoevalcaps_pipeline_on_the_levir_cc_test_split(levir_cc):
    """Our METEOR (our PTB tokens into pycocoevalcap's METEOR) against the official pipeline (CoreNLP's tokens)."""
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    from pycocoevalcap.meteor.meteor import Meteor

    if shutil.which("java") is None:
        pytest.skip("no Java runtime")
    ids = [k for k in levir_cc if k.startswith("test_")][:200]
    cands = [levir_cc[k][0] for k in ids]
    refs = [levir_cc[k][1:] for k in ids]
    tok = ptb.PTBTokenizer()
    res = tok.tokenize({i: [{"caption": c}] for i, c in enumerate(cands)})
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    official, _ = Meteor().compute_score(gts, res)
    ours = m.caption_scores(cands, refs)
    assert 0 < ours["meteor"] < 1 and ours["meteor"] == pytest.approx(official, abs=1e-9)
