"""sdg-twin: evaluate a Solar Digital Grid demonstration zone before it is built.

A scenario script needs three names::

    import twin
    scenario = twin.load_scenario("scenarios/sdg_zone.yaml", {"days": 2})
    result = twin.run(scenario, out="runs/two-days")
    print(result.kpis["self_sufficiency"])
"""

from twin.run import RunResult, run
from twin.scenario import Scenario, ScenarioError, load_scenario
from twin.world import SimulationError

__all__ = ["RunResult", "Scenario", "ScenarioError", "SimulationError", "load_scenario", "run"]
