"""Per-browser-session state of the chat, each with a private temp folder that goes when the session ends.

    sessions = Sessions(assistant)            # one per app; its root is a fresh 0700 temp folder
    chat = sessions.get(request.session_hash) # created on a session's first event
    sessions.close(request.session_hash)      # on ``demo.unload`` (tab closed, client gone): folder removed

A session's uploads are linked from Gradio's upload cache into its folder, and every download is written
there under a generated name, so one user's files are never in a path another user's events can reach, and
nothing stays on disk after the session: the folder goes, and so do the cache copies of its uploads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsvlm import geo
from rsvlm.assistant import Answer, Assistant, Session


@dataclass
class ChatSession:
    """One browser session: its conversation, images, chat messages, last answer and private folder."""

    session: Session
    folder: Path
    paths: list[str] = field(default_factory=list)  # the images, in ``folder`` (uploads) or the samples
    names: list[str] = field(default_factory=list)  # their names as the user knows them
    bands: str | list[int] | None = None
    previews: list[geo.GeoImage] = field(default_factory=list)
    sources: list[geo.RasterInfo] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    answer: Answer | None = None
    turns: int = 0
    uploads: int = 0
    example: int = 0  # the gallery example being loaded
    busy: bool = False  # an answer is running: a second question waits in the box
    stop: threading.Event = field(default_factory=threading.Event)
    cached: list[tuple[str, str]] = field(
        default_factory=list
    )  # (Gradio's cache copy, the session's link to it)

    def upload_folder(self) -> Path:
        """A fresh folder for one upload's files (two dates may share a file name)."""
        self.uploads += 1
        folder = self.folder / "uploads" / str(self.uploads)
        folder.mkdir(parents=True)
        return folder

    def clear_images(self) -> None:
        shutil.rmtree(self.folder / "uploads", ignore_errors=True)
        self.paths, self.names, self.previews, self.sources, self.answer = [], [], [], [], None

    def close(self) -> None:
        """Remove the session's folder, and Gradio's cache copies of its uploads that are still the very files
        it received (a copy another session uploaded since is another file, and stays for Gradio's sweep)."""
        for original, link in self.cached:
            try:
                if os.path.samefile(original, link):
                    os.unlink(original)
            except OSError:
                pass  # gone already, or never the same file (copied across file systems)
        self.cached.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """The live chat sessions of one app, by Gradio session hash."""

    def __init__(self, assistant: Assistant):
        self.assistant = assistant
        self.root = Path(tempfile.mkdtemp(prefix="rsvlm-chat-"))  # 0700: only this user can list it
        self._sessions: dict[str, ChatSession] = {}
        self._lock = threading.Lock()

    def get(self, key: str | None) -> ChatSession:
        key = key or "local"
        with self._lock:
            if key not in self._sessions:
                folder = Path(tempfile.mkdtemp(prefix="session-", dir=self.root))
                self._sessions[key] = ChatSession(session=self.assistant.session(), folder=folder)
            return self._sessions[key]

    def close(self, key: str | None) -> None:
        with self._lock:
            chat = self._sessions.pop(key or "local", None)
        if chat is not None:
            chat.stop.set()  # a running answer stops at its next window batch or token
            chat.close()

    def __len__(self) -> int:
        return len(self._sessions)

    def close_all(self) -> None:
        for key in list(self._sessions):
            self.close(key)
        shutil.rmtree(self.root, ignore_errors=True)
