"""`localagent run --model auto`: the variant `localagent recommend` names for a tag (or for
every stored task), read from the results database, with one line saying which and why.
No recommendation is a ConfigError whose hint is the bench command that would give one."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from localagent.bench.capability import MapFilter, Variant, load_map
from localagent.bench.recommend import Prefer, Recommendation, group_args, recommend, recommended_groups
from localagent.errors import ConfigError


@dataclass(frozen=True)
class AutoPick:
    variant: Variant
    recommendation: Recommendation

    @property
    def line(self) -> str:
        """'auto: smollm2-135m json for tag read (prefer cost): 3/3 trials on 1 task ...'"""
        r = self.recommendation
        return f"auto: {self.variant.label} for {r.group} (prefer {r.prefer}, bar {r.min_success:.0%}): {r.text}"

    def as_dict(self) -> dict[str, object]:
        r = self.recommendation
        return {
            "model": self.variant.model,
            "variant": self.variant.label,
            "group": r.group,
            "prefer": r.prefer,
            "min_success": r.min_success,
            "why": r.text,
        }


def pick(tag: str | None, prefer: Prefer, min_success: float) -> AutoPick:
    """The recommended variant for the tasks tagged `tag` (None: all stored tasks). An empty
    store, a tag no task has, or no variant at the bar: a LocalAgentError saying what to run."""
    cmap, tasks_dir = load_map(MapFilter(tags=(tag,) if tag else ()))
    groups = recommended_groups(cmap, (tag,) if tag else ())
    group = groups[0]
    rec = recommend(group, prefer, min_success, tasks_dir)
    if rec.use is None:
        if rec.undecided and rec.undecided[0].command:
            hint = f"more trials would settle it: {rec.undecided[0].command}"
        else:
            args = ["localagent", "bench", "--model", "ALIAS", "--baseline", "HOSTED", *group_args(group, tasks_dir)]
            hint = f"bench a stronger model on these tasks: {shlex.join(args)}; or lower --min-success"
        raise ConfigError(f"--model auto has nothing to run for {group.title}: {rec.text}", hint=hint)
    chosen = next(s.variant for s in group.variants if s.label == rec.use.label)
    return AutoPick(chosen, rec)
