"""One self-contained HTML readiness report: inline CSS and SVG, no network.

Every string that comes from a contract or an observation goes through
``html.escape``; nothing from a run is ever emitted as markup.
"""

from __future__ import annotations

import html
import json
import math
import os
import urllib.parse
from pathlib import Path
from typing import Any

from harness.fsutil import atomic_write_text
from harness.hooks import Listener
from harness.model import WAIVED, CriterionResult, RunResult, Verdict, WaiverStatus

COLOR = {
    "GO": "#1a7f37",
    "NO-GO": "#cf222e",
    "UNPROVEN": "#9a6700",
    "UNPROVEN-FAST": "#9a6700",
    "WAIVED": "#8250df",
    "PASS": "#1a7f37",
    "FAIL": "#cf222e",
    "ERROR": "#cf222e",
    "SKIP": "#9a6700",
    "KILLED": "#1a7f37",
    "SURVIVED": "#1a7f37",
    "MISSED": "#9a6700",
    "CRASHED": "#9a6700",
    "REFUTED": "#cf222e",
    "NOT_RUN": "#6e7781",
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px} h2{margin:28px 0 8px;font-size:19px} h3{margin:0;font-size:16px}
.verdict{display:inline-block;padding:2px 10px;border-radius:6px;color:#fff;font-weight:700}
.banner{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:18px 20px}
.banner .big{font-size:34px;font-weight:800}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6} code,.mono{font-family:ui-monospace,Menlo,monospace;font-size:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 16px;margin:12px 0}
.muted{color:#6e7781} .cell{color:#fff;font-weight:600;text-align:center}
details summary{cursor:pointer} svg{background:#fff;border:1px solid #d0d7de;border-radius:6px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.waiver{border-left:4px solid #8250df;background:#fbefff;padding:6px 10px;margin:6px 0}
"""


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def badge(text: str) -> str:
    return f'<span class="verdict" style="background:{COLOR.get(text, "#6e7781")}">{e(text)}</span>'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) < 160 else text[:157] + "…"


# --------------------------------------------------------------------------- charts


def line_chart(
    title: str,
    points: list[tuple[float, float]],
    width: int = 420,
    height: int = 240,
    x_label: str = "step",
    y_label: str = "value",
) -> str:
    pts = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(pts) < 2:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 64, 12, 30, 40

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = (
        "".join(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#0969da"/>' for x, y in pts
        )
        if len(pts) <= 40
        else ""
    )
    mid_y = (top + height - bottom) / 2
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{e(title)}">'
        f"<title>{e(title)}</title>"
        f'<text x="{left}" y="16" font-size="12" font-weight="600">{e(_clip(title, 58))}</text>'
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
        f'y2="{height - bottom}" stroke="#8c959f"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#8c959f"/>'
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{y1:.4g}</text>'
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" '
        f'text-anchor="end">{y0:.4g}</text>'
        f'<text x="{left}" y="{height - bottom + 14}" font-size="10">{x0:g}</text>'
        f'<text x="{width - right}" y="{height - bottom + 14}" font-size="10" '
        f'text-anchor="end">{x1:g}</text>'
        f'<text class="axis-label" x="{(left + width - right) / 2:.0f}" y="{height - 6}" '
        f'font-size="11" text-anchor="middle">{e(x_label)}</text>'
        f'<text class="axis-label" x="14" y="{mid_y:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {mid_y:.0f})">{e(_clip(y_label, 28))}</text>'
        f'<polyline fill="none" stroke="#0969da" stroke-width="1.6" points="{path}"/>'
        f"{dots}</svg>"
    )


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def histogram(
    title: str,
    counts: list[float],
    ref: list[float] | None = None,
    width: int = 420,
    height: int = 250,
    y_label: str = "count",
) -> str:
    """Bars per bin; the title on its own line, the legend on the next (neither is cut
    by the other), the axes labelled."""
    if not counts:
        return ""
    series = [counts] + ([ref] if ref else [])
    top_val = max(max(s) for s in series) or 1.0
    left, right, top, bottom = 44, 12, 44, 34
    n = len(counts)
    bw = (width - left - right) / n
    bars = []
    for k, (s, color) in enumerate(zip(series, ("#0969da", "#bf8700"), strict=False)):
        for i, v in enumerate(s):
            h = (height - top - bottom) * (v / top_val)
            x = left + i * bw + (bw / 2 if k else 0)
            bars.append(
                f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bw / 2:.1f}" '
                f'height="{h:.1f}" fill="{color}" opacity="0.8"/>'
            )
    legend = '<tspan fill="#0969da">■ current</tspan>' + (
        ' <tspan fill="#bf8700">■ reference</tspan>' if ref else ""
    )
    mid_y = (top + height - bottom) / 2
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{e(title)}">'
        f"<title>{e(title)}</title>"
        f'<text x="{left}" y="16" font-size="12" font-weight="600">{e(_clip(title, 58))}</text>'
        f'<text class="legend" x="{left}" y="32" font-size="11">{legend}</text>'
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
        f'y2="{height - bottom}" stroke="#8c959f"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#8c959f"/>'
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{top_val:.4g}</text>'
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">0</text>'
        f'<text class="axis-label" x="{(left + width - right) / 2:.0f}" y="{height - 8}" '
        f'font-size="11" text-anchor="middle">bin (1 … {n})</text>'
        f'<text class="axis-label" x="12" y="{mid_y:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {mid_y:.0f})">{e(y_label)}</text>'
        f"{''.join(bars)}</svg>"
    )


def charts_from_metrics(lines: list[dict[str, Any]]) -> list[str]:
    """Line charts of metrics with a ``step`` label; bar charts of histograms."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    out = []
    for m in lines:
        value = m.get("value")
        if m.get("kind") == "histogram" and isinstance(value, list):
            counts = [float(v) for v in value]
            shares = counts and abs(sum(counts) - 1.0) < 1e-6  # fractions of the rows
            out.append(
                histogram(
                    f"{m.get('check', '')}: {m.get('name', '')}",
                    counts,
                    [float(v) for v in m.get("reference", [])] or None,
                    y_label="share of rows" if shares else "count",
                )
            )
        elif "step" in m and isinstance(value, (int, float)) and not isinstance(value, bool):
            series.setdefault((str(m.get("check", "")), str(m.get("name", ""))), []).append(
                (float(m["step"]), float(value))
            )
    for (check, name), pts in sorted(series.items()):
        out.append(line_chart(f"{check}: {name} per step", sorted(pts), y_label=name))
    return [c for c in out if c]


# --------------------------------------------------------------------------- page


def _href(target: Path, report_dir: Path | None) -> str:
    """A link to ``target`` relative to the folder the report is written to, so a report
    moved together with its bundle (uploaded, mailed as an archive) still links."""
    base = (report_dir or Path.cwd()).resolve()
    rel = os.path.relpath(target.resolve(), base)
    return urllib.parse.quote(Path(rel).as_posix())


def verdict_badges(c: CriterionResult) -> str:
    """The criterion's reported verdict; a WAIVED one shows its own verdict beside."""
    own = f' <span class="muted">own verdict</span> {badge(c.verdict.value)}' if c.waived else ""
    return badge(c.label) + own


def _waiver_box(c: CriterionResult) -> str:
    if c.waiver is None:
        return ""
    w = c.waiver
    link = f'<a href="{e(w.link)}" rel="noopener noreferrer">{e(w.link)}</a>'
    status = {
        WaiverStatus.ACTIVE: f"WAIVED until {e(w.expires)}: does not block until then",
        WaiverStatus.EXPIRED: f"waiver expired on {e(w.expires)}: the criterion blocks again",
        WaiverStatus.UNUSED: "waiver unused: the criterion is GO; remove the waiver",
    }[w.status]
    return (
        f'<div class="waiver"><b>{status}</b><br>owner {e(w.owner)} · {e(w.reason)} · {link}</div>'
    )


def _criterion_card(
    c: CriterionResult, run_dir: Path | None, meta: dict[str, Any], report_dir: Path | None
) -> str:
    parts = [
        f'<div class="card" id="{e(c.criterion_id)}"><h3>{verdict_badges(c)} '
        f'{e(c.criterion_id)} — {e(c.title)} <span class="muted">[{e(c.severity)}]</span>'
        f"</h3>",
        _waiver_box(c),
    ]
    if meta.get("statement"):
        parts.append(f"<p>{e(meta['statement'])}</p>")
    for ref in meta.get("references", []):
        parts.append(f'<div class="muted">source: {e(ref)}</div>')
    parts.append(f'<div class="muted mono">{e(c.location)}</div>')
    if c.reasons:
        parts.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in c.reasons) + "</ul>")
    if c.invariants:
        parts.append(
            "<table><tr><th>invariant</th><th>outcome</th><th>observation</th>"
            "<th>observed</th><th>expected</th></tr>"
        )
        for inv in c.invariants:
            rows = inv.judgements or ()
            if not rows:
                parts.append(
                    f"<tr><td>{e(inv.invariant_id)}</td><td>{badge(inv.outcome.value)}"
                    f"</td><td colspan=3>{e(inv.message)}</td></tr>"
                )
            for j in rows:
                mark = "" if j.ok else " ✗"
                parts.append(
                    f"<tr><td>{e(inv.invariant_id)}</td>"
                    f"<td>{badge(inv.outcome.value)}</td><td><code>{e(j.observation)}"
                    f"</code></td><td><code>{e(_fmt(j.observed))}{mark}</code></td>"
                    f"<td><code>{e(j.expected)}</code></td></tr>"
                )
        parts.append("</table>")
    if c.falsifiers:
        parts.append(
            "<table><tr><th>falsifier</th><th>kind</th><th>target</th><th>outcome</th>"
            "<th>detail</th></tr>"
        )
        for f in c.falsifiers:
            parts.append(
                f"<tr><td>{e(f.falsifier_id)}</td><td>{e(f.kind)}</td>"
                f"<td>{e(f.target)}</td><td>{badge(f.outcome.value)}</td>"
                f"<td>{e(f.message)}</td></tr>"
            )
        parts.append("</table>")
    if run_dir is not None:
        folder = run_dir / "criteria" / c.criterion_id
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            files = "".join(
                f'<tr><td><a href="{e(_href(folder / p, report_dir))}">{e(p)}</a></td>'
                f'<td class="mono">{e(m["sha256"])}</td><td>{m["size"]}</td></tr>'
                for p, m in manifest.items()
            )
            parts.append(
                f"<details><summary>evidence files ({len(manifest)})</summary><table>"
                f"<tr><th>file</th><th>sha256</th><th>bytes</th></tr>{files}</table>"
                "</details>"
            )
        metrics = folder / "metrics.jsonl"
        if metrics.is_file():
            lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            charts = charts_from_metrics(lines)
            if charts:
                parts.append('<div class="charts">' + "".join(charts) + "</div>")
    parts.append("</div>")
    return "".join(parts)


