"""The renderer's error vocabulary.

Each error subclasses a builtin so callers that only know Python still catch it sensibly
(``InvalidTemplate`` is a ``ValueError``, as PyAV's ``InvalidDataError`` is). Messages are
written for the person who has to fix the input: they name the file, the layer and the field.
"""

from __future__ import annotations


class RendererError(Exception):
    """Base of every error the renderer raises on purpose."""

    code = "render_error"


class InvalidTemplate(RendererError, ValueError):
    """The template archive, ``data.json`` or a file it references is unusable."""

    code = "invalid_template"


class UnsupportedMedia(InvalidTemplate):
    """A referenced or replacement media file has a format or codec we do not accept."""

    code = "unsupported_media"


class StorageLimitExceeded(RendererError, ValueError):
    """Writing the result would pass the storage the caller allowed (the account's quota)."""

    code = "storage_quota_exceeded"


class InvalidCustomization(RendererError, ValueError):
    """A ``customizationMap`` entry does not fit the template."""

    code = "invalid_customization"


class InvalidEncoderConfig(RendererError, ValueError):
    """An ``EncoderConfig`` value or combination cannot be encoded."""

    code = "invalid_encoder_config"


class InvalidFrameRange(RendererError, ValueError):
    """A half-open template frame range ``[start, end)`` is empty or outside the
    composition.

    ``problem`` says which rule it broke, so a caller can word it in its own terms (the API
    speaks of ``jobInfo.fStart``): ``start`` or ``end`` (that bound lies outside
    ``[0, total]``), ``order`` (start is not before end), ``no_output`` (no output frame
    falls in the range), ``outside`` (a part outside its render's range), or ``""``.
    """

    code = "invalid_frame_range"

    def __init__(
        self,
        message: str,
        *,
        problem: str = "",
        start: int | None = None,
        end: int | None = None,
        total: int | None = None,
    ) -> None:
        super().__init__(message)
        self.problem, self.start, self.end, self.total = problem, start, end, total

    def __reduce__(self) -> tuple[object, ...]:
        return (_invalid_frame_range, (str(self), self.problem, self.start, self.end, self.total))


class EncoderUnavailable(RendererError, RuntimeError):
    """The requested encoder (e.g. NVENC) cannot be opened on this machine."""

    code = "encoder_unavailable"


class RenderCancelled(RendererError):
    """``should_cancel`` answered True; partial output has been removed."""

    code = "cancelled"


class LottieCrashed(UnsupportedMedia):
    """A Lottie animation crashed its sandboxed engine process (or hit its memory or CPU
    limit); the process was replaced and the service goes on."""

    code = "lottie_crashed"


class LottieTimedOut(UnsupportedMedia):
    """A Lottie animation took longer than the sandbox's wall-time limit to load or draw a
    frame; its engine process was killed."""

    code = "lottie_timeout"


class OutputTooLarge(RendererError):
    """The output passed the size limit the caller set (``max_output_bytes``); nothing is
    left at the output path."""

    code = "output_too_large"

    def __init__(self, message: str, *, limit: int, written: int) -> None:
        super().__init__(message)
        self.limit, self.written = limit, written

    def __reduce__(self) -> tuple[object, ...]:
        # Renders run in child processes: the error must cross back through pickle.
        return (_output_too_large, (str(self), self.limit, self.written))


def _output_too_large(message: str, limit: int, written: int) -> OutputTooLarge:
    return OutputTooLarge(message, limit=limit, written=written)


def _invalid_frame_range(
    message: str, problem: str, start: int | None, end: int | None, total: int | None
) -> InvalidFrameRange:
    return InvalidFrameRange(message, problem=problem, start=start, end=end, total=total)
