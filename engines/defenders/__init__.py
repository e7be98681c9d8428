"""Defenders by name. Each defence lives in its own module here and registers itself with
`@DEFENDERS.register("name")`; nothing else needs to change to add one."""

from engines.defenders.base import DEFENDERS, Defender, DefenderContext, NoParams

__all__ = ["DEFENDERS", "Defender", "DefenderContext", "NoParams"]
