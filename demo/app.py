"""The Gradio chat: upload a GeoTIFF (or two dates), ask, see the answer's regions on the map, download them.

    rsvlm serve [--model default|PATH] [--host 127.0.0.1] [--port 7860] [--share false]
    python -m demo.app --model path/to/checkpoint

``build_demo(assistant)`` builds the UI around a loaded ``Assistant`` (tests pass a tiny one). Each browser
session gets its own ``Session`` (in a ``gr.State``), so concurrent users never see each other's conversation;
the assistant's lock runs one generation at a time. The event handlers are methods of ``ChatApp`` so tests can
drive them without a browser. Nothing here knows about models or geometry beyond calling the assistant and
drawing its answer (``demo.render``).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads this once
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from demo import render  # noqa: E402
from rsvlm import geo  # noqa: E402
from rsvlm.assistant import Answer, Assistant, Session  # noqa: E402

logger = logging.getLogger(__name__)

AUTO_BANDS = "auto"
EXAMPLES = [
    "Describe this image.",
    "Outline the buildings.",
    "Where are the roads? Give boxes.",
    "How much of the image is covered by trees?",
    "What changed between the two dates?",
]
TABLE_HEADERS = ["#", "label", "shape", "area m²", "area ha"]
FILE_TYPES = [".tif", ".tiff", ".png", ".jpg", ".jpeg"]


@dataclass
class ChatState:
    """One browser session: its conversation, its images, and a temp folder for its downloads."""

    session: Session
    folder: Path
    paths: list[str] = field(default_factory=list)
    bands: str | list[int] | None = None
    dates: tuple[str, str] | None = None
    pending: bool = False  # new images not yet handed to the session (they go with the next question)
    previews: list[geo.GeoImage] = field(default_factory=list)
    turns: int = 0

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _close_state(state: ChatState | None) -> None:
    if state is not None:
        state.close()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _error_message(error: BaseException) -> dict[str, str]:
    return {"role": "assistant", "content": f"⚠️ {_one_line(error)}"}


class ChatApp:
    """The event handlers, bound to one assistant; every per-user thing lives in the ``ChatState`` passed in."""

    def __init__(self, assistant: Assistant, max_new_tokens: int = 128):
        self.assistant = assistant
        self.max_new_tokens = max_new_tokens

    def new_state(self) -> ChatState:
        return ChatState(
            session=self.assistant.session(), folder=Path(tempfile.mkdtemp(prefix="rsvlm-demo-"))
        )

    # --------------------------------------------------------------------------------------------------------
    def upload(
        self, files, bands: str | None, date1: str, date2: str, chat: list | None, state: ChatState | None
    ):
        """New image(s) or band preset: read a preview, start a new conversation. A bad file is a chat line.

        Returns (state, preview, chat, table, geojson button, mask button, warnings).
        """
        state = state or self.new_state()
        chat = list(chat or [])
        paths = [_file_path(f) for f in (files if isinstance(files, list) else [files] if files else [])]
        cleared = (None, [], gr.update(visible=False), gr.update(visible=False))
        if not paths:
            state.paths, state.previews, state.pending = [], [], False
            return state, *cleared[:1], chat, *cleared[1:], ""
        try:
            if len(paths) > 2:
                raise ValueError(
                    f"give one image, or two dates for change questions (got {len(paths)} files)"
                )
            preset = None if not bands or bands == AUTO_BANDS else bands
            previews = [render.read_preview(p, preset) for p in paths]
        except (
            ValueError,
            OSError,
        ) as error:  # RasterError is a ValueError: a one-line message, no traceback
            state.paths, state.previews, state.pending = [], [], False
            return state, None, [*chat, _error_message(error)], *cleared[1:], ""
        state.paths, state.previews, state.bands, state.pending = paths, previews, preset, True
        labels = (date1.strip() or "date 1", date2.strip() or "date 2")
        state.dates = labels if len(paths) == 2 and (date1.strip() or date2.strip()) else None
        names = ", ".join(Path(p).name for p in paths)
        note = {"role": "assistant", "content": f"Loaded {names}. {self._describe(previews)} Ask a question."}
        warnings = [w for p in previews for w in p.warnings]
        return state, self._preview(state), [note], *cleared[1:], _warnings_md(warnings)

    def ask(self, question: str, chat: list | None, state: ChatState | None):
        """Stream one answer into the chat, then draw its regions and offer its downloads.

        Yields (chat, preview, table, geojson button, mask button, warnings, state, question box).
        """
        state = state or self.new_state()
        chat = list(chat or [])
        keep = (gr.update(), gr.update(), gr.update(), gr.update(), gr.update())
        question = (question or "").strip()
        if not question:
            yield [*chat, _error_message(ValueError("the question is empty"))], *keep, state, ""
            return
        if not state.paths:
            error = ValueError("upload an image (GeoTIFF, PNG or JPEG) first")
            yield [*chat, {"role": "user", "content": question}, _error_message(error)], *keep, state, ""
            return
        chat = [*chat, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield list(chat), *keep, state, ""

        pieces: queue.Queue[str] = queue.Queue()
        outcome: dict[str, Any] = {}
        images = list(state.paths) if state.pending else None

        def work() -> None:
            try:
                outcome["answer"] = state.session.ask(
                    question,
                    images=images,
                    bands=state.bands,
                    dates=state.dates,
                    max_new_tokens=self.max_new_tokens,
                    streamer=pieces.put,
                )
            except Exception as error:  # shown as one line; the app keeps serving
                outcome["error"] = error

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        streamed = ""
        while worker.is_alive() or not pieces.empty():
            try:
                streamed += pieces.get(timeout=0.1)
            except queue.Empty:
                continue
            chat[-1] = {"role": "assistant", "content": streamed}
            yield list(chat), *keep, state, ""  # a copy: the handler keeps growing its own list
        worker.join()

        if "error" in outcome:
            error = outcome["error"]
            if not isinstance(error, (ValueError, OSError)):
                logger.exception("the assistant failed", exc_info=error)
            chat[-1] = _error_message(error)
            yield chat, *keep, state, ""
            return
        state.pending = False
        answer: Answer = outcome["answer"]
        state.turns += 1
        chat[-1] = {"role": "assistant", "content": answer.text or "(no text)"}
        geojson, mask = self._downloads(answer, state)
        yield (
            chat,
            self._preview(state, answer),
            _table(answer),
            gr.update(value=geojson, visible=geojson is not None),
            gr.update(value=mask, visible=mask is not None),
            _warnings_md(answer.warnings),
            state,
            "",
        )

    def clear(self, state: ChatState | None):
        """A fresh conversation on the same image(s)."""
        if state is not None:
            state.session.reset()
        return [], _table(None), gr.update(visible=False), gr.update(visible=False), "", state

    # --------------------------------------------------------------------------------------------------------
    def _preview(self, state: ChatState, answer: Answer | None = None) -> np.ndarray | None:
        if not state.previews:
            return None
        arrays = [render.to_uint8(p) for p in state.previews]
        if answer is not None and answer.regions:
            # regions are on the reference image: the later date of a pair
            reference = state.previews[-1]
            scale = reference.scale / render.display_factor(reference)
            arrays[-1] = render.draw_regions(arrays[-1], answer.regions, scale=scale)
        if len(arrays) == 1:
            return arrays[0]
        labels = state.dates or tuple(Path(p).stem for p in state.paths)
        return render.side_by_side(arrays, labels)

    @staticmethod
    def _describe(previews: list[geo.GeoImage]) -> str:
        first = previews[0]
        height, width = first.source_shape or first.data.shape[1:]
        crs = first.crs.to_string() if first.crs else "no CRS (pixels only)"
        gsd = f", ~{first.gsd:.2f} m/pixel" if first.gsd else ""
        return f"{width} × {height} px, {first.count} band(s), {crs}{gsd}."

    @staticmethod
    def _downloads(answer: Answer, state: ChatState) -> tuple[str | None, str | None]:
        """The answer's GeoJSON and mask GeoTIFF in the session's folder (both written atomically by rsvlm)."""
        geojson = mask = None
        features = answer.geojson_features()
        if features:
            geojson = str(geo.write_geojson(state.folder / f"answer_{state.turns}.geojson", features))
        if answer.crs and any(r.mask is not None for r in answer.regions):
            path = state.folder / f"answer_{state.turns}_masks.tif"
            try:
                answer.write_mask_geotiff(path)
                mask = str(path)
            except ValueError as error:
                answer.warnings.append(_one_line(error))
        return geojson, mask


def _file_path(value) -> str:
    """gr.File hands a path (str) in Gradio 6; older clients a FileData-like object."""
    return value if isinstance(value, str) else str(getattr(value, "path", None) or value.name)


def _table(answer: Answer | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for index, region in enumerate(answer.regions if answer else []):
        kind = "mask" if region.mask is not None else "oriented box" if region.pixel_polygon else "box"
        area = region.area_m2
        rows.append(
            [
                index + 1,
                region.label,
                kind,
                None if area is None else round(area, 1),
                None if area is None else round(area / 10_000, 4),
            ]
        )
    return rows


def _warnings_md(warnings: list[str]) -> str:
    return "\n".join(f"- ⚠️ {w}" for w in dict.fromkeys(warnings))


# ------------------------------------------------------------------------------------------------------------
def build_demo(assistant: Assistant, max_new_tokens: int = 128) -> gr.Blocks:
    """The chat UI around a loaded assistant (no model is loaded here)."""
    app = ChatApp(assistant, max_new_tokens=max_new_tokens)
    presets = [AUTO_BANDS, *geo.preset_names()]
    with gr.Blocks(title="rsvlm: ask a satellite image", analytics_enabled=False) as demo:
        demo.chat_app = app  # tests reach the handlers through the built demo
        state = gr.State(None, delete_callback=_close_state)
        gr.Markdown(
            "## rsvlm — ask a satellite or aerial image\nUpload one GeoTIFF / PNG / JPEG, or two dates of the "
            "same place for change questions. Regions come back on the map and as GeoJSON (EPSG:4326)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(
                    label="Image (or two dates)", file_count="multiple", file_types=FILE_TYPES, height=120
                )
                with gr.Row():
                    bands = gr.Dropdown(presets, value=AUTO_BANDS, label="Band preset")
                    date1 = gr.Textbox(label="Date 1 label", placeholder="e.g. 2009")
                    date2 = gr.Textbox(label="Date 2 label", placeholder="e.g. 2020")
                preview = gr.Image(label="Preview and regions", interactive=False, format="png", height=460)
                table = gr.Dataframe(
                    headers=TABLE_HEADERS, label="Regions", interactive=False, max_height=240
                )
                with gr.Row():
                    geojson = gr.DownloadButton("GeoJSON (EPSG:4326)", visible=False, size="sm")
                    mask = gr.DownloadButton("Mask GeoTIFF", visible=False, size="sm")
            with gr.Column(scale=1):
                chat = gr.Chatbot(label="Chat", height=520)
                question = gr.Textbox(label="Question", placeholder="Ask about the image…", lines=1)
                with gr.Row():
                    send = gr.Button("Ask", variant="primary")
                    clear = gr.Button("New conversation")
                with gr.Row():
                    examples = [gr.Button(text, size="sm") for text in EXAMPLES]
                warnings = gr.Markdown()

        upload_inputs = [files, bands, date1, date2, chat, state]
        upload_outputs = [state, preview, chat, table, geojson, mask, warnings]
        files.change(app.upload, upload_inputs, upload_outputs)
        bands.change(app.upload, upload_inputs, upload_outputs)
        ask_outputs = [chat, preview, table, geojson, mask, warnings, state, question]
        question.submit(app.ask, [question, chat, state], ask_outputs)
        send.click(app.ask, [question, chat, state], ask_outputs)
        clear.click(app.clear, [state], [chat, table, geojson, mask, warnings, state])
        for button in examples:
            button.click(lambda text=button.value: text, None, question)
    return demo


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rsvlm serve", description="Start the Gradio chat.")
    parser.add_argument(
        "--model", default="default", help="'default' (the embedded model) or a checkpoint folder"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for the LAN)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--share", type=_bool, default=False, help="true: a public gradio.live link (needs internet)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    return parser.parse_args(argv)


def _bool(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    """Load the assistant, then serve until interrupted. A bad --model is one line on stderr, exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        assistant = Assistant.from_pretrained(args.model)
    except (ValueError, OSError) as error:
        print(f"rsvlm serve: {_one_line(error)}", file=sys.stderr)
        return 2
    demo = build_demo(assistant, max_new_tokens=args.max_new_tokens)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
