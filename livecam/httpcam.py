"""HTTP cameras read by livecam itself: MJPEG streams and JPEG snapshot URLs.

FFmpeg's mpjpeg demuxer buffers a multipart part of whatever size the camera claims, so one
broken or hostile camera could make a worker hold hundreds of megabytes. Here no part is
kept before it is known to fit: a part whose Content-Length is above ``max_frame`` is read
past in small chunks and never held; a part without a Content-Length is buffered only up
to the cap while looking for the next boundary; a part that is not a whole JPEG is dropped.
Dropped parts are counted in ``rejected`` (see ``sources.Screening``), and a camera that
sends nothing but bad parts fails with a SourceError saying so.

What the camera answers decides the reader: ``multipart/x-mixed-replace`` is an MJPEG
stream, ``image/jpeg`` a snapshot URL polled again and again, and any other success
(video/*, application/octet-stream, HLS...) is left to FFmpeg. Errors and HTML pages become
a SourceError that says what came back, without the credentials of the URL.
"""

from __future__ import annotations

import http.client
import logging
import re
import select
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np

from .integers import parse_int
from .jpeg import jpeg_check, jpeg_span, with_huffman_tables
from .redaction import redact, split_url
from .source_base import (
    MAX_FRAME,
    OPEN_TIMEOUT_MS,
    READ_TIMEOUT_MS,
    Screening,
    SourceError,
    human_size,
    on_stop,
)

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # the least a read has room for, and all a skipped part ever occupies
BUFFER = 256 * 1024  # an MJPEG reader's buffer: whole parts of most cameras, read at once
# A frame not whole this long after it was begun is a failure, however the bytes trickle.
FRAME_TIMEOUT = 10.0
MAX_HEADER = 16 * 1024  # a part's header block larger than this is not a camera's
SKIM_SLACK = 16  # bytes after a part that are only its end (CRLF), not yet the next part
SNAPSHOT_FPS = 2.0  # polling rate of a snapshot camera whose config sets no fps
SNAPSHOT_TYPES = ("image/jpeg", "image/jpg", "image/pjpeg")
# A part's declared size, among header lines of the plain "Name: value" shape.
_LENGTH = re.compile(rb"^content-length:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_BLANK = re.compile(rb"[ \t\r\n]*")

Opener = Callable[[], http.client.HTTPResponse]


class _StreamEnded(Exception):
    """The camera closed the connection."""


def _nothing() -> None:
    """Nothing to undo."""


def split_credentials(url: str) -> tuple[str, str | None, str]:
    """The URL without its userinfo, and the user name and password it carried, decoded."""
    # Not urlsplit: it refuses a password with "[" in it, which cameras' generated ones have;
    # split_url reads an "@" or "[" typed in a password as FFmpeg and VLC do.
    parts = split_url(url)
    if parts is None or parts.userinfo is None:
        return url, None, ""
    user, _, password = parts.userinfo.partition(":")
    return f"{parts.scheme}://{parts.host}{parts.rest}", unquote(user), unquote(password)


class _DigestAuthHandler(urllib.request.HTTPDigestAuthHandler):
    """Digest authentication that closes each 401 response it answers."""

    def http_error_401(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Message
    ) -> Any:
        # urllib drops challenged responses unclosed (and its last one when it gives up);
        # runs before the Basic handler, so this covers both schemes.
        fp.close()
        return super().http_error_401(req, fp, code, msg, headers)


def tls_context(verify: bool) -> ssl.SSLContext:
    """TLS for a camera: encrypted always; its certificate checked only when asked.

    IP cameras ship self-signed certificates, and FFmpeg (which read them before) checks none;
    ``tls_verify = true`` asks for a certificate the system trusts.
    """
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_opener(url: str, tls_verify: bool = False) -> tuple[str, Opener]:
    """The URL to send (no userinfo) and a function that GETs it, answering auth challenges."""
    bare, user, password = split_credentials(url)
    shown = redact(bare)  # no userinfo left to leak, whatever characters the password has
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.HTTPSHandler(context=tls_context(tls_verify))
    ]
    parts = split_url(bare)
    if user is not None and parts is not None:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        try:
            # Every path of the camera's own origin (redirects to it included), no other host.
            passwords.add_password(None, f"{parts.scheme}://{parts.host}/", user, password)
        except ValueError as exc:  # urlsplit's "Invalid IPv6 URL": a reason, not a traceback
            raise SourceError(f"cannot open {shown}: {exc}") from None
        # Not sent up front: a camera that asks for Digest never sees the password in clear.
        handlers += [
            _DigestAuthHandler(passwords),
            urllib.request.HTTPBasicAuthHandler(passwords),
        ]
    opener = urllib.request.build_opener(*handlers)

    def fetch() -> http.client.HTTPResponse:
        try:
            response = opener.open(bare, timeout=OPEN_TIMEOUT_MS / 1000)
        except urllib.error.HTTPError as exc:
            try:
                raise answered(exc.code, content_type(exc.headers)) from None
            finally:
                exc.close()
        except urllib.error.URLError as exc:
            raise SourceError(f"cannot open {shown}: {exc.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: urllib's digest handler meeting an auth scheme it does not know.
            raise SourceError(f"cannot open {shown}: {exc}") from None
        set_read_timeout(response, READ_TIMEOUT_MS / 1000)
        return response

    return bare, fetch


def content_type(headers: object) -> str | None:
    """The media type of a response, or None when the camera sent none."""
    if headers is None or "Content-Type" not in headers:  # type: ignore[operator]
        return None
    return headers.get_content_type()  # type: ignore[attr-defined]


def answered(code: int, media: str | None) -> SourceError:
    """The error for an HTTP error status, naming it and what the camera sent with it."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "error"
    message = f"camera answered {code} {phrase}" + (f" ({media})" if media else "")
    # 401 and 403 will not go away by asking again: the caller backs off fully.
    return SourceError(message, refused=code in (401, 403))


def _socket(response: http.client.HTTPResponse) -> socket.socket | None:
    """The socket an open response reads from (urllib keeps it out of reach)."""
    return getattr(getattr(response.fp, "raw", None), "_sock", None)


def set_read_timeout(response: http.client.HTTPResponse, seconds: float) -> None:
    """Give the open connection the read timeout (urllib applies one timeout to everything)."""
    sock = _socket(response)
    if sock is not None:
        sock.settimeout(seconds)


def shutter(response: http.client.HTTPResponse) -> Callable[[], None]:
    """A function that wakes a read of ``response`` blocked in another thread: it then ends."""
    sock = _socket(response)

    def shut() -> None:
        if sock is None:
            return
        try:
            # socket.socket's own shutdown: SSLSocket's would also drop its TLS state under
            # the reading thread. The reader sees the end of the stream, then closes it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more: nothing to wake

    return shut


def open_http(
    url: str,
    stop: threading.Event,
    *,
    max_frame: int = MAX_FRAME,
    fps: float | None = None,
    tls_verify: bool = False,
) -> MjpegSource | SnapshotSource | None:
    """Open an http(s) camera livecam reads itself; None when FFmpeg should read it instead.

    :raise SourceError: the camera cannot be reached, refused, failed or sent HTML.
    """
    _, fetch = make_opener(url, tls_verify)
    response = fetch()
    media = content_type(response.headers)
    if media is not None and media.startswith("multipart/"):
        boundary = response.headers.get_boundary()
        return MjpegSource(response, boundary.encode("latin-1") if boundary else None, max_frame, stop)
    if media in SNAPSHOT_TYPES:
        return SnapshotSource(response, fetch, stop, fps or SNAPSHOT_FPS, max_frame)
    response.close()
    if media == "text/html":
        raise SourceError(f"camera sent {media}, not video")
    log.debug("%s sends %s: left to FFmpeg", redact(url), media)
    return None


class _HttpSource(Screening):
    """What both HTTP readers share: the camera's JPEGs handed over as they came."""

    compressed = True
    width = height = 0

    def __init__(self, max_frame: int, stop: threading.Event) -> None:
        self._max_frame = max_frame
        self._stop = stop
        # The picture last grabbed, where it lies in the bytes read (a reader's buffer is
        # written again only by the next grab), and its bytes once asked for.
        self._frame: memoryview | None = None
        self._jpeg: bytes | None = None
        self._fresh = False
        self._deadline = time.monotonic() + FRAME_TIMEOUT
        self._unwatch: Callable[[], None] = _nothing

    def _watch(self, response: http.client.HTTPResponse) -> None:
        """Let a switch-off wake a read of ``response`` blocked on a silent camera."""
        self._unwatch = on_stop(self._stop, shutter(response))

    def _close(self, response: http.client.HTTPResponse) -> None:
        """Close ``response``, once a switch-off can no longer reach for its socket."""
        self._unwatch()
        self._unwatch = _nothing
        response.close()

    def _start(self) -> None:
        """Read the first good frame and learn the size from it; it is the first handed out."""
        try:
            while True:
                if not self._read_frame():
                    raise SourceError("opened, but no frame arrived")
                pixels = self.retrieve()
                if pixels is not None:
                    break
                self._reject("undecodable JPEG")
        except BaseException as error:
            self._opening_failed(error)
            self.release()
            raise
        self.height, self.width = pixels.shape[:2]
        self._fresh = True

    def grab(self) -> bool:
        """Advance to the camera's next good frame, dropping bad ones; False when it hangs up."""
        if self._fresh:
            self._fresh = False
            return True
        self._frame = self._jpeg = None
        return self._read_frame()

    def _read_frame(self) -> bool:
        """Read until a good frame is held, turning network failures into SourceError."""
        self._deadline = time.monotonic() + FRAME_TIMEOUT
        try:
            return self._next_frame()
        except _StreamEnded:
            return False
        except TimeoutError:
            raise SourceError(f"camera sent nothing for {READ_TIMEOUT_MS / 1000:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            if self._stop.is_set():
                return False  # a switch-off shut the connection (TLS says so with an error)
            raise SourceError(f"camera connection failed: {exc}") from None

    def _next_frame(self) -> bool:
        raise NotImplementedError

    def _pace(self) -> None:
        """Between two reads: stop when told to, and give up on a camera that trickles.

        Each read waits at most the read timeout, but a camera sending a byte a second never
        lets one time out: a frame that is not whole within FRAME_TIMEOUT is a failure.
        """
        if self._stop.is_set():
            raise _StreamEnded
        if time.monotonic() > self._deadline:
            raise SourceError(f"camera sent no whole frame for {FRAME_TIMEOUT:g} s")

    def _too_big(self, size: int, more: str = "") -> str:
        return f"frame of {more}{human_size(size)} exceeds the {human_size(self._max_frame)} limit"

    def _keep(self, data: bytearray, start: int = 0, end: int | None = None) -> bool:
        """Hold the picture in ``data[start:end]`` as the current frame if it is a whole JPEG;
        count it if not. Nothing is copied, and the picture's exact bytes (without a stray
        CRLF before it or a trailer after it) are only looked for when they are wanted."""
        span = jpeg_check(data, start, end)
        if span.problem is not None:
            self._reject(span.problem)
            return False
        self._frame = memoryview(data)[span.start : span.end]
        self._accept()
        return True

    def _picture(self) -> memoryview | None:
        """The bytes of the picture last grabbed, from its start marker to its end marker."""
        if self._frame is None:
            return None
        span = jpeg_span(self._frame)  # checked when kept: only its end is looked for
        return self._frame[span.start : span.end]

    def retrieve(self) -> np.ndarray | None:
        """Decode the frame last grabbed."""
        picture = self._picture()
        if picture is None:
            return None
        return cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR)

    def jpeg(self) -> bytes | None:
        """The camera's own JPEG bytes of the frame last grabbed (one copy, made once)."""
        if self._jpeg is None and (picture := self._picture()) is not None:
            self._jpeg = with_huffman_tables(bytes(picture))
        return self._jpeg

    def release(self) -> None:
        raise NotImplementedError


class MjpegSource(_HttpSource):
    """An HTTP ``multipart/x-mixed-replace`` camera: each part is one of its JPEGs.

    Tolerant of what cameras do to the framing: a quoted boundary, one declared with or
    without its leading ``--``, none declared at all (learnt from the first delimiter line),
    parts without a Content-Length (found by scanning for the next boundary).

    Cheap for a camera nobody watches: the socket is read straight into one buffer (no bytes
    object per read), a part's delimiter and headers are matched by one regular expression
    (a line at a time only where the framing is unusual), and the picture is checked and
    kept where it lies in the buffer; its bytes are copied out only when asked for.
    """

    def __init__(
        self,
        response: http.client.HTTPResponse,
        boundary: bytes | None,
        max_frame: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(max_frame, stop)
        self._response = response
        self._watch(response)
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        self._pos = self._filled = 0  # the bytes read and not yet used: _buffer[_pos:_filled]
        self._readinto: Callable[[memoryview], int] = self._first_read
        self._direct = False  # read from the socket itself, not through http.client
        self._boundary: bytes | None = None
        self._delimiter: re.Pattern[bytes] | None = None
        self._head: re.Pattern[bytes] | None = None
        if boundary:
            self._learn(boundary)
        self._start()

    def _learn(self, boundary: bytes) -> None:
        # Compared without leading dashes: cameras disagree on whether "--" belongs to it.
        self._boundary = boundary.strip().lstrip(b"-")
        escaped = re.escape(self._boundary)
        self._delimiter = re.compile(rb"\r?\n-*" + escaped)
        # The usual framing in one match: blank lines, the delimiter line, header lines of the
        # plain "Name: value" shape, the blank line. Anything else goes line by line.
        self._head = re.compile(
            rb"(?:[ \t]*\r?\n)*[ \t]*-*" + escaped + rb"[ \t]*\r?\n((?:[!-9;-~]+:[^\r\n]*\r?\n)*)\r?\n"
        )

    def release(self) -> None:
        """Close the connection."""
        self._close(self._response)

    @property
    def skims(self) -> bool:
        """Whether ``arrived()`` can tell what has arrived: a plain (not TLS, not chunked)
        stream read straight from its socket."""
        return self._direct and type(_socket(self._response)) is socket.socket

    def arrived(self) -> bool:
        """Whether more of the stream has arrived than the end of the part last grabbed.

        A camera nobody watches is read only when something has, a few times a second: the
        frames that gathered in the socket meanwhile are then taken one after another
        without waiting, each found with one search.
        """
        if self._filled - self._pos > SKIM_SLACK:
            return True
        sock = _socket(self._response)
        return sock is not None and bool(select.select([sock], [], [], 0)[0])

    # -- reading the stream ------------------------------------------------------------

    def _first_read(self, into: memoryview) -> int:
        """The first read: what http.client buffered after the response's head. Its buffer is
        then empty, and a plain stream is read from the socket straight into ours."""
        data = self._response.read1(len(into))
        into[: len(data)] = data
        response = self._response
        if data and not response.chunked and response.length is None and response.fp is not None:
            self._readinto = response.fp.readinto1
            self._direct = True
        elif data:
            self._readinto = self._read_copy
        return len(data)

    def _read_copy(self, into: memoryview) -> int:
        """A read through http.client, for a chunked response (it takes the chunks apart)."""
        data = self._response.read1(len(into))
        into[: len(data)] = data
        return len(data)

    def _fill(self, need: int = 0) -> None:
        """Append what the camera sent next to the buffer, with room for ``need`` bytes from
        the read position."""
        self._pace()
        if self._filled == len(self._buffer) or len(self._buffer) - self._pos < need:
            self._make_room(need)
        count = self._readinto(self._view[self._filled :])
        if not count:
            raise _StreamEnded
        self._filled += count

    def _make_room(self, need: int) -> None:
        """Move the unread bytes to the front, and resize the buffer when they and ``need`` (or
        a chunk more) do not fit, or when it outgrew its usual size and they now fit in that."""
        kept = self._filled - self._pos
        if self._pos:
            # Through bytes(): the bytes and where they go may overlap.
            self._buffer[:kept] = bytes(self._view[self._pos : self._filled])
            self._pos, self._filled = 0, kept
        wanted = max(need, kept + CHUNK)
        size = len(self._buffer)
        if wanted > size:
            # Doubling, so a long part costs few moves; never far beyond what may be held.
            size = max(wanted, min(2 * size, self._max_frame + MAX_HEADER + 2 * CHUNK))
        elif size > BUFFER and wanted <= BUFFER // 2:
            size = BUFFER
        else:
            return
        self._view.release()
        try:
            # In place: a large buffer grows and shrinks without a second one beside it.
            if size > len(self._buffer):
                self._buffer.extend(bytes(size - len(self._buffer)))
            else:
                del self._buffer[size:]
        except BufferError:  # a frame still viewed in it (not while grabbing): a new one
            buffer = bytearray(size)
            buffer[:kept] = self._buffer[:kept]
            self._buffer = buffer
        self._view = memoryview(self._buffer)

    def _line(self) -> bytes:
        """The next line, or at most MAX_HEADER bytes of it."""
        # Never past _filled: the buffer holds older bytes beyond it.
        while not (end := self._buffer.find(b"\n", self._pos, min(self._filled, self._pos + MAX_HEADER)) + 1):
            if self._filled - self._pos >= MAX_HEADER:
                end = self._pos + MAX_HEADER
                break
            self._fill()
        line = bytes(self._view[self._pos : end])
        self._pos = end
        return line

    def _next_frame(self) -> bool:
        """Read parts until one is a good frame."""
        while True:
            length = self._part()
            if length is not None and length > self._max_frame:
                self._reject(self._too_big(length))
                self._skip(length)
                continue
            span = self._read_exact(length) if length is not None else self._read_to_boundary()
            if span is not None and self._keep(self._buffer, *span):
                return True

    def _part(self) -> int | None:
        """Go past the next part's delimiter and headers; its declared size, None when absent
        or unreadable (then: scan)."""
        while self._head is not None:
            if self._pos == self._filled:  # all used: read the next part from the buffer's start
                self._pos = self._filled = 0
                if len(self._buffer) > BUFFER:
                    self._make_room(0)  # what a large part grew goes back
                self._fill()
            found = self._head.match(self._buffer, self._pos, min(self._filled, self._pos + MAX_HEADER))
            if found is not None:
                self._pos = found.end()
                values = _LENGTH.findall(self._buffer, found.start(1), found.end(1))
                return parse_int(values[-1].decode("latin-1").strip(), 15) if values else None
            # Only the CRLF that ends the last part so far: the next part is still to come.
            if self._filled - self._pos > MAX_HEADER or not _BLANK.fullmatch(
                self._buffer, self._pos, self._filled
            ):
                break
            self._make_room(0)  # those few bytes to the front: the part is read whole after them
            self._fill()
        self._to_part()
        return self._content_length(self._headers())

    def _to_part(self) -> None:
        """Skip to just after the next delimiter line (the CRLF after a part, a preamble)."""
        skipped = 0
        while True:
            line = self._line()
            text = line.strip()
            if self._boundary is None and text.startswith(b"--") and text.strip(b"-"):
                self._learn(text)
            if self._boundary is not None and text.lstrip(b"-") in (self._boundary, self._boundary + b"--"):
                if text.endswith(self._boundary + b"--"):
                    raise _StreamEnded  # the closing delimiter
                return
            skipped += len(line)
            if skipped > self._max_frame:
                raise SourceError(
                    f"camera sent more than {human_size(self._max_frame)} without a part boundary"
                )
            self._check_patience()

    def _headers(self) -> dict[str, str]:
        """A part's header lines, up to the blank line that ends them."""
        headers: dict[str, str] = {}
        size = 0
        while (line := self._line()).strip():
            size += len(line)
            if size > MAX_HEADER:
                raise SourceError(f"camera sent a part header of more than {MAX_HEADER // 1024} KB")
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return headers

    @staticmethod
    def _content_length(headers: dict[str, str]) -> int | None:
        """The part's declared size, None when absent or unreadable (then: scan)."""
        return parse_int(headers.get("content-length", ""), 15)

    def _skip(self, length: int) -> None:
        """Read past ``length`` bytes in small chunks, keeping none of them."""
        taken = min(self._filled - self._pos, length)
        self._pos += taken
        remaining = length - taken
        if remaining:
            self._pos = self._filled = 0  # all used
        while remaining > 0:
            # A part claiming gigabytes and then trickling must not hold the source for ever.
            self._check_patience()
            self._pace()
            # What has arrived, at most what is left of the part: the next part stays unread.
            count = self._readinto(self._view[: min(CHUNK, remaining)])
            if not count:
                raise _StreamEnded
            remaining -= count

    def _read_exact(self, length: int) -> tuple[int, int]:
        """Where the next ``length`` bytes lie in the buffer, once they are all there."""
        while self._filled - self._pos < length:
            self._fill(length)
        start = self._pos
        self._pos += length
        return start, self._pos

    def _read_to_boundary(self) -> tuple[int, int] | None:
        """A part without a Content-Length: where the bytes up to the next boundary lie, at
        most the cap of them."""
        assert self._delimiter is not None  # _to_part learnt the boundary
        searched = 0  # how far past the read position no delimiter begins
        while (found := self._delimiter.search(self._buffer, self._pos + searched, self._filled)) is None:
            if self._filled - self._pos > self._max_frame:
                self._reject(self._too_big(self._max_frame, "more than "))
                self._discard_to_boundary()
                return None
            # The delimiter may straddle two reads: search again from a little before the end.
            searched = max(0, self._filled - self._pos - len(self._boundary or b"") - 64)
            self._fill()
        start, self._pos = self._pos, found.start()
        return start, found.start()

    def _discard_to_boundary(self) -> None:
        """Drop bytes until the next boundary, keeping only enough to recognise it."""
        assert self._delimiter is not None
        keep = len(self._boundary or b"") + 64
        self._pos = max(self._pos, self._filled - keep)
        while (found := self._delimiter.search(self._buffer, self._pos, self._filled)) is None:
            self._check_patience()
            self._pos = max(self._pos, self._filled - keep)
            self._fill()
        self._pos = found.start()


class SnapshotSource(_HttpSource):
    """A camera that serves one JPEG per request, fetched again at ``fps`` frames a second.

    The rate is the camera config's fps, or SNAPSHOT_FPS (2) when it sets none: each frame
    costs the camera a whole HTTP request, and such cameras are rarely built for more.
    """

    def __init__(
        self,
        response: http.client.HTTPResponse,
        fetch: Opener,
        stop: threading.Event,
        fps: float,
        max_frame: int,
    ) -> None:
        super().__init__(max_frame, stop)
        self._response: http.client.HTTPResponse | None = response
        self._watch(response)
        self._fetch = fetch
        self._interval = 1.0 / fps
        self._next = time.monotonic()
        self._start()

    def release(self) -> None:
        """Close a fetch still open."""
        if self._response is not None:
            self._close(self._response)
            self._response = None

    def _next_frame(self) -> bool:
        """Fetch snapshots at the polling rate until one is a good frame."""
        while True:
            if self._response is None:
                self._next = max(self._next + self._interval, time.monotonic())
                delay = self._next - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return False
                self._response = self._fetch()
                self._watch(self._response)
                self._deadline = time.monotonic() + FRAME_TIMEOUT  # for this snapshot alone
            try:
                data = self._body(self._response)
            finally:
                self.release()
            if data is not None and self._keep(data):
                return True

    def _body(self, response: http.client.HTTPResponse) -> bytearray | None:
        """The snapshot's bytes, or None (counted) when it is larger than the cap."""
        length = parse_int(response.headers.get("Content-Length", ""), 15)
        if length is not None and length > self._max_frame:
            self._reject(self._too_big(length))
            return None  # closed unread
        data = bytearray()
        while True:
            self._pace()
            if not (chunk := response.read1(CHUNK)):
                break
            data += chunk
            if len(data) > self._max_frame:
                self._reject(self._too_big(self._max_frame, "more than "))
                return None
        return data
