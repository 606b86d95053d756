"""The registry's exception hierarchy.

`RegistryError` is an operational failure (disk, database); `BadModelError` means the caller
handed us something unusable (exit 2); `VerificationError` means bytes or signatures do not
check out (exit 3). Messages name the file, field or key and say what to do.
"""


class RegistryError(Exception):
    """Base of every registry failure; on its own an operational error (exit 1)."""


class BadModelError(RegistryError):
    """A model folder, manifest or argument is unusable as given (exit 2)."""


class BadIdError(BadModelError):
    """A model, plan or blob id that is not `sha256:<64 hex digits>` (exit 2)."""


class NotFoundError(BadModelError):
    """An id or name that this registry does not know (exit 2)."""


class VerificationError(RegistryError):
    """A signature, digest or signer did not check out (exit 3)."""
