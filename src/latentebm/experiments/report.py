"""The reproduce report: ``index.html`` and ``README.md`` with every figure and each of the
lecture's claims beside the number measured for it, plus ``claims.json`` (the same verdicts,
machine-readable).

Every measured number is read here from the experiment's own ``metrics.json`` and shown with
the key it came from; run facts (command line, version, seed, times, machine, load) come from
the reproduce state file. All three files are written atomically.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_path, write_json
from .claims import ClaimResult, claims_for, path_text

__all__ = ["format_value", "measured_text", "write_report"]

TITLE = "Reproducing the lecture: regularized latent-variable energy-based models"


def format_value(value: Any) -> str:
    """A measured value as the report prints it (floats to 4 significant digits).

    Parameters
    ----------
    value : object
        A value from ``metrics.json``.

    Returns
    -------
    str
        ``"null"`` for None, ``"true"``/``"false"`` for bools, else the value as text.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def measured_text(result: ClaimResult) -> list[str]:
    """``key = value`` for each number a claim was judged on.

    Parameters
    ----------
    result : ClaimResult
        One judged claim.

    Returns
    -------
    list of str
        One line per entry of ``result.paths``.
    """
    return [f"{path_text(p)} = {format_value(v)}"
            for p, v in zip(result.paths, result.values, strict=True)]


