"""Hardware-in-the-loop: protocol-faithful device stubs and the clients that command them.

* :mod:`~components.hil.sunspec` - SunSpec model maps (from the SunSpec Alliance definitions).
* :mod:`~components.hil.devices` - PV inverter and battery physics with SunSpec 1/701/702/704/802.
* :mod:`~components.hil.modbus_stub` - the Modbus TCP server around a device (pymodbus).
* :mod:`~components.hil.smart_charging` - OCPP 2.0.1 charging-profile logic.
* :mod:`~components.hil.ocpp_station` - OCPP 2.0.1 charging-station stub.
* :mod:`~components.hil.ocpp_csms` - the CSMS the co-simulation commands chargers with.
* :mod:`~components.hil.clients` - synchronous clients for the co-simulation adapters.
* :mod:`~components.hil.cli` - ``hil_main(argv)``: ``stub pv|battery|evse``, ``csms``.

Every listener binds to 127.0.0.1 unless an address is given.
"""

from components.hil.cli import hil_main

__all__ = ["hil_main"]
