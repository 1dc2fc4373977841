"""A user's package, as a new user would write it from the docs: one env, one intervention, one metric.

Listed once under ``plugins: [plastlab]`` in a config; importing it registers all three.
"""

from plastlab import envs, interventions, metrics  # noqa: F401  (imported to register)
