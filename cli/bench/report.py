"""The benchmark's report: one JSON (numbers as fractions, everything the run used) and one
Markdown table per split with the paper's Table 1 values beside ours (percent)."""
from __future__ import annotations

import dataclasses
import json
import pathlib

from .protocol import COMMON_DEVIATIONS, Protocol

ROWS = [  # (key in the summary, label, which paper value sits beside it)
    ("accuracy", "pixel accuracy", "accuracy"),
    ("miou", "mIoU (standard)", "miou:miou"),
    ("paper_miou", "mIoU as the authors' ImageNet script computes it: acc / (2 - acc)", "miou:paper_miou"),
    ("map", "mAP (per image, authors' two-channel AP)", "map"),
]


def split_report(rule: Protocol, scores, failures: list, skipped: list, settings, seconds: float) -> dict:
    summary = scores.summary()
    if not rule.binary:
        summary.pop("paper_miou", None)
    chosen = {k: v for k, v in dataclasses.asdict(settings).items() if k in rule.settings_fields()
              or k in ("unet", "t5", "clip_l", "vae", "weight_dtype", "max_megapixels")}
    changed = {k: chosen[k] for k, v in rule.settings_fields().items() if chosen.get(k, v) != v}
    return {
        "benchmark": rule.name,
        "title": rule.title,
        "scored": summary.get("images", 0),
        "failed": len(failures),
        "failures": failures,
        "skipped": [{"key": k, "reason": r} for k, r in skipped],
        "metrics": summary,
        "paper_table1": rule.paper,
        "paper_miou_is": rule.paper_miou_is,
        "protocol": {"settings": {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in chosen.items()},
                     "decision": rule.decision, "score_size": 224,
                     "picture_resize": [size for size, _ in rule.resize],
                     "changed_from_protocol": changed},
        "deviations": COMMON_DEVIATIONS + list(rule.deviations),
        "seconds": seconds,
    }


def _paper_value(report: dict, rule: str):
    key, _, ours = rule.partition(":")
    if ours and report["paper_miou_is"] != ours:
        return None
    return report["paper_table1"].get(key)


def failure_reasons(failures: list[dict]) -> list[tuple[str, list[str]]]:
    """(reason, the keys that failed for it), most frequent first. An image's own key in its
    reason (a path, say) is written <image>, so images failing alike count as one reason."""
    groups: dict[str, list[str]] = {}
    for failure in failures:
        key, error = failure["key"], str(failure.get("error") or "no maps returned")
        groups.setdefault(error.replace(key, "<image>") if key else error, []).append(key)
    return sorted(groups.items(), key=lambda item: -len(item[1]))  # stable: first seen first among equals


def failure_lines(failures: list[dict], shown: int = 5) -> list[str]:
    """The failures by reason, with counts and a few keys each (report.json lists every one)."""
    reasons = failure_reasons(failures)
    lines = [f"Failed: {len(failures)} image{'s' if len(failures) != 1 else ''}, by reason:", ""]
    for reason, keys in reasons[:shown]:
        examples = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        lines.append(f"- {len(keys)} x {reason} ({examples})")
    if len(reasons) > shown:
        lines.append(f"- ... and {len(reasons) - shown} other reasons (report.json lists every failure)")
    return lines


def markdown(splits: list[dict], limit: int | None = None) -> str:
    lines = []
    for split in splits:
        metrics = split["metrics"]
        scope = f"first {limit} images" if limit else "all images"
        lines += [f"### {split['title']} ({split['scored']} scored, {split['failed']} failed; {scope})", ""]
        if split["scored"]:
            lines += ["| metric | this run | paper, Table 1 (Flux) |", "|---|---|---|"]
        else:
            lines.append("No image was scored, so there are no metrics.")
        for key, label, rule in ROWS:
            if key not in metrics or not split["scored"]:
                continue
            paper = _paper_value(split, rule)
            lines.append(f"| {label} | {100 * metrics[key]:.2f} | {'' if paper is None else f'{paper:.2f}'} |")
        if split["failures"]:
            lines += ["", *failure_lines(split["failures"])]
        if split["protocol"]["changed_from_protocol"]:
            lines.append(f"\nChanged from the paper's protocol: {split['protocol']['changed_from_protocol']}")
        lines.append("")
    return "\n".join(lines)


def write(splits: list[dict], out: pathlib.Path, limit: int | None = None) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    as_json, as_md = out / "report.json", out / "report.md"
    as_json.write_text(json.dumps({"limit": limit, "splits": splits}, indent=2, default=float) + "\n")
    as_md.write_text(markdown(splits, limit) + "\n")
    return [as_json, as_md]
