"""cProfile over the monitor throughput scenario: the profile's headline (top functions by tottime).

The whole event loop runs in this thread (aiokafka included), so the profile covers the monitor,
its consumer and producer; the broker is another process and is not in it.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
from pathlib import Path

from bench.data import Dataset
from bench.env import Session, cache_dir
from bench.throughput import RunResult, run_monitor

PROJECT = ("consumer", "schemas", "vectoros", "producer", "app")


async def profile_monitor(
    session: Session, data: Dataset, topic: str
) -> tuple[RunResult, str, Path]:
    prof = cProfile.Profile()
    result = await run_monitor(session, data, topic, profile=prof)
    path = cache_dir() / "profile-monitor.prof"
    prof.dump_stats(path)
    return result, headline(prof, result.records), path


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name  # a built-in
    path = Path(filename)
    for marker in ("site-packages", "lib/python3"):
        if marker in filename:
            short = filename.split(marker, 1)[1].lstrip(os.sep)
            return f"{short}:{line}({name})"
    try:
        short = str(path.relative_to(Path.cwd()))
    except ValueError:
        short = path.name
    return f"{short}:{line}({name})"


def headline(prof: cProfile.Profile, records: int, top: int = 15) -> str:
    stats = pstats.Stats(prof, stream=io.StringIO())
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    lines = [
        f"total {total:.1f} s profiled for {records:,} records "
        f"({total / records * 1e6:.0f} µs/record under cProfile)",
        "",
        f"{'tottime s':>9}  {'share':>5}  {'µs/rec':>6}  {'calls':>10}  {'cumtime s':>9}  function",
    ]
    for func, (_, ncalls, tottime, cumtime, _) in rows:
        lines.append(
            f"{tottime:9.2f}  {tottime / total:5.1%}  {tottime / records * 1e6:6.1f}  "
            f"{ncalls:10,}  {cumtime:9.2f}  {_where(func)}"
        )
    own = [
        (func, row)
        for func, row in raw.items()
        if any(f"{os.sep}{pkg}{os.sep}" in func[0] for pkg in PROJECT) and func[2] != "<module>"
    ]
    own.sort(key=lambda kv: kv[1][3], reverse=True)
    lines += [
        "",
        f"project functions by cumtime (time inside them and what they call; top {top}):",
        "",
        f"{'cumtime s':>9}  {'µs/rec':>6}  {'calls':>10}  function",
    ]
    for func, (_, ncalls, _, cumtime, _) in own[:top]:
        lines.append(
            f"{cumtime:9.2f}  {cumtime / records * 1e6:6.1f}  {ncalls:10,}  {_where(func)}"
        )
    return "\n".join(lines)
