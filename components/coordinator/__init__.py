"""SDG coordinator: matches PV output to EV demand, sets charging and V2G, prices the energy."""