def render_html(
    result: RunResult,
    run_dir: Path | None = None,
    signature_status: str = "not checked",
    report_dir: Path | None = None,
) -> str:
    """The report page; evidence links are relative to ``report_dir`` (the folder the
    page is written to; default: the working directory)."""
    env: dict[str, Any] = {}
    crit_meta: dict[str, dict[str, Any]] = {}
    if run_dir is not None:
        env_path = run_dir / "environment.json"
        if env_path.is_file():
            env = json.loads(env_path.read_text())
        import yaml

        for c in result.criteria:
            cy = run_dir / "criteria" / c.criterion_id / "criterion.yaml"
            if cy.is_file():
                crit_meta[c.criterion_id] = (yaml.safe_load(cy.read_text()) or {}).get(
                    "criterion", {}
                )
    counts = result.counts()
    columns = [
        "PASS",
        "FAIL",
        "ERROR",
        "SKIP",
        "KILLED",
        "MISSED",
        "CRASHED",
        "SURVIVED",
        "REFUTED",
        "NOT_RUN",
    ]
    matrix = [
        "<table><tr><th>criterion</th><th>verdict</th>"
        + "".join(f"<th>{c}</th>" for c in columns)
        + "</tr>"
    ]
    for c in result.criteria:
        tally = dict.fromkeys(columns, 0)
        for inv in c.invariants:
            tally[inv.outcome.value] += 1
        for f in c.falsifiers:
            if f.outcome.value in tally:
                tally[f.outcome.value] += 1
        cells = "".join(
            f'<td class="cell" style="background:{COLOR[k] if v else "#fff"}">{v or ""}</td>'
            for k, v in tally.items()
        )
        matrix.append(
            f'<tr><td><a href="#{e(c.criterion_id)}">{e(c.criterion_id)}</a></td>'
            f"<td>{verdict_badges(c)}</td>{cells}</tr>"
        )
    matrix.append("</table>")
    env_rows = "".join(
        f"<tr><th>{e(k)}</th><td class='mono'>{e(_fmt(v))}</td></tr>" for k, v in env.items()
    )
    release = result.verdict.value
    interrupted = (
        "<p><b>The run was interrupted: the evidence is incomplete.</b></p>"
        if result.interrupted
        else ""
    )
    release_color = COLOR.get(release, "#1f2328")
    warn_not_go = [c for c in result.criteria if c.severity == "warn" and c.verdict.value != "GO"]
    warn_note = (
        f'<div id="warn-note">{len(warn_not_go)} warn criteria are not GO '
        f"({e(', '.join(c.criterion_id for c in warn_not_go[:8]))}"
        f"{' …' if len(warn_not_go) > 8 else ''}): warn criteria are reported and never "
        "block the release verdict; only blocker criteria do.</div>"
        if warn_not_go
        else ""
    )
    cards = "".join(
        _criterion_card(c, run_dir, crit_meta.get(c.criterion_id, {}), report_dir)
        for c in result.criteria
    )
    gate = getattr(result, "fail_on", "")
    gate_note = f'<div class="muted">gate: --fail-on {e(gate)}</div>' if gate else ""
    shown = [v.value for v in Verdict] + ([WAIVED] if counts[WAIVED] else [])
    denominators = ", ".join(f"{counts[v]} {v}" for v in shown)
    waived = counts[WAIVED]
    waived_note = (
        f'<div id="waived">{waived} {"criterion" if waived == 1 else "criteria"} WAIVED: '
        "not GO, and not blocking until the waiver expires (see each card)</div>"
        if waived
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Readiness report {e(result.run_id)}: {e(release)}</title>
<style>{CSS}</style></head>
<body><main>
<div class="banner">
<div class="muted">release verdict</div>
<div class="big" id="release-verdict" style="color:{release_color}">{e(release)}</div>
<div id="summary">{e(result.summary_line())}</div>
<div class="muted">{len(result.criteria)} criteria: {e(denominators)}</div>
{waived_note}
<div class="muted">run <code>{e(result.run_id)}</code> · profile {e(result.profile)} ·
seed {e(result.seed)} · {e(result.started)} → {e(result.finished)} ·
contracts <code>{e(result.contract_digest[:16])}</code></div>
{warn_note}{gate_note}
<div id="signatures">signatures: {e(signature_status)}</div>
{interrupted}</div>
<h2>Criteria × outcomes</h2>
{"".join(matrix)}
<h2>Criteria</h2>
{cards}
<h2>Environment</h2>
<table>{env_rows or '<tr><td class="muted">not recorded</td></tr>'}</table>
<p class="muted">harness {e(result.tool_version)} · generated without network access</p>
</main></body></html>
"""


def signature_status(run_dir: Path, keys: list[Path]) -> str:
    verdict = run_dir / "verdict.json"
    if not verdict.is_file():
        return "no signed verdict (incomplete run?)"
    signed = json.loads(verdict.read_text()).get("signed")
    if not signed:
        return "unsigned run"
    if not keys:
        return "signed; not verified here (pass --key PUB.pem to verify)"
    from harness.signing import load_public_key
    from harness.verify import verify_run

    problems = verify_run(run_dir, [load_public_key(k) for k in keys])
    if problems:
        return f"DO NOT VERIFY: {len(problems)} problems, first: {problems[0]}"
    return "verified: every digest, signature and the audit chain hold"


class HtmlWriter(Listener):
    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, result: RunResult) -> None:
        run_dir = Path(result.evidence_dir) if result.evidence_dir else None
        status = signature_status(run_dir, []) if run_dir else "no evidence written"
        atomic_write_text(self.path, render_html(result, run_dir, status, self.path.parent))
