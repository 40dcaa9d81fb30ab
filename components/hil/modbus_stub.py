"""SunSpec Modbus TCP server around a device of :mod:`components.hil.devices` (pymodbus).

The register map is served from holding registers (function codes 3, 6, 16, 22, 23); the
device is advanced to the wall clock before every request, so measurements, timers and
heartbeats are current whenever a client looks. Read-only registers and addresses outside the
map answer exception 2, refused setpoints exception 3 (and are logged); other function codes
answer exception 1. The server answers every unit id, like most Modbus TCP devices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Self

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from components.hil.devices import DERDevice, WriteRefused

log = logging.getLogger("components.hil")

REGISTER_FUNCTIONS = {3, 6, 16, 22, 23}  # holding registers: read, write, mask, read/write


def _blocks(device: DERDevice) -> list[SimData]:
    """The map as pymodbus blocks: runs of registers with the same access."""
    base, regs = device.map.base, device.image.registers
    writable = device.writable_addresses()
    out: list[SimData] = []
    start = 0
    for i in range(1, len(regs) + 1):
        if i == len(regs) or ((base + i) in writable) != ((base + start) in writable):
            out.append(SimData(base + start, values=list(regs[start:i]),
                               datatype=DataType.REGISTERS,
                               readonly=(base + start) not in writable))
            start = i
    return out


class SunSpecModbusServer:
    """A Modbus TCP server serving one SunSpec device.

    Parameters
    ----------
    device : DERDevice
        The device (PV inverter or battery) whose map is served.
    host : str
        Listen address; loopback unless told otherwise.
    port : int
        TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    clock : callable, optional
        Monotonic seconds; the device time is ``clock() - clock_at_start``.
    """

    def __init__(self, device: DERDevice, host: str = "127.0.0.1", port: int = 502,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self.host = host
        self.requested_port = int(port)
        self.port: int | None = None
        self._clock = clock
        self._t0 = 0.0
        self._server: ModbusTcpServer | None = None

    def device_time(self) -> float:
        """Seconds since the server started (the device's clock). [s]"""
        return self._clock() - self._t0

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None,
                      ) -> ExcCodes | None:
        if function_code not in REGISTER_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        t = self.device_time()
        try:
            if set_values is None:
                self.device.advance(t)
            else:
                self.device.write(address, [int(v) for v in set_values], t)
        except WriteRefused as exc:
            log.warning("%s stub: refused write at %d (%d registers): %s", self.device.KIND,
                        address, len(set_values or []), exc.reason)
            return ExcCodes(exc.code)
        off = self.device.map.base - start_address
        image = self.device.image.registers
        registers[off:off + len(image)] = image
        return None

    async def start(self) -> int:
        """Bind and serve in the background; return the port actually bound."""
        if self._server is not None:
            raise RuntimeError("server already started")
        sim = SimDevice(0, simdata=_blocks(self.device), action=self._action)
        self._t0 = self._clock() - self.device.t_s
        self._server = ModbusTcpServer(sim, address=(self.host, self.requested_port))
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way
            self._server = None
            raise OSError(f"cannot listen on {self.host}:{self.requested_port} (address in use "
                          "or not available)") from exc
        sockets = self._server.transport.sockets  # asyncio.Server once listening
        self.port = int(sockets[0].getsockname()[1])
        log.info("%s stub: SunSpec Modbus TCP on %s:%d (models %s at %d)", self.device.KIND,
                 self.host, self.port, list(self.device.map.model_ids), self.device.map.base)
        return self.port

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
