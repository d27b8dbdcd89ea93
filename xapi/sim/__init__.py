"""A pool in a box: `xapi sim --hosts N` (xapi.sim.supervisor)."""
