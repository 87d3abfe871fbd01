"""`dlrun --help` in a fraction of a second. Hydra's help lists every config group's options with
one lookup per group (~90 with Hydra's own groups), and each lookup builds a fresh config
repository, deep-copying every config: ~2 s of a 2 s command. The options cannot change within
one process, so one repository serves every lookup; the printed text is Hydra's own."""
from __future__ import annotations

HELP_FLAGS = ("--help", "-h", "--hydra-help")


def share_group_listing() -> None:
    """Make Hydra's group-option lookups reuse one config repository per (config, overrides)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    repos: dict = {}

    def get_group_options(self, group_name: str, results_filter=ObjectType.CONFIG, config_name=None,
                          overrides=None) -> list[str]:
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repos:
            repos[key] = self._parse_overrides_and_create_caching_repo(config_name, list(overrides or ()))[1]
        return repos[key].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options
