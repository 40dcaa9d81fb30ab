"""What both OCPP roles share: sub-protocol, security profiles 1/2, malformed-frame handling.

Security profile 1 is HTTP Basic authentication on the WebSocket upgrade (user name = station
id, password 16-40 bytes); profile 2 adds TLS with a server certificate. Both sides of this
package refuse TLS below 1.2.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from datetime import UTC, datetime

from ocpp.messages import MessageType
from ocpp.v201 import ChargePoint

log = logging.getLogger("components.hil")

SUBPROTOCOL = "ocpp2.0.1"


def utc_now() -> datetime:
    """Current UTC time."""
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """OCPP timestamp: ISO 8601 UTC with 'Z', millisecond precision."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def basic_auth_header(station_id: str, password: str) -> dict[str, str]:
    """``Authorization`` header of security profiles 1 and 2."""
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, None if absent/invalid."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode(
            "utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def server_tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """TLS server context of security profile 2: the server certificate, TLS >= 1.2."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS client context of security profile 2: verify the CSMS certificate, TLS >= 1.2."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class RobustChargePoint(ChargePoint):
    """``ocpp.v201.ChargePoint`` that answers unreadable frames instead of dropping them.

    A frame that is not JSON, not an array, or has no readable message id gets a CALLERROR
    ``RpcFrameworkError`` with message id ``"-1"`` (OCPP-J's id for "could not be read"); a
    CALL with an unknown message type gets ``MessageTypeNotSupported``. Every such frame is
    logged. Everything else goes to the ``ocpp`` package's routing, which answers unknown
    actions with ``NotSupported``/``NotImplemented`` and invalid payloads with
    ``FormatViolation`` and friends.
    """

    async def route_message(self, raw_msg):
        try:
            msg = json.loads(raw_msg)
        except (TypeError, ValueError):
            return await self._frame_error("-1", "RpcFrameworkError", "frame is not valid JSON",
                                           raw_msg)
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            return await self._frame_error("-1", "RpcFrameworkError",
                                           "frame is not an OCPP-J array with a message id",
                                           raw_msg)
        if msg[0] not in (MessageType.Call, MessageType.CallResult, MessageType.CallError):
            return await self._frame_error(msg[1], "MessageTypeNotSupported",
                                           f"message type {msg[0]!r} is not supported", raw_msg)
        return await super().route_message(raw_msg)

    async def _frame_error(self, unique_id: str, code: str, description: str, raw: object
                           ) -> None:
        log.warning("%s: malformed OCPP frame (%s): %.200r", self.id, description, raw)
        await self._send(json.dumps([MessageType.CallError, unique_id, code, description, {}],
                                    separators=(",", ":")))