def _metrics(folder: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _sections(out: Path, plan: Sequence[Any], state: dict[str, Any]) -> list[dict[str, Any]]:
    """Per experiment: its state entry, judged claims (only when it finished) and figures."""
    sections = []
    for exp in plan:
        entry = state.get("experiments", {}).get(exp.key) or {"status": "not run yet"}
        folder = out / exp.key
        metrics = _metrics(folder) if entry.get("status") == "done" else None
        results = None
        if metrics is not None:
            results = [c.evaluate(metrics) for c in claims_for(exp.key)]
        figures = sorted(p.relative_to(out).as_posix() for p in folder.rglob("*.png")
                         if not p.name.startswith(".")) if folder.is_dir() else []
        sections.append({"exp": exp, "entry": entry, "results": results, "figures": figures})
    return sections


def _status(entry: dict[str, Any]) -> str:
    if "wall_seconds" not in entry:
        return str(entry.get("status", "unknown"))
    text = f"{entry.get('status', 'unknown')} in {entry['wall_seconds']:.1f} s"
    if entry.get("resumed"):
        attempts = entry.get("attempts")
        text += (f" over {attempts} attempts (it resumed its earlier run's checkpoints)"
                 if attempts else " (resumed from an earlier, interrupted run)")
    if entry.get("git"):
        text += f"; latentebm at {entry['git']}"
    if entry.get("error"):
        text += f": {entry['error']}"
    return text


def _header_facts(state: dict[str, Any]) -> list[tuple[str, str]]:
    m = state.get("machine", {})
    load = m.get("load_average_start", [])
    return [
        ("command", state.get("command_line", "")),
        ("latentebm version", str(m.get("version", ""))
         + (f" (git commit {m['git']})" if m.get("git") else "")),
        ("budget", str(state.get("budget", ""))),
        ("seed", str(state.get("seed", ""))),
        ("started", f"{state.get('started', '')} (first run into this folder: "
                    f"{state.get('first_started', '')})"),
        ("finished", str(state.get("finished") or "still running")),
        ("machine", f"{m.get('cpu_cores', '?')} CPU cores, {m.get('processor', '')}, "
                    f"{m.get('platform', '')}; Python {m.get('python', '')}, torch "
                    f"{m.get('torch', '')} ({m.get('torch_threads', '?')} threads)"),
        ("load average at start (1, 5, 15 min)", ", ".join(f"{v:g}" for v in load)),
        ("MNIST", str(state.get("mnist", ""))),
        ("photographs", str(state.get("images", ""))),
    ]


def _held(results: list[ClaimResult] | None, n_claims: int) -> str:
    if results is None:
        return "—"
    return f"{sum(r.holds is True for r in results)} of {n_claims}"


THRESHOLDS = (
    "The lecture states its results in words; each test's numbers are this project's reading "
    "of them (latentebm/experiments/claims.py), not the lecture's. Where an untrained model, "
    "raw image windows or a trivial answer would pass a test, the test compares against that "
    "baseline, measured in the same run.")


def _markdown(sections: list[dict[str, Any]], state: dict[str, Any]) -> str:
    lines = [f"# {TITLE}", ""]
    lines += [f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}"
              for k, v in _header_facts(state)]
    lines += ["", "Every measured number is read from the experiment's `metrics.json` (in its "
              "sub-folder) and shown with its key. A claim *holds* when the test beside it "
              f"passes on those numbers. {THRESHOLDS}", "", "## Summary", "",
              "| experiment | claims that hold | wall time (s) | load average at its end | "
              "status |", "|---|---:|---:|---:|---|"]
    for s in sections:
        e = s["entry"]
        lines.append(f"| [{s['exp'].title}](#{s['exp'].key}) | "
                     f"{_held(s['results'], len(claims_for(s['exp'].key)))} | "
                     f"{e.get('wall_seconds', 0):.1f} | {e.get('load_average_end', '')} | "
                     f"{e.get('status', '')} |")
    for n, s in enumerate(sections, 1):
        exp, e = s["exp"], s["entry"]
        lines += ["", f'<a id="{exp.key}"></a>', "", f"## {n}. {exp.title} (`{exp.key}/`)", "",
                  f"- command: `{e.get('command_line', '')}`", f"- {_status(e)}"]
        if e.get("budget_note"):
            lines.append(f"- not reducible at this budget: {e['budget_note']}")
        if s["results"] is not None:
            lines += ["", "| the lecture says | measured (metrics.json key = value) | test | "
                      "verdict |", "|---|---|---|---|"]
            for r in s["results"]:
                measured = "<br>".join(f"`{t}`" for t in measured_text(r)) or r.note
                if r.note and r.paths:
                    measured += f"<br>{r.note}"
                lines.append(f"| “{_cell(r.claim.lecture)}” | {_cell(measured)} | "
                             f"{_cell(r.claim.criterion)} | **{r.verdict}** |")
        for fig in s["figures"]:
            lines += ["", f"![{fig}]({fig})"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _html(sections: list[dict[str, Any]], state: dict[str, Any]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(TITLE)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;"
        "padding:4px 8px;vertical-align:top;text-align:left}code{font-size:90%}"
        "img{max-width:100%;border:1px solid #ddd;margin:4px 0}.holds{color:#070}"
        ".does-not-hold{color:#b00}.not-measured{color:#777}</style></head><body>",
        f"<h1>{esc(TITLE)}</h1>", "<table>",
    ]
    for k, v in _header_facts(state):
        value = f"<code>{esc(v)}</code>" if k == "command" else esc(v)
        parts.append(f"<tr><th>{esc(k)}</th><td>{value}</td></tr>")
    parts += ["</table>", "<p>Every measured number is read from the experiment's "
              "<code>metrics.json</code> (in its sub-folder) and shown with its key. A claim "
              f"<em>holds</em> when the test beside it passes on those numbers. "
              f"{esc(THRESHOLDS)}</p>",
              "<h2>Summary</h2>", "<table><tr><th>experiment</th><th>claims that hold</th>"
              "<th>wall time (s)</th><th>load average at its end</th><th>status</th></tr>"]
    for s in sections:
        e = s["entry"]
        parts.append(
            f'<tr><td><a href="#{esc(s["exp"].key)}">{esc(s["exp"].title)}</a></td>'
            f"<td>{esc(_held(s['results'], len(claims_for(s['exp'].key))))}</td>"
            f"<td>{e.get('wall_seconds', 0):.1f}</td>"
            f"<td>{esc(str(e.get('load_average_end', '')))}</td>"
            f"<td>{esc(str(e.get('status', '')))}</td></tr>")
    parts.append("</table>")
    for n, s in enumerate(sections, 1):
        exp, e = s["exp"], s["entry"]
        parts += [f'<h2 id="{esc(exp.key)}">{n}. {esc(exp.title)} '
                  f"(<code>{esc(exp.key)}/</code>)</h2>",
                  f"<p>command: <code>{esc(e.get('command_line', ''))}</code><br>"
                  f"{esc(_status(e))}"]
        if e.get("budget_note"):
            parts.append(f"<br>not reducible at this budget: {esc(e['budget_note'])}")
        parts.append("</p>")
        if s["results"] is not None:
            parts.append("<table><tr><th>the lecture says</th><th>measured (metrics.json key "
                         "= value)</th><th>test</th><th>verdict</th></tr>")
            for r in s["results"]:
                measured = "<br>".join(f"<code>{esc(t)}</code>" for t in measured_text(r))
                if r.note:
                    measured += ("<br>" if measured else "") + esc(r.note)
                css = r.verdict.replace(" ", "-")
                parts.append(f"<tr><td>“{esc(r.claim.lecture)}”</td><td>{measured}</td>"
                             f"<td>{esc(r.claim.criterion)}</td>"
                             f'<td class="{css}"><b>{esc(r.verdict)}</b></td></tr>')
            parts.append("</table>")
        for fig in s["figures"]:
            parts.append(f'<figure><img src="{esc(fig)}" alt="{esc(fig)}" loading="lazy">'
                         f"<figcaption><code>{esc(fig)}</code></figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _claims_json(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in sections:
        for r in s["results"] or []:
            rows.append({"experiment": s["exp"].key, "lecture": r.claim.lecture,
                         "criterion": r.claim.criterion, "verdict": r.verdict,
                         "keys": [list(p) for p in r.paths], "values": list(r.values),
                         "note": r.note})
    return rows


def write_report(out: Path, plan: Sequence[Any], state: dict[str, Any]
                 ) -> dict[str, list[ClaimResult]]:
    """Write ``README.md``, ``index.html`` and ``claims.json`` into ``out``, atomically.

    Parameters
    ----------
    out : pathlib.Path
        The reproduce folder, one sub-folder per experiment.
    plan : sequence
        The experiments in report order (objects with ``key`` and ``title``).
    state : dict
        The reproduce state: run facts and one entry per experiment started.

    Returns
    -------
    dict
        Experiment key → its judged claims, for the experiments that finished.
    """
    sections = _sections(out, plan, state)
    for name, text in (("README.md", _markdown(sections, state)),
                       ("index.html", _html(sections, state))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    write_json(out / "claims.json", _claims_json(sections))
    return {s["exp"].key: s["results"] for s in sections if s["results"] is not None}
