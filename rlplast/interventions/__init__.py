"""Interventions against plasticity loss, composable from config."""
