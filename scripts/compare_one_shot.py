"""Summarises scripts/compare-one-shot.sh's runs: what one-shot MoCAN and the primal-dual
baseline each spent and achieved, over seeds.

    python3 scripts/compare_one_shot.py OUT_DIR COMMAND

reads OUT_DIR/seed-<s>/{one_shot,primal_dual}/ (stages.json, eval/report.json, the
rounds' round.json, dual/dual.json) and writes OUT_DIR/comparison.json, comparison.md and
comparison.svg. A method's cost is that of its own stages (one-shot: offline_scores, dual,
relabel, dpo; primal-dual: its rounds); the stages both share (data, tokenizer, the
reference and score models, trained once by the one-shot run and given to the primal-dual
run) are reported apart, and the evaluation is in neither.
"""
import json
import math
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ONE_SHOT_STAGES = ("offline_scores", "dual", "relabel", "dpo")
SHARED_STAGES = ("data", "tokenizer", "reference", "reward_model")  # and cost_model*


def read_json(path):
    return json.loads(Path(path).read_text())


def stages_of(run_dir):
    return {stage["name"]: stage for stage in read_json(run_dir / "stages.json")["stages"]}


def cost(stages):
    """Wall seconds and compute counts summed over `stages` (stages.json entries)."""
    total = {"wall_s": 0.0, "sampled_tokens": 0, "forward_tokens": 0, "trained_tokens": 0, "policy_updates": 0}
    for stage in stages:
        total["wall_s"] += stage["seconds"]
        total["sampled_tokens"] += stage["compute"]["sampled_tokens"]
        total["forward_tokens"] += stage["compute"]["forward_tokens"]
        total["trained_tokens"] += stage["compute"]["backward_tokens"]
        total["policy_updates"] += stage["compute"]["optimizer_updates"]
    return total


def achieved(run_dir):
    report = read_json(run_dir / "eval" / "report.json")
    # With eval.same_template_prompts, also on new prompts of the sampling prompts' own templates.
    same = run_dir / "eval" / "same_templates" / "report.json"
    same_templates = read_json(same)["achieved"] if same.exists() else None
    return {
        "same_templates_safety_improvement": same_templates and same_templates["safety_improvement"],
        "same_templates_reward_improvement": same_templates and same_templates["reward_improvement"],
        "achieved_safety_improvement": report["achieved"]["safety_improvement"],
        "achieved_safety_improvement_stderr": report["achieved"]["safety_improvement_stderr"],
        "achieved_reward_improvement": report["achieved"]["reward_improvement"],
        "achieved_reward_improvement_stderr": report["achieved"]["reward_improvement_stderr"],
        "judge_safety": report["policy"]["judge_safety"],
        "judge_helpfulness": report["policy"]["judge_helpfulness"],
        "prompt_set": report["prompt_set"],
    }


def seed_result(seed_dir):
    one_shot_dir, primal_dual_dir = seed_dir / "one_shot", seed_dir / "primal_dual"
    one_shot_stages = stages_of(one_shot_dir)
    primal_dual_stages = stages_of(primal_dual_dir)
    rounds = sorted((name for name in primal_dual_stages if name.startswith("round-")), key=lambda n: int(n[6:]))
    shared = [s for name, s in one_shot_stages.items() if name in SHARED_STAGES or name.startswith("cost_model")]
    one_shot = cost(one_shot_stages[name] for name in ONE_SHOT_STAGES)
    one_shot.update(achieved(one_shot_dir))
    one_shot["lambda"] = read_json(one_shot_dir / "dual" / "dual.json")["lambda"]
    primal_dual = cost(primal_dual_stages[name] for name in rounds)
    primal_dual.update(achieved(primal_dual_dir))
    trajectory = []  # per round: what its samples showed of the policy it started from, and the compute before it
    spent = cost([])
    for name in rounds:
        record = read_json(primal_dual_dir / name / "round.json")
        trajectory.append({
            "round": record["round"],
            "forward_tokens_before": spent["forward_tokens"],
            "wall_s_before": spent["wall_s"],
            "lambda_before": record["lambda_before"],
            "lambda_after": record["lambda_after"],
            "estimated_safety_improvement": [p - r for p, r in zip(record["policy"]["safety"],
                                                                   record["reference"]["safety"])],
            "estimated_reward_improvement": record["policy"]["reward"] - record["reference"]["reward"],
            "constraint_values": record["constraint_values"],
        })
        spent = cost([primal_dual_stages[n] for n in rounds[: len(trajectory)]])
    primal_dual["lambda"] = trajectory[-1]["lambda_after"]
    primal_dual["rounds"] = trajectory
    return {"shared": cost(shared), "one_shot": one_shot, "primal_dual": primal_dual,
            "margins": read_json(one_shot_dir / "dual" / "dual.json")["margins"]}


