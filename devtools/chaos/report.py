"""A chaos run's result, and the lines that report runs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunResult:
    seed: int
    database: str
    passed: bool = False
    seconds: float = 0.0
    kills: int = 0
    kills_busy: int = 0  # while some intent was unfinished
    deliveries: int = 0
    keys: int = 0
    intents: dict[str, int] = field(default_factory=dict)
    sandbox_calls: int = 0
    failures: list[str] = field(default_factory=list)
    needs_review: list[str] = field(default_factory=list)
    foreign_keys: int = 0  # made by the other client during the run


def line(r: RunResult) -> str:
    verdict = "PASS" if r.passed else "FAIL"
    review = f", {len(r.needs_review)} needs_review" if r.needs_review else ""
    return (
        f"seed {r.seed} {r.database}: {verdict} in {r.seconds:g} s, "
        f"{r.kills} kills ({r.kills_busy} mid-work), "
        f"{r.deliveries} deliveries, {r.keys} keys (+{r.foreign_keys} foreign), "
        f"{r.sandbox_calls} calls, "
        f"intents {dict(sorted(r.intents.items()))}{review}"
    )


def summary(results: list[RunResult]) -> str:
    rows = [("database", "runs", "passed", "failed", "kills", "needs_review")]
    for db in sorted({r.database for r in results}):
        mine = [r for r in results if r.database == db]
        rows.append((
            db, str(len(mine)), str(sum(r.passed for r in mine)),
            str(sum(not r.passed for r in mine)), str(sum(r.kills for r in mine)),
            str(sum(len(r.needs_review) for r in mine)),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        for failure in r.failures:
            out.append(f"seed {r.seed} {r.database}: {failure}")
        for review in r.needs_review:
            out.append(f"seed {r.seed} {r.database}: needs_review {review}")
    return "\n".join(out)
