"""A fine-tuning run's report: report.md (before/after table, generations, data problems) and the
loss curve as a PNG (drawn with Pillow, no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

from finetune.data import DataReport


def draw_loss_curve(history: list[dict], evals: list[dict], path: Path, size=(900, 420)) -> Path:
    """Training loss per logged step (blue) and eval loss (orange dots)."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 70, 20, 30, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    points = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
    dots = [(e["step"], e["eval_loss"]) for e in evals if e.get("eval_loss") is not None]
    values = [v for _, v in points + dots]
    if not values:
        draw.text((left, top), "no losses recorded", fill="black")
        image.save(path)
        return path
    max_step = max([s for s, _ in points + dots] + [1])
    lo, hi = min(values), max(values)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / max_step
        y = top + (height - top - bottom) * (1 - (value - lo) / (hi - lo))
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="#999999")
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        _, y = xy(0, value)
        draw.line([left, y, width - right, y], fill="#eeeeee")
        draw.text((8, y - 6), f"{value:.3f}", fill="#333333")
    for i in range(5):
        step = max_step * i / 4
        x, _ = xy(step, lo)
        draw.text((x - 10, height - bottom + 8), f"{step:.0f}", fill="#333333")
    draw.text((width // 2 - 20, height - 22), "step", fill="#333333")
    draw.text((left, 8), "training loss (blue), eval loss (orange)", fill="#333333")
    if len(points) > 1:
        draw.line([xy(s, v) for s, v in points], fill="#2563eb", width=2)
    elif points:
        x, y = xy(*points[0])
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="#2563eb")
    for s, v in dots:
        x, y = xy(s, v)
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill="#f97316")
    image.save(path)
    return path


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_report(metrics: dict, out: Path, data: DataReport) -> Path:
    draw_loss_curve(metrics["history"], metrics["evals"], out / "loss_curve.png")
    change = metrics.get("eval_loss_change")
    lines = [
        "# Fine-tuning report",
        "",
        f"{metrics['setup']}; optimizer {metrics['optimizer']}.",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| eval loss ({metrics['eval_examples']} held-out examples) | {_fmt(metrics['eval_loss_before'])} | "
        f"{_fmt(metrics['eval_loss_after'])} |",
        f"| perplexity | {_fmt(metrics['perplexity_before'], 2)} | {_fmt(metrics['perplexity_after'], 2)} |",
        "",
        f"Eval loss change: {'—' if change is None else f'{change:+.1%}'}. "
        f"{metrics['steps']} steps ({metrics['epochs_done']} epochs) on {metrics['train_examples']} examples, "
        f"{metrics['tokens']:,} tokens in {metrics['train_seconds']:.1f} s: **{metrics['tokens_per_s']:,.0f} tokens/s**"
        + (f", peak GPU memory {metrics['peak_gpu_memory_gib']} GiB" if metrics.get("peak_gpu_memory_gib") else "")
        + (f", model FLOPs utilisation {metrics['mfu']:.1%}" if metrics.get("mfu") else "") + ".",
        "",
        "![loss curve](loss_curve.png)",
        "",
        f"Data: {data.good} of {data.rows} rows usable"
        + (f"; {len(data.bad)} bad rows:" if data.bad else "."),
    ]
    lines += [f"- `{f}` line {n}: {reason}" for f, n, reason in data.bad[:20]]
    if len(data.bad) > 20:
        lines.append(f"- ... and {len(data.bad) - 20} more")
    lines += ["", "## Generations before and after (greedy)", ""]
    for sample in metrics["samples"]:
        lines += [f"**{sample['prompt']}**", "", f"- before: {sample['before'] or '(empty)'}",
                  f"- after: {sample['after'] or '(empty)'}", ""]
    lines += ["", f"Adapter: `{metrics['adapter_dir']}` — use it with `python -m assistant ask ... --adapter "
              f"{metrics['adapter_dir']}` or `python -m ui --adapter {metrics['adapter_dir']}`."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
