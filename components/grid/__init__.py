"""Distribution grid: a pandapower network, SimBench background profiles, a power flow per step."""