def spread(values):
    """Mean, sample standard deviation, min and max of numbers (or of lists, element by element)."""
    if isinstance(values[0], list):
        return [spread([v[j] for v in values]) for j in range(len(values[0]))]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"mean": mean, "std": None if math.isnan(std) else std, "min": min(values), "max": max(values),
            "values": values}


SUMMARISED = ("wall_s", "sampled_tokens", "forward_tokens", "trained_tokens", "policy_updates",
              "achieved_safety_improvement", "achieved_reward_improvement", "judge_safety", "judge_helpfulness",
              "lambda")


def summarise(results, method):
    keys = SUMMARISED
    if results[0][method]["same_templates_safety_improvement"] is not None:
        keys += ("same_templates_safety_improvement", "same_templates_reward_improvement")
    return {key: spread([r[method][key] for r in results]) for key in keys}


def fmt(x, digits=4):
    if isinstance(x, int) or abs(x) >= min(1000, 10**digits):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def cell(summary):
    if isinstance(summary, list):
        return "; ".join(cell(s) for s in summary)
    return fmt(summary["mean"]) + ("" if summary["std"] is None else f" ± {fmt(summary['std'], 2)}")


def markdown(comparison):
    methods = comparison["methods"]
    lines = [
        "# One-shot dualization (MoCAN) against the primal-dual baseline",
        "",
        f"Margin b = {comparison['margin']}; {len(comparison['seeds'])} seeds ({', '.join(map(str, comparison['seeds']))}); "
        f"mean ± standard deviation over seeds. Command: `{comparison['command']}`; {comparison['machine']}, "
        f"{comparison['date']}.",
        "",
        "Cost counts each method's own stages (one-shot: offline_scores, dual, relabel, dpo; primal-dual: its rounds). "
        "The stages both use (world, tokenizer, π_ref, reward and cost models) cost "
        f"{cell(comparison['shared']['wall_s'])} s and are in neither. Achieved improvements are measured by the "
        f"score models on the evaluation's prompts ({methods['one_shot']['prompt_set']}).",
        "",
        "| | one-shot | primal-dual |",
        "|---|---:|---:|",
    ]
    labels = {"wall_s": "wall-clock seconds", "sampled_tokens": "tokens sampled",
              "forward_tokens": "tokens through forward passes", "trained_tokens": "tokens through backward passes",
              "policy_updates": "policy updates", "lambda": "λ (final)",
              "achieved_safety_improvement": "achieved safety improvement",
              "achieved_reward_improvement": "achieved reward improvement",
              "judge_safety": "judge: fraction safe", "judge_helpfulness": "judge: helpfulness",
              "same_templates_safety_improvement": "achieved safety improvement, same-template prompts",
              "same_templates_reward_improvement": "achieved reward improvement, same-template prompts"}
    for key, label in labels.items():
        if key not in methods["one_shot"]:
            continue
        lines.append(f"| {label} | {cell(methods['one_shot'][key])} | {cell(methods['primal_dual'][key])} |")
    lines += ["", "Per seed (safety and reward: achieved improvement ± its standard error over the evaluation's prompts):",
              "", "| seed | one-shot λ* | one-shot safety | one-shot reward | primal-dual final λ | primal-dual safety | "
              "primal-dual reward |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, result in zip(comparison["seeds"], comparison["per_seed"]):
        row = [str(seed)]
        for method in ("one_shot", "primal_dual"):
            r = result[method]
            row += [", ".join(fmt(x) for x in r["lambda"]),
                    ", ".join(f"{fmt(a)} ± {fmt(e, 2)}" for a, e in zip(r["achieved_safety_improvement"],
                                                                       r["achieved_safety_improvement_stderr"])),
                    f"{fmt(r['achieved_reward_improvement'])} ± {fmt(r['achieved_reward_improvement_stderr'], 2)}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## The primal-dual rounds", "",
              "Each round's estimate comes from its own samples of the policy it starts from, on the sampling "
              "prompts (round 0 samples π_ref, whose improvement is 0 by definition).", "",
              "| seed | round | forward tokens before | λ before → after | estimated safety improvement | "
              "estimated reward improvement |", "|---:|---:|---:|---|---:|---:|"]
    for seed, result in zip(comparison["seeds"], comparison["per_seed"]):
        for r in result["primal_dual"]["rounds"]:
            lines.append(f"| {seed} | {r['round']} | {fmt(r['forward_tokens_before'])} | "
                         f"{', '.join(fmt(x) for x in r['lambda_before'])} → {', '.join(fmt(x) for x in r['lambda_after'])} | "
                         f"{', '.join(fmt(x) for x in r['estimated_safety_improvement'])} | "
                         f"{fmt(r['estimated_reward_improvement'])} |")
    return "\n".join(lines) + "\n"


def svg(comparison):
    """Safety and reward improvement against forward tokens spent: per seed, the primal-dual
    trajectory (rounds' estimates, then its evaluation) and one-shot's single evaluated point."""
    width, height, margin_left, panel_w, panel_h, top = 980, 420, 70, 390, 300, 50
    panels = [("safety improvement (constraint 0)", lambda x: x[0] if isinstance(x, list) else x,
               "estimated_safety_improvement", "achieved_safety_improvement"),
              ("reward improvement", lambda x: x, "estimated_reward_improvement", "achieved_reward_improvement")]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">One-shot (MoCAN) against primal-dual: '
           f'improvement against compute spent (margin {comparison["margin"]})</text>']
    results = comparison["per_seed"]
    max_x = max(max(r["primal_dual"]["forward_tokens"], r["one_shot"]["forward_tokens"]) for r in results) or 1
    for p, (title, first, estimated, final) in enumerate(panels):
        x0 = margin_left + p * (panel_w + 90)
        values = [0.0]
        for r in results:
            values += [first(t[estimated]) for t in r["primal_dual"]["rounds"]]
            values += [first(r["primal_dual"][final]), first(r["one_shot"][final])]
        if p == 0:
            values.append(comparison["margin"])
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
        sx = lambda x: x0 + panel_w * x / max_x
        sy = lambda y: top + panel_h * (1 - (y - lo) / (hi - lo))
        out.append(f'<rect x="{x0}" y="{top}" width="{panel_w}" height="{panel_h}" fill="none" stroke="black"/>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{top - 8}" text-anchor="middle">{title}</text>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{top + panel_h + 32}" text-anchor="middle">millions of tokens '
                   f'through forward passes (the method\'s own stages)</text>')
        for i in range(5):
            y = lo + (hi - lo) * i / 4
            out.append(f'<text x="{x0 - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
            x = max_x * i / 4
            out.append(f'<text x="{sx(x):.1f}" y="{top + panel_h + 16}" text-anchor="middle">{x / 1e6:.3g}</text>')
        out.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#bbb"/>')
        if p == 0:
            out.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{sy(comparison["margin"]):.1f}" '
                       f'y2="{sy(comparison["margin"]):.1f}" stroke="#c33" stroke-dasharray="5,4"/>')
            out.append(f'<text x="{x0 + panel_w - 4}" y="{sy(comparison["margin"]) - 4:.1f}" text-anchor="end" '
                       f'fill="#c33">margin b</text>')
        for r in results:
            points = [(t["forward_tokens_before"], first(t[estimated])) for t in r["primal_dual"]["rounds"]]
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="#2a6fb0" stroke-width="1.5"/>')
            for x, y in points:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#2a6fb0"/>')
            x, y = r["primal_dual"]["forward_tokens"], first(r["primal_dual"][final])
            last_x, last_y = points[-1]
            out.append(f'<line x1="{sx(last_x):.1f}" y1="{sy(last_y):.1f}" x2="{sx(x):.1f}" y2="{sy(y):.1f}" '
                       f'stroke="#2a6fb0" stroke-dasharray="3,3"/>')
            out.append(f'<rect x="{sx(x) - 4:.1f}" y="{sy(y) - 4:.1f}" width="8" height="8" fill="#2a6fb0"/>')
            x, y = r["one_shot"]["forward_tokens"], first(r["one_shot"][final])
            out.append(f'<path d="M{sx(x):.1f},{sy(y) - 6:.1f} l6,10 l-12,0 z" fill="#e08a1e"/>')
    legend_y = height - 14
    out.append(f'<circle cx="40" cy="{legend_y - 4}" r="3" fill="#2a6fb0"/><text x="50" y="{legend_y}">primal-dual '
               f'before round k, from the round\'s samples (sampling prompts)</text>')
    out.append(f'<rect x="526" y="{legend_y - 8}" width="8" height="8" fill="#2a6fb0"/><text x="540" '
               f'y="{legend_y}">primal-dual, evaluated</text>')
    out.append(f'<path d="M706,{legend_y - 10} l6,10 l-12,0 z" fill="#e08a1e"/><text x="720" y="{legend_y}">one-shot, '
               f'evaluated (a point per seed)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def machine():
    """The CPU's model name and core count, and the kernel: where the seconds were measured."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main():
    out_dir, command = Path(sys.argv[1]), sys.argv[2]
    seed_dirs = sorted(out_dir.glob("seed-*"), key=lambda p: int(p.name[5:]))
    results = [seed_result(d) for d in seed_dirs]
    margins = results[0]["margins"]
    comparison = {
        "margin": margins[0] if len(margins) == 1 else margins,
        "seeds": [int(d.name[5:]) for d in seed_dirs],
        "command": command,
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "shared": {key: spread([r["shared"][key] for r in results]) for key in results[0]["shared"]},
        "methods": {"one_shot": summarise(results, "one_shot"), "primal_dual": summarise(results, "primal_dual")},
        "per_seed": results,
    }
    comparison["methods"]["one_shot"]["prompt_set"] = results[0]["one_shot"]["prompt_set"]
    comparison["methods"]["primal_dual"]["prompt_set"] = results[0]["primal_dual"]["prompt_set"]
    (out_dir / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    (out_dir / "comparison.md").write_text(markdown(comparison))
    (out_dir / "comparison.svg").write_text(svg(comparison))
    one, pd = comparison["methods"]["one_shot"], comparison["methods"]["primal_dual"]
    print(f"one-shot:    {cell(one['wall_s'])} s, {cell(one['forward_tokens'])} forward tokens, safety "
          f"{cell(one['achieved_safety_improvement'])}, reward {cell(one['achieved_reward_improvement'])}")
    print(f"primal-dual: {cell(pd['wall_s'])} s, {cell(pd['forward_tokens'])} forward tokens, safety "
          f"{cell(pd['achieved_safety_improvement'])}, reward {cell(pd['achieved_reward_improvement'])}")


if __name__ == "__main__":
    main()
