"""Headless engine: data sets, model zoo, training, defenders, attackers, the oracle.

Nothing under `engines` imports Textual; the TUI observes the engine from outside.
"""
