"""Errors of the model package format: one root, one subclass per kind of failure.

    PackageError                 root; ``.code`` is a stable short key, ``str(e)`` one clear line
    ├── SignatureError           unsigned, untrusted signer, signature does not match the manifest
    ├── IntegrityError           digest or size mismatch, file listed but absent, present but unlisted
    ├── UnsafeArchiveError       truncated / not an archive, path escape, links, bomb, duplicate entries
    ├── ManifestError            unreadable manifest, unknown schema version, invalid fields
    ├── SpecMismatchError        the model's inputs/outputs disagree with the manifest
    └── GoldenError              an engine does not reproduce the golden outputs within tolerance

Every message names the package (file name) and the entry, and says what to do where there is
something to do.
"""

from __future__ import annotations


class PackageError(Exception):
    code = "package_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class SignatureError(PackageError):
    code = "bad_signature"


class IntegrityError(PackageError):
    code = "digest_mismatch"


class UnsafeArchiveError(PackageError):
    code = "unsafe_archive"


class ManifestError(PackageError):
    code = "bad_manifest"


class SpecMismatchError(PackageError):
    code = "spec_mismatch"


class GoldenError(PackageError):
    code = "golden_mismatch"


# a GoldenError's code when a golden file could not be read for a passing error of the machine (out of file
# descriptors, an I/O error), not of the file: the same bytes read again later may pass
GOLDEN_UNREADABLE = "golden_unreadable"
# a GoldenError's code when a golden set needs more memory than the gateway has free: refused at a swap (the same
# every time: retried, it was fetched again every minute), but at a start, of a version that loaded here before,
# the machine's moment (the start fails, the folder kept), never a reason to set the fleet's version aside
GOLDEN_NO_MEMORY = "golden_no_memory"
