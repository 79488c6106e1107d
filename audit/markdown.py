"""report.md from the report dict (the same data as report.json), so the two never disagree."""

from __future__ import annotations

import json

from schemas.contracts import VIOLATION_COLUMNS

SHOWN_ROWS = 50  # rows of violations / suspects shown in report.md (the CSV files hold all)


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _share(value: object) -> str:
    return "–" if not isinstance(value, (int, float)) else f"{value:.1%}"


def table(rows: list[dict], columns: list[str], shares: tuple[str, ...] = ()) -> str:
    """A Markdown table of the given columns (share columns shown as percentages)."""
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_share(row.get(c)) if c in shares else _cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tiers_section(report: dict) -> list[str]:
    tiers = report["tiers"]
    coverage = ["tier", "k", "rows", "queries_total", "queries_covered", "share_queries_full_k", "share_pairs_full_k"]
    scores = [
        "tier",
        "score_negative_p05",
        "score_negative_p50",
        "score_negative_p95",
        "margin_min",
        "margin_p05",
        "margin_p50",
        "margin_p95",
    ]
    diversity = [
        "tier",
        "distinct_negatives",
        "distinct_texts",
        "negatives_reused",
        "max_queries_per_negative",
        "lexical_overlap_mean",
        "lexical_overlap_p95",
        "negative_chars_mean",
        "negative_chars_p95",
    ]
    return [
        "## Tiers\n",
        table(tiers, coverage, shares=("share_queries_full_k", "share_pairs_full_k")),
        "\n### Scores and margins (margin = score_positive − score_negative)\n",
        table(tiers, scores),
        "\n### Diversity\n",
        table(tiers, diversity),
    ]


def _violations_section(report: dict) -> list[str]:
    violations = report["violations"]
    status = "**clean**" if violations["total"] == 0 else f"**{violations['total']} violation(s)**"
    columns = list(VIOLATION_COLUMNS)
    return [
        f"## Contract (schemas/contracts.py): {status}\n",
        table(violations["counts"], ["tier", "violation", "rows"]),
        f"\nFirst {SHOWN_ROWS} (all in violations.csv):\n\n" if violations["total"] else "",
        table(violations["rows"][:SHOWN_ROWS], columns) if violations["total"] else "",
    ]


def _suspects_section(report: dict) -> list[str]:
    suspects = report["suspects"]
    columns = [
        "reason",
        "tier",
        "query_id",
        "positive_id",
        "negative_id",
        "score_positive",
        "score_negative",
        "margin",
    ]
    return [
        f"## False-negative suspects among mined tiers: {suspects['total']} row(s)\n",
        table(suspects["counts"], ["reason", "tier", "rows", "queries"]),
        "\nMost suspicious first (all in suspects.csv):\n\n" if suspects["total"] else "",
        table(suspects["rows"][:SHOWN_ROWS], columns) if suspects["total"] else "",
    ]


def _diversity_section(report: dict) -> list[str]:
    diversity = report["diversity"]
    same = diversity["same_text_under_ids"]
    return [
        "## Reuse and duplicates\n",
        "Mined negatives used by the most queries:\n\n",
        table(diversity["top_reused"], ["negative_id", "queries", "rows", "tiers"]),
        f"\nSame text under different ids (mined tiers): {same['texts']} text(s)\n\n",
        table(same["examples"], ["negative_text_hash", "ids", "example_ids", "rows"]) if same["texts"] else "",
    ]


def _contextual_section(report: dict) -> list[str]:
    ctx = report["contextual"]
    low, high = ctx["similarity_band"]
    kinds = [
        "generator",
        "rows",
        "pairs",
        "similarity_min",
        "similarity_p50",
        "similarity_max",
        "in_band",
        "margin_mean",
        "lexical_overlap_mean",
    ]
    examples = ["generator", "positive_id", "edit", "similarity_to_positive", "negative_start"]
    return [
        f"## Contextual tier\n\nConfigured kinds: {', '.join(ctx['kinds_configured'])}; "
        f"similarity_to_positive band [{low}, {high}).\n\n",
        table(ctx["by_generator"], kinds),
        "\nExamples:\n\n",
        table(ctx["examples"], examples),
    ]


def _other_table(other: dict) -> str:
    return "\nOther mine statistics:\n\n" + table([other], list(other)) if other else ""


def _selection_section(report: dict) -> list[str]:
    selection = report["selection"]
    dropped = [{"guard": guard, **values} for guard, values in selection["dropped"].items()]
    histogram = selection["deeper_search_histogram"]
    return [
        f"## Mining selection (manifest)\n\nmine stage finished: {_cell(selection['mine_finished'])}; "
        f"candidates seen: {_cell(selection['candidates_seen'])}\n\n",
        table(dropped, ["guard", "rows", "share_of_candidates"], shares=("share_of_candidates",)),
        f"\nDeeper searches per query (histogram): `{json.dumps(histogram)}`\n" if histogram is not None else "",
        _other_table(selection["other"]),
    ]


def _compare_section(report: dict) -> list[str]:
    compare = report.get("compare")
    if not compare:
        return []
    return [
        f"## Compared with {compare['other_run_dir']}\n\n",
        table(compare["tiers"], ["tier", "metric", "this", "other", "delta"]),
    ]


def render_markdown(report: dict) -> str:
    """The whole report.md."""
    plots = report.get("plots") or []
    parts = [
        f"# negforge audit of {report['run_dir']}\n\n",
        "manifest: " + ("found" if report["manifest"]["found"] else "**missing** (default config assumed)") + "\n\n",
        *_tiers_section(report),
        "\n" + "".join(f"![{name}]({name})\n" for name in plots),
        "\n",
        *_violations_section(report),
        "\n",
        *_suspects_section(report),
        "\n",
        *_diversity_section(report),
        "\n",
        *_contextual_section(report),
        "\n",
        *_selection_section(report),
        "\n",
        *_compare_section(report),
    ]
    return "".join(parts)
