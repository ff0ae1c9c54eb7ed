"""Join the two training stages into one rsvlm checkpoint (the embedded default is made this way).

    python -m train.combine --heads out/heads/best --text out/run-b/final --change out/change/best --out rsvlm/default

Stage A (``train.heads``) trained the mask decoder and phrase projector; stage B (``train.sft`` with the
``default-stage-b`` recipe) trained the projector, LoRA, the new-token rows and the rest with the mask loss off,
so neither touched the other's tensors. The result takes stage B's checkpoint and config, with stage A's
``mask_decoder.*`` and ``phrase_projector.*`` tensors; the loss weights stage B switched off are restored to the
config's defaults (they only matter to a later fine-tune). With ``--change`` (stage A2, ``train.heads --change``)
the change fusion and the decoder's pair fusion come from that checkpoint instead. The joined folder is loaded back strictly before it
replaces ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from rsvlm.atomic import atomic_path, write_text_atomic

HEAD_PREFIXES = ("mask_decoder.", "phrase_projector.")
CHANGE_PREFIXES = ("change_fusion.", "mask_decoder.pair_fuse.")
SAME_FIELDS = ("text_model", "vision_model", "mask_decoder", "image_size", "decoder_dim", "decoder_depth",
               "decoder_heads", "highres_dim", "highres_cues", "phrase_prompt")  # fmt: skip


def combine(heads: Path, text: Path, out: Path, change: Path | None = None) -> Path:
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import WEIGHTS_NAME, RSVLMForConditionalGeneration

    text_cfg = json.loads((text / "config.json").read_text())
    for other in [heads] + ([change] if change else []):
        other_cfg = json.loads((other / "config.json").read_text())
        differ = [k for k in SAME_FIELDS if other_cfg.get(k) != text_cfg.get(k)]
        if differ:
            raise ValueError(
                f"{other} and {text} were trained on different models: {', '.join(differ)} differ"
            )
    state = load_file(text / WEIGHTS_NAME)
    head_state = {k: v for k, v in load_file(heads / WEIGHTS_NAME).items() if k.startswith(HEAD_PREFIXES)}
    missing = sorted(k for k in state if k.startswith(HEAD_PREFIXES) and k not in head_state)
    if missing:
        raise ValueError(f"{heads} lacks head tensors {missing[:3]}")
    state.update(head_state)
    if change is not None:
        change_state = {
            k: v for k, v in load_file(change / WEIGHTS_NAME).items() if k.startswith(CHANGE_PREFIXES)
        }
        if not change_state:
            raise ValueError(f"{change} has no change-path tensors ({', '.join(CHANGE_PREFIXES)})")
        state.update(change_state)
    defaults = RSVLMConfig()
    text_cfg.update(bce_weight=defaults.bce_weight, dice_weight=defaults.dice_weight)

    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    # A training checkpoint also holds optimizer, scheduler and trainer state: only the model's files are kept.
    training_files = ("optimizer.*", "scheduler.json", "trainer_state.json", "metrics.jsonl")
    shutil.copytree(text, tmp, ignore=shutil.ignore_patterns(WEIGHTS_NAME, "config.json", *training_files))
    with atomic_path(tmp / WEIGHTS_NAME) as path:
        save_file(state, str(path), metadata={"format": "pt", "model_type": "rsvlm"})
    write_text_atomic(tmp / "config.json", json.dumps(text_cfg, indent=2) + "\n")
    RSVLMForConditionalGeneration.from_pretrained(tmp)  # strict: every trainable key present, none extra
    keep = [p for p in out.glob("*") if p.suffix == ".md"] if out.is_dir() else []
    for path in keep:  # the model card is written by hand and stays
        shutil.copy2(path, tmp / path.name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.combine", description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", required=True, help="stage A checkpoint (train.heads --out DIR/best)")
    p.add_argument("--text", required=True, help="stage B checkpoint (rsvlm train ... --out DIR/final)")
    p.add_argument("--change", default=None, help="stage A2 checkpoint (train.heads --change --out DIR/best)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        change = Path(args.change) if args.change else None
        out = combine(Path(args.heads), Path(args.text), Path(args.out), change)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"combined checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
