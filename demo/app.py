"""The Gradio chat: upload a GeoTIFF (or two dates), ask, watch the answer come, see its regions, download them.

    rsvlm serve [--model default|PATH] [--host 127.0.0.1] [--port 7860] [--max-file-size 1gb] [--share false]
    python -m demo.app --model path/to/checkpoint

``build_demo(assistant)`` lays out the page around a loaded ``Assistant`` (tests pass a tiny one) and wires one
public API endpoint per user action — ``/load``, ``/ask``, ``/export``, ``/reset`` — every other event
(gallery, suggestions, Stop, band options) is private. The handlers are ``demo.chat.ChatApp``; per-session
state and private folders ``demo.sessions``; uploads ``demo.uploads``; drawing ``demo.render``; the files
``demo.exports``; the gallery ``demo.examples``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads this once
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from demo import examples  # noqa: E402
from demo.chat import DEFAULT_TIME_BUDGET_S, DEFAULT_WINDOW_BUDGET, ChatApp  # noqa: E402
from demo.exports import TABLE_HEADERS  # noqa: E402
from demo.uploads import AUTO_BANDS, DEFAULT_MAX_FILE_SIZE, FILE_TYPES, one_line, parse_size  # noqa: E402
from rsvlm import geo  # noqa: E402
from rsvlm.assistant import Assistant  # noqa: E402

logger = logging.getLogger(__name__)
PRIVATE = {"api_visibility": "private"}
CSS = """
#status p { margin: 0; font-size: 0.9em; }
#gallery .caption-label { font-size: 0.85em; }
"""


def build_demo(
    assistant: Assistant,
    max_new_tokens: int = 128,
    *,
    checkpoint: str = "default",
    max_file_size: int | None = None,
) -> gr.Blocks:
    """The chat UI around a loaded assistant (no model is loaded here)."""
    app = ChatApp(
        assistant, checkpoint=checkpoint, max_new_tokens=max_new_tokens, max_file_size=max_file_size
    )
    # Gradio's own cache (display PNGs, download copies) is swept hourly; uploads never stay in it (demo.uploads).
    with gr.Blocks(
        title="rsvlm: ask a satellite image", analytics_enabled=False, delete_cache=(600, 3600)
    ) as demo:
        demo.chat_app = app  # tests reach the handlers through the built demo
        gr.Markdown(
            "### rsvlm — ask a satellite or aerial image\nUpload one GeoTIFF / PNG / JPEG (or two dates of the "
            "same place for change questions), or click an example. Regions come back on the map, in the table "
            "and as GeoJSON (EPSG:4326), mask GeoTIFF and CSV."
        )
        status = gr.Markdown(app.status(None), label="Status", elem_id="status")
        gallery = gr.Gallery(
            [examples.thumbnail(e) for e in examples.EXAMPLES],
            label="Examples: click one to load it and ask its question",
            columns=len(examples.EXAMPLES),
            rows=1,
            height=132,
            allow_preview=False,
            buttons=[],
            object_fit="cover",
            elem_id="gallery",
        )
        with gr.Row():
            with gr.Column(scale=5):
                files = gr.File(label="Images", file_count="multiple", file_types=FILE_TYPES, height=80)
                view = gr.Image(label="Map", interactive=False, format="png", height=290)
                slider = gr.ImageSlider(
                    label="Before / after",
                    interactive=False,
                    format="png",
                    max_height=290,
                    visible=False,
                )
                # The table before the downloads, a short file list and map: at 1400 x 900 its first row is in view.
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    label="Regions",
                    interactive=False,
                    max_height=180,
                    wrap=True,
                )
                with gr.Row():
                    geojson = gr.DownloadButton("GeoJSON (EPSG:4326)", visible=False, size="sm")
                    mask = gr.DownloadButton("Mask GeoTIFF", visible=False, size="sm")
                    table_csv = gr.DownloadButton("Regions CSV", visible=False, size="sm")
            with gr.Column(scale=6):
                chat = gr.Chatbot(label="Chat", height=430, group_consecutive_messages=False)
                with gr.Row():
                    question = gr.Textbox(
                        show_label=False,
                        placeholder="Ask about the image…",
                        lines=1,
                        scale=5,
                        container=False,
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=80)
                    stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, visible=False)
                with gr.Row():
                    suggestions = [gr.Button(text, size="sm") for text in examples.suggestions(1)]
                with gr.Row():
                    reset = gr.Button("New conversation", size="sm")
                with gr.Accordion("Options", open=False):
                    with gr.Row():
                        preset = gr.Dropdown(
                            [AUTO_BANDS, *geo.preset_names()], value=AUTO_BANDS, label="Band preset"
                        )
                        band_indices = gr.Textbox(
                            label="Band indices", placeholder="e.g. 4,3,2 (1-based; wins over the preset)"
                        )
                    with gr.Row():
                        date1 = gr.Textbox(label="Date 1 label", placeholder="e.g. 2009")
                        date2 = gr.Textbox(label="Date 2 label", placeholder="e.g. 2020")
                    with gr.Row():
                        window_budget = gr.Slider(
                            0, 500, value=DEFAULT_WINDOW_BUDGET, step=1, label="Window budget",
                            info="large scenes: windows read at full resolution (0: the overview only)",
                        )  # fmt: skip
                        time_budget = gr.Slider(
                            5, 600, value=DEFAULT_TIME_BUDGET_S, step=5, label="Time budget (s)",
                            info="large scenes: seconds spent reading windows",
                        )  # fmt: skip
        sent = gr.Textbox(visible=False, label="Question")  # the question being answered (the box stays free)

        load_outputs = [files, status, view, slider, chat, table, date1, date2]
        ask_inputs = [sent, date1, date2, window_budget, time_budget]
        ask_outputs = [chat, view, slider, table]
        export_outputs = [geojson, mask, table_csv]
        claim_outputs = [question, sent, send, stop]

        def answer(claimed, public: bool = False):
            """The rest of every question's chain once claimed: answer, export, give Ask back."""
            named = {"api_name": "ask"} if public else PRIVATE
            exported = {"api_name": "export"} if public else PRIVATE
            return (
                claimed.success(app.ask, ask_inputs, ask_outputs, show_progress="hidden", **named)
                .then(app.export, None, export_outputs, show_progress="hidden", **exported)
                .then(app.release, None, [send, stop], show_progress="hidden", **PRIVATE)
            )

        loaded = files.upload(app.load, [files, preset, band_indices], load_outputs, api_name="load")
        loaded.then(app.suggest, None, suggestions, **PRIVATE)
        files.clear(app.load, [files, preset, band_indices], load_outputs, **PRIVATE)
        preset.input(app.reload, [preset, band_indices], load_outputs, **PRIVATE)
        band_indices.submit(app.reload, [preset, band_indices], load_outputs, **PRIVATE)

        typed = gr.on([send.click, question.submit], app.claim, [question], claim_outputs, **PRIVATE)
        answer(typed, public=True)
        for button in suggestions:
            answer(button.click(app.claim_suggestion, [button], claim_outputs, **PRIVATE))
        picked = gallery.select(app.claim_example, None, claim_outputs, **PRIVATE)
        example = picked.success(app.load_example, None, load_outputs, **PRIVATE)
        example.then(app.suggest, None, suggestions, **PRIVATE)
        answer(example)
        stop.click(app.stop, None, None, queue=False, **PRIVATE)
        reset.click(app.reset, None, [chat, view, slider, table, *export_outputs], api_name="reset")
        demo.unload(app.close_session)
    return demo


def serve(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
          max_file_size: int | None = None, **launch) -> None:  # fmt: skip
    """Launch with the upload size limit and no other served paths (Gradio serves its cache only)."""
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        show_error=False,
        max_file_size=max_file_size,
        allowed_paths=[],
        **launch,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rsvlm serve", description="Start the Gradio chat.")
    parser.add_argument(
        "--model", default="default", help="'default' (the embedded model) or a checkpoint folder"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for the LAN)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--max-file-size",
        default=DEFAULT_MAX_FILE_SIZE,
        type=_size,
        help=f"largest upload accepted, e.g. 200mb, 2gb (default {DEFAULT_MAX_FILE_SIZE})",
    )
    parser.add_argument(
        "--share", type=_bool, default=False, help="true: a public gradio.live link (needs internet)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    return parser.parse_args(argv)


def _size(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
        print(f"rsvlm serve: {one_line(error)}", file=sys.stderr)
        return 2
    demo = build_demo(
        assistant, max_new_tokens=args.max_new_tokens, checkpoint=args.model, max_file_size=args.max_file_size
    )
    try:
        serve(demo, host=args.host, port=args.port, share=args.share, max_file_size=args.max_file_size)
    finally:
        demo.chat_app.sessions.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
