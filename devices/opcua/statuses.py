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


def code_of(status: int | ua.StatusCode) -> int:
    """The status code ``status`` by its code alone (its high 16 bits, OPC UA Part 4 7.39): the one form every
    status is matched in, by value or by name. A server may set the low bits (StructureChanged, SemanticsChanged,
    the DataValue info type 0x400 with its limit and overflow bits) on any code: matched by its whole value,
    BadNodeIdUnknown | 0x400 was not "no such node" (a target's type read answered so was retried as busy for
    good), BadTypeMismatch | 0x400 not a type refused."""
    value = status.value if isinstance(status, ua.StatusCode) else status
    return int(value) & 0xFFFF0000


def code_name(status: int | ua.StatusCode) -> str:
    """The name of the status code ``status`` by its code alone (``code_of``): asyncua names one carrying info
    bits (BadTooManyOperations | 0x400) "Bad", so a Browse answered so was taken as telling nothing (7
    written), and a write answered so was refused instead of retried as busy."""
    return ua.StatusCode(ua.UInt32(code_of(status))).name


def busy(status: int | None) -> bool:
    """Whether the status code ``status`` (None: no status) says "not now" (``BUSY``): retried, not refused."""
    return status is not None and code_name(status) in BUSY
