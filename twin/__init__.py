"""sdg-twin: evaluate a Solar Digital Grid demonstration zone before it is built.

A scenario script needs three names::

    import twin
    scenario = twin.load_scenario("scenarios/sdg_zone.yaml", {"days": 2})
    result = twin.run(scenario, out="runs/two-days")
    print(result.kpis["self_sufficiency"])
"""

from importlib import import_module

# Imported on first use, so that light commands (`twin ledger verify`) do not load the
# simulation stack.
_EXPORTS = {
    "RunResult": "twin.run", "run": "twin.run",
    "Scenario": "twin.scenario", "ScenarioError": "twin.scenario",
    "load_scenario": "twin.scenario",
    "SimulationError": "twin.world",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'twin' has no attribute {name!r}")
