"""A progress bar with rate and ETA on stderr (one redrawn line on a terminal, a line every few
seconds in a log)."""
from __future__ import annotations

import time


class Progress:
    def __init__(self, total: int, stream, quiet: bool = False, every: float = 5.0):
        self.total, self.stream, self.quiet, self.every = total, stream, quiet, every
        self.done = self.failed = 0
        self.started = time.perf_counter()
        self.last_line = 0.0
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def message(self, text: str) -> None:
        if not self.quiet:
            self._clear()
            print(text, file=self.stream, flush=True)

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = time.perf_counter()
        if self.quiet or not (self.tty or now - self.last_line >= self.every or self.done == self.total):
            return
        self.last_line = now
        self._draw(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        failed = f", {self.failed} failed" if self.failed else ""
        eta_text = "--:--" if eta == float("inf") else time.strftime("%H:%M:%S" if eta >= 3600 else "%M:%S",
                                                                      time.gmtime(eta))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{rate:.2f} img/s ETA {eta_text}{failed}")

    def _draw(self, now: float) -> None:
        if self.tty:
            print("\r" + self.line(now), end="", file=self.stream, flush=True)
        else:
            print(self.line(now), file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self.done:
            print("\r" + " " * 80 + "\r", end="", file=self.stream)

    def close(self) -> None:
        if self.tty and self.done and not self.quiet:
            print(file=self.stream, flush=True)
