"""gravity engine: cluster operations as DAGs of resumable phases.
Layers import downward only: cli, operations, scheduler, agent, executors, fsm, store, model.
"""

__version__ = "0.1.0"
