"""Attackers by name. Each attack lives in its own module here and registers itself with
`@ATTACKERS.register("name")`; nothing else needs to change to add one."""

from engines.attackers.base import ATTACKERS, AttackContext, Attacker, AttackerParams

__all__ = ["ATTACKERS", "AttackContext", "Attacker", "AttackerParams"]
