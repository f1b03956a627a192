"""Settings of the camera source (``type: camera``). Validation only: never imports OpenCV.

``url`` picks the kind of camera:

    usb:0                          a local device by index (V4L2 where OpenCV has it)
    http://host:port/stream.mjpg   an MJPEG stream (IP cameras, ``edge-sim camera``); ``user:password@`` in the
                                   URL answered as Basic or Digest; https: trusted by ``tls_ca_file`` or
                                   ``tls_fingerprint_sha256`` (else the system's CAs; otherwise refused)
    http://host:port/snapshot.jpg  a URL that answers each GET with one image: asked at ``fps`` (default 10)
    rtsp://host/stream             where OpenCV's FFmpeg can open it
    /path/to/video.avi             a video file (``loop: true`` to replay it)
    /path/to/folder/               every *.png / *.jpg / *.bmp in name order (``loop`` as above), or with
                                   ``watch: true`` each new image as it is dropped there (camera software, FTP)
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.image_header import IMAGE_TYPES
from protocols.redact import mask_credentials


class CameraKind(enum.StrEnum):
    USB = "usb"
    STREAM = "stream"
    PATH = "path"  # a video file or a folder of images, told apart when opened


# sources OpenCV's FFmpeg reads and decodes to 8-bit colour itself: pixel_bits and bayer do nothing there
_FFMPEG_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "tcp")
# a stream camera's: FFmpeg's, and http(s), read by our own MJPEG and snapshot readers (or FFmpeg for a video)
_STREAM_SCHEMES = ("http", "https", *_FFMPEG_SCHEMES)
_FFMPEG_PREFIXES = tuple(f"{s}://" for s in _FFMPEG_SCHEMES)
_STREAM_URL = re.compile(rf"({'|'.join(_STREAM_SCHEMES)})://")
# a scheme in any case (RFC 3986: schemes are case-insensitive; ``RTSP://`` was taken for a file path), written in
# lower case as FFmpeg (whose protocol names it compares exactly) and our http readers look for it
_ANY_CASE_SCHEME = re.compile(rf"(?i)({'|'.join(_STREAM_SCHEMES)})://|usb:(?=\d+$)")
_VIDEO_SUFFIXES = (
    ".avi",
    ".mp4",
    ".mkv",
    ".mov",
    ".m4v",
    ".webm",
    ".mjpeg",
    ".mjpg",
    ".mpg",
    ".mpeg",
    ".ts",
    ".wmv",
    ".flv",
    ".h264",
    ".264",
    ".h265",
    ".hevc",
    ".y4m",
    ".ogv",
    ".3gp",
)


class CameraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    produces: ClassVar[str] = "frames"  # what pipelines read from it: frames, not tags
    type: Literal["camera"] = "camera"
    url: str = Field(min_length=1, description="usb:N, http(s)://, rtsp://, a video file or an image folder")
    fps: float | None = Field(
        None,
        gt=0,
        le=240,
        description="target rate; live sources skip frames to keep it, files, folders and snapshot URLs are "
        "paced at it (default: the source's own rate, files and snapshot URLs 10)",
    )
    loop: bool = Field(False, description="replay a file or folder from the start when it ends")
    watch: bool = Field(
        False,
        description="a drop folder (a camera's software or FTP upload writes into it): each image that appears "
        "after the start is read once, when it has not changed for settle_ms; files already there are left",
    )
    settle_ms: float = Field(
        250.0,
        ge=0,
        le=60_000,
        description="watch: a file is read once unchanged this long (not half-written)",
    )
    keep_files: int | None = Field(
        200,
        ge=0,
        description="watch: images kept in the folder once read (or there at the start); past it the oldest "
        "are deleted, never one not yet read; null: none deleted (something else must empty the folder)",
    )
    width: int | None = Field(None, gt=0, le=8192, description="resize frames to this width (with height)")
    height: int | None = Field(None, gt=0, le=8192)
    max_megapixels: float = Field(
        25.0,
        gt=0,
        le=1000,
        description="frames over this are never decoded or queued (oversize_frame): a folder's image file "
        "declaring more is skipped undecoded; a device, stream or video file declaring more is not read",
    )
    pixel_bits: int | None = Field(
        None,
        ge=8,
        le=16,
        description="16-bit images (an image folder's files, an HTTP camera's parts): how many bits carry the "
        "image (12 for a Mono12 camera, 16 for the full range or Mono12 shifted to the top); the top 8 are kept, "
        "an image with a value they cannot hold is skipped (unsupported_frame). Unset: such an image is "
        "skipped (unsupported_frame), since OpenCV alone would turn a 12-bit image black",
    )
    bayer: Literal["rggb", "bggr", "grbg", "gbrg"] | None = Field(
        None,
        description="a colour camera sending raw frames (a Bayer mosaic saved as a grey image: an image folder's "
        "files, an HTTP camera's parts): its pattern, the top-left 2x2 pixels row by row (BayerRG8: rggb); "
        "each frame is demosaiced to colour (after pixel_bits), as `cloud-trainer dataset import --bayer` "
        "stores them. A colour image is then skipped (unsupported_frame). Unset: frames as they come",
    )
    queue_max_items: int = Field(4, ge=1, le=1000, description="frames held for the pipeline; oldest dropped")
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)
    open_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0, description="a live source silent this long is reopened")
    max_consecutive_failures: int = Field(10, ge=1, description="failed reads in a row before reopening")
    frozen_after_s: float | None = Field(
        10.0,
        gt=0,
        le=86_400,
        description="a live camera whose image has not changed at all for this long is named once as "
        "frozen_frame (a hung camera resending its last image; a real sensor's noise changes even a still "
        "scene); its frames are passed on as UNSURE until the image changes. null: not checked (a "
        "triggered camera whose snapshot URL keeps the last part's image between parts)",
    )

    tls_ca_file: str | None = Field(
        None,
        description="https, rtsps: trust the camera whose certificate verifies against this PEM file (the CA that "
        "signed it, or the camera's own certificate), its host name matching the URL's; relative to the "
        "config file. Unset, with no tls_fingerprint_sha256: the system's CAs; a camera whose certificate "
        "does not verify (self-signed) is not read, open_failed naming its fingerprint",
    )
    tls_fingerprint_sha256: str | None = Field(
        None,
        description="https, rtsps: trust the camera that presents exactly this certificate (its SHA-256, AB:CD:... "
        "as the camera's web page or `openssl x509 -fingerprint -sha256` shows it; CA, host name and dates "
        "then not checked). A camera presenting another one is refused, nothing sent",
    )

    @field_validator("url")
    @classmethod
    def _scheme_lower(cls, v: str) -> str:
        m = _ANY_CASE_SCHEME.match(v)
        return v if m is None else m.group(0).lower() + v[m.end() :]

    @field_validator("tls_fingerprint_sha256")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        from devices.camera.access import normal_fingerprint

        return None if v is None else normal_fingerprint(v)

    @property
    def kind(self) -> CameraKind:
        u = self.url
        if re.fullmatch(r"usb:\d+", u):
            return CameraKind.USB
        if _STREAM_URL.match(u):
            return CameraKind.STREAM
        return CameraKind.PATH

    @property
    def shown_url(self) -> str:
        """``url`` as messages, status and logs show it: its password masked, user and host kept."""
        return mask_credentials(self.url)

    def cross_check(self, name: str, cfg: Any, report: Any) -> None:
        """``edge-agent validate``: an https camera trusted by neither setting is read only if its certificate
        verifies against the system's CAs; a camera's own (self-signed) one does not, and such a camera,
        read unchecked before, is refused at start (a warning here, so that an upgrade says it first).
        ``pixel_bits`` and ``bayer`` on a camera OpenCV decodes itself (``_read_by_ffmpeg``), where they do
        nothing."""
        if self._read_by_ffmpeg():
            for key, what in (
                ("pixel_bits", "to 8-bit colour (a 16-bit Mono12 recording comes out near black)"),
                ("bayer", "as its driver or codec gives them (a raw mosaic stays a grey checkerboard)"),
            ):
                if getattr(self, key) is not None:
                    report.warning(
                        f"sources.{name}.{key}",
                        f"does nothing for {self.shown_url!r}: it applies to an image folder's files and an HTTP "
                        f"camera's images, and OpenCV decodes a USB device's, a stream's or a single file's "
                        f"frames (a video, or one image given as the url) {what} before any setting of ours; "
                        "send 8-bit frames, or save the images as files for a folder camera (its url the "
                        "folder)",
                    )
        if self.url.lower().startswith(("https://", "rtsps://")) and not (
            self.tls_ca_file or self.tls_fingerprint_sha256
        ):
            kind = self.url.split(":", 1)[0].lower()
            report.warning(
                f"sources.{name}.url",
                f"an {kind} camera trusted by neither tls_fingerprint_sha256 nor tls_ca_file: it is read only if "
                "its certificate verifies against this machine's CAs; a camera's own (self-signed) certificate "
                "does not, and the camera is then refused (open_failed names the fingerprint it presents, to "
                "check and set in tls_fingerprint_sha256)",
            )

    def _read_by_ffmpeg(self) -> bool:
        """A USB device, an rtsp/rtmp/udp/tcp stream or a path that is not a folder: OpenCV decodes its frames
        (an http camera is read by our own MJPEG and snapshot readers, or by FFmpeg when it serves a video: not
        known here). A path that exists by what it is, as the camera opens it (a folder, even one named
        ``shots.png``; a file of any name, a device node such as /dev/video0), else by its name (a video's or an
        image's suffix: one image given as the url is opened as a video of one frame, a 16-bit one read near
        black)."""
        if self.kind is CameraKind.USB or self.url.lower().startswith(_FFMPEG_PREFIXES):
            return True
        if self.kind is not CameraKind.PATH:
            return False
        try:
            path = Path(self.url)
            if path.exists():
                return not path.is_dir()
        except (OSError, ValueError):  # a name the file system cannot take or look at: judged by the name
            pass
        return self.url.lower().endswith((*_VIDEO_SUFFIXES, *IMAGE_TYPES))

    @model_validator(mode="after")
    def _check(self) -> CameraSettings:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both 'width' and 'height' to resize, or neither")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        if self.watch and (self.kind is not CameraKind.PATH or self.loop):
            raise ValueError("watch is for a folder of images (url: a folder path), without loop")
        if self.url.startswith("usb:") and self.kind is not CameraKind.USB:
            raise ValueError(
                f"url {self.shown_url!r}: a USB camera is 'usb:' and a device index, e.g. 'usb:0'"
            )
        if (self.tls_ca_file or self.tls_fingerprint_sha256) and not self.url.lower().startswith(
            ("https://", "http://", "rtsps://")  # http: a camera that redirects to its https page
        ):
            raise ValueError(
                "tls_ca_file and tls_fingerprint_sha256 are for an http(s):// or rtsps:// camera URL (its TLS); "
                f"{self.shown_url!r} is not one"
            )
        return self
