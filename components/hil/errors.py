"""Errors of the hardware-in-the-loop clients, shared by the Modbus and OCPP sides."""

from __future__ import annotations


class HILError(Exception):
    """Base of every error of the hardware-in-the-loop clients."""


class DeviceTimeoutError(HILError, TimeoutError):
    """The device (or charging station) did not answer within the timeout."""


class DeviceConnectionError(HILError, ConnectionError):
    """The device could not be reached, even after reconnecting with back-off."""


class DeviceRejectedError(HILError):
    """The device answered with an error (Modbus exception, OCPP ``Rejected`` or CALLERROR).

    Attributes
    ----------
    code : int or str
        Modbus exception code, or OCPP status / CALLERROR code.
    """

    def __init__(self, message: str, code: int | str):
        super().__init__(message)
        self.code = code
