"""EV fleet: SimPy trip chains, charging sites and V2G chargers, battery ageing."""
