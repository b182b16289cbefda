"""Headless Chromium driven over the DevTools protocol on a pipe (no port opened): print a page to PDF, measure its
layout, take screenshots. One browser per ``Browser`` block, a fresh profile each time, no network features."""
from __future__ import annotations

import base64
import fcntl
import html
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import WsibenchError
from ..fsutil import write_bytes

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe")
A4_IN = (8.27, 11.69)


class BrowserError(WsibenchError, RuntimeError):
    """Chromium is missing, did not start, or did not answer."""


def find() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError("PDF output needs Chromium, which is not installed (scripts/setup installs it: "
                       "apt-get install chromium)")


def _above(fd: int, low: int) -> int:
    """The same pipe end on a descriptor >= low (the original is closed)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    os.close(fd)
    return new


class Browser:
    """``with Browser() as b: b.open(path); b.pdf(out)``: one page in one headless Chromium."""

    def __init__(self, timeout_s: float = 60.0, width: int = 1280, height: int = 900):
        self.timeout_s, self.size = timeout_s, (width, height)
        self._id, self._buf, self._session = 0, b"", None

    def __enter__(self) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="wsibench-chromium-")
        cmd_in, self._w = os.pipe()   # our commands -> Chromium's fd 3
        self._r, resp_out = os.pipe()  # Chromium's fd 4 -> our replies
        cmd_in, resp_out = (_above(fd, 10) for fd in (cmd_in, resp_out))  # clear of 3 and 4 themselves
        # bash (dash takes one-digit descriptors only) moves the pipe ends to 3 and 4, then becomes Chromium
        with open(Path(self._profile) / "stderr.log", "wb") as log:
            self._proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_in} 4>&{resp_out} {cmd_in}<&- {resp_out}>&-', find(), *FLAGS,
                 f"--user-data-dir={self._profile}", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
                pass_fds=(cmd_in, resp_out), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        os.close(cmd_in)
        os.close(resp_out)
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Page.enable")
            self.viewport(*self.size)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._proc.poll() is None:
                self._session = None
                self.call("Browser.close", _timeout=5)
        except (BrowserError, OSError):
            pass
        finally:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            os.close(self._w)
            os.close(self._r)
            shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, _timeout: float | None = None, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self._session:
            msg["sessionId"] = self._session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited (status {self._proc.poll()}) before {method}{self._log()}") from None
        deadline = time.monotonic() + (_timeout or self.timeout_s)
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise BrowserError(f"Chromium: {method}: {reply['error'].get('message')}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer {method} within {_timeout or self.timeout_s:g}s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (status {self._proc.poll()}) during {method}{self._log()}")
            self._buf += chunk

    def _log(self) -> str:
        """The last line Chromium wrote to its stderr, to say why it stopped."""
        try:
            lines = (Path(self._profile) / "stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1][:300]}" if lines else ""

    def viewport(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def open(self, path: str | Path) -> None:
        """Load a local file and wait until it and everything in it has loaded."""
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + self.timeout_s
        while self.eval("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise BrowserError(f"{path}: not loaded within {self.timeout_s:g}s")
            time.sleep(0.05)

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"script failed: {r['exceptionDetails'].get('text')}: {expression[:80]}")
        return r["result"].get("value")

    def media(self, kind: str) -> None:
        """Lay the page out for ``screen`` or ``print``."""
        self.call("Emulation.setEmulatedMedia", media=kind)

    def screenshot(self, out: str | Path, full_page: bool = True) -> None:
        params = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        Path(out).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))

    def pdf(self, out: str | Path, footer: str = "") -> int:
        """Print the loaded page to an A4 PDF (the page's own @page rules decide margins); returns the bytes."""
        footer_html = ('<div style="font:8px sans-serif;color:#666;width:100%;padding:0 12mm;display:flex;'
                       f'justify-content:space-between"><span>{html.escape(footer)}</span>'
                       '<span>page <span class="pageNumber"></span> of <span class="totalPages"></span></span></div>')
        data = self.call("Page.printToPDF", paperWidth=A4_IN[0], paperHeight=A4_IN[1], printBackground=True,
                         preferCSSPageSize=True, displayHeaderFooter=True, headerTemplate="<span></span>",
                         footerTemplate=footer_html)["data"]
        raw = base64.b64decode(data)
        write_bytes(out, raw)
        return len(raw)


def print_pdf(html_path: str | Path, pdf_path: str | Path, footer: str = "") -> int:
    """The HTML report printed to PDF by headless Chromium; returns the PDF's size in bytes."""
    with Browser() as b:
        b.open(html_path)
        return b.pdf(pdf_path, footer)
