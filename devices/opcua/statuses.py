"""The OPC UA status names the adapter takes as "not now" (a write, a Browse or a Read answered so is made
again later, not refused for good): shared by the client and the property lookup (``properties``), which the
client imports.
"""

from asyncua import ua

# a status that says this session or its connection is gone (any other answer shows both are up)
SESSION_GONE = frozenset(
    {
        "BadSessionIdInvalid",
        "BadSessionClosed",
        "BadSessionNotActivated",
        "BadSecureChannelIdInvalid",
        "BadSecureChannelClosed",
        "BadConnectionClosed",
        "BadServerHalted",
        "BadShutdown",
        "BadCommunicationError",
        "BadTimeout",
        "BadRequestTimeout",
        "BadTcpInternalError",
        "BadDisconnect",
    }
)


# a write refused with one of these may succeed when made again: the server (or the device behind a
# gateway server) is busy, overloaded or briefly cut off, not refusing this value for good; so may one
# answered with any status saying the session or its connection is gone (BadSessionNotActivated: asyncua's
# answer once it closed the session), made again on the session the source makes next
BUSY = SESSION_GONE | frozenset(
    {
        "BadTooManyOperations",
        "BadServerTooBusy",
        "BadResourceUnavailable",
        "BadNoCommunication",
        "BadWaitingForInitialData",
        "BadOutOfService",
        "BadTooManySessions",
        "BadMaxConnectionsReached",
    }
)


def code_name(status: int) -> str:
    """The name of the status code ``status`` by its code alone (the high 16 bits): asyncua names one carrying
    info bits (BadTooManyOperations | 0x400) "Bad", so a Browse answered so was taken as telling nothing (7
    written), and a write answered so was refused instead of retried as busy."""
    return ua.StatusCode(ua.UInt32(status & 0xFFFF0000)).name


def busy(status: int | None) -> bool:
    """Whether the status code ``status`` (None: no status) says "not now" (``BUSY``): retried, not refused."""
    return status is not None and code_name(status) in BUSY
