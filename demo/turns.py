"""One answer run in a worker thread, seen as a stream of progress: text so far, windows read, seconds elapsed.

    for step in run_turn(session, "Outline the buildings.", stop=event, budget=WindowBudget(64, 60)):
        step.text, step.windows, step.elapsed_s     # Progress, at least every ``tick`` seconds
    # the last step is Finished(answer) — or the turn's exception is raised (Stopped when ``stop`` was set)

A large scene streams its one language pass first (text within seconds), then reports ``(done, total)`` windows.
``stop`` ends the turn: during generation the next token raises ``Stopped``; during the window pass
``session.cancel()`` ends it after the current batch and the answer keeps what was decoded.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from rsvlm.assistant import Answer, Session


class Stopped(Exception):
    """The user stopped the answer while it was being written."""


@dataclass
class Progress:
    text: str = ""
    windows: tuple[int, int] | None = None  # (read, to read) of a large scene
    elapsed_s: float = 0.0
    first_text_s: float | None = None


@dataclass
class Finished(Progress):
    answer: Answer | None = None


def run_turn(
    session: Session, question: str, *, stop: threading.Event, tick: float = 0.5, **ask_kwargs
) -> Iterator[Progress]:
    events: queue.Queue[tuple[str, object]] = queue.Queue()

    def stream(piece: str) -> None:
        if stop.is_set():
            raise Stopped("stopped")
        events.put(("text", piece))

    def work() -> None:
        try:
            answer = session.ask(
                question, streamer=stream, progress=lambda d, t: events.put(("windows", (d, t))), **ask_kwargs
            )
            events.put(("answer", answer))
        except BaseException as error:  # handed to the caller's thread, raised there
            events.put(("error", error))

    start = time.perf_counter()
    step = Progress()
    worker = threading.Thread(target=work, daemon=True, name="rsvlm-turn")
    worker.start()
    while True:
        try:
            kind, value = events.get(timeout=tick)
        except queue.Empty:
            kind, value = "tick", None
        if stop.is_set():
            session.cancel()  # the window pass ends after its current batch
        step.elapsed_s = time.perf_counter() - start
        if kind == "text":
            step.text += value  # type: ignore[operator]
            if step.first_text_s is None:
                step.first_text_s = step.elapsed_s
        elif kind == "windows":
            step.windows = value  # type: ignore[assignment]
        elif kind == "error":
            worker.join()
            raise value  # type: ignore[misc]
        elif kind == "answer":
            worker.join()
            yield Finished(step.text, step.windows, step.elapsed_s, step.first_text_s, answer=value)  # type: ignore[arg-type]
            return
        yield replace(step)  # a copy: the loop keeps growing its own
