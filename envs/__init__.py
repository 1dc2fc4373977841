"""Shifting environments: task-sequence wrappers registered under the ``rlplast/`` namespace."""
