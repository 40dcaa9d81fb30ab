"""Scenario script: how much does doubling the rooftop PV of the default zone buy?

Runs the default zone for two days as it is and with every PV plant doubled, then prints the
KPIs side by side. Run: ``.venv/bin/python scenarios/compare_pv.py [--days N]``.
"""

from __future__ import annotations

import argparse
import tempfile

import twin
from twin.kpis import table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=float, default=2)
    args = ap.parse_args()

    base = twin.load_scenario(None, {"days": args.days})
    data = base.model_dump(mode="json")
    data["name"] = base.name + "_2x_pv"
    for plant in data["pv"]["plants"]:
        plant["kwp"] *= 2
        plant["inverter_kw"] *= 2
    for group in data["pv"]["generated"]:
        group["total_kwp"] *= 2
    doubled = twin.Scenario.model_validate(data)
    with tempfile.TemporaryDirectory() as tmp:
        results = {s.name: twin.run(s, out=f"{tmp}/{s.name}", progress=False).kpis
                   for s in (base, doubled)}
    print(table({}, columns=results))


if __name__ == "__main__":
    main()
