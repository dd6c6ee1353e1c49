#!/usr/bin/env python3
"""Which tilted policy did DPO realise?

The dual predicts what pi_lambda ~ pi_ref * exp((r + lambda* g) / beta) achieves. An aligned
policy's measured improvements (achieved safety dg and reward dr, from report.json) are
matched here by the tilt pi ~ pi_ref * exp(t * (r + lambda_eff * g) / beta) on the run's
offline samples: t is the scale of the realised tilt (1: as strong as pi_lambda*), and
lambda_eff / lambda* the weight it gave safety against reward (1: as the dual asked). A
shortfall at a small margin with t near 1 and lambda_eff / lambda* below 1 is DPO weighing
reward more than the dual did, amplified where r and g are anti-correlated.

One constraint only. The offline samples are the dual's (same prompts' distribution), so
use the same-template evaluations (eval*/same_templates/report.json).

  .venv/bin/python3 scripts/effective-tilt.py RUN_DIR/offline_scores/scores.jsonl \
      RUN_DIR/eval-b*/same_templates/report.json
"""
import argparse
import json
import sys

import numpy as np
from scipy.optimize import fsolve


def read_scores(path):
    rewards, safety = [], []
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            values = row["safety"]
            if values and isinstance(values[0], list):
                if len(values) != 1:
                    sys.exit(f"{path}:{number}: {len(values)} constraints; this script takes one")
                values = values[0]
            if len(values) != len(row["reward"]):
                sys.exit(f"{path}:{number}: {len(row['reward'])} rewards but {len(values)} safety scores")
            rewards.append(np.asarray(row["reward"], dtype=float))
            safety.append(np.asarray(values, dtype=float))
    if not rewards:
        sys.exit(f"{path}: no scores")
    return rewards, safety


def improvements(rewards, safety, beta, scale, weight):
    """Mean over prompts of E_w[g] - mean g and E_w[r] - mean r, w = softmax(scale (r + weight g) / beta)."""
    safety_sum, reward_sum = 0.0, 0.0
    for r, g in zip(rewards, safety):
        logits = scale * (r + weight * g) / beta
        w = np.exp(logits - logits.max())
        w /= w.sum()
        safety_sum += w @ g - g.mean()
        reward_sum += w @ r - r.mean()
    return safety_sum / len(rewards), reward_sum / len(rewards)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", help="offline_scores/scores.jsonl of the run")
    parser.add_argument("reports", nargs="+", help="report.json files of policies aligned on those scores")
    arguments = parser.parse_args()
    rewards, safety = read_scores(arguments.scores)
    print(f"{'report':<60} {'lambda*':>8} {'dg':>7} {'dr':>7} {'t':>6} {'lambda_eff/lambda*':>19}")
    for path in arguments.reports:
        with open(path) as file:
            report = json.load(file)
        if report.get("lambda") is None or len(report["lambda"]) != 1:
            sys.exit(f"{path}: no single-constraint dual prediction (lambda)")
        beta, lam = report["beta"], report["lambda"][0]
        dg = report["achieved"]["safety_improvement"][0]
        dr = report["achieved"]["reward_improvement"]

        def mismatch(x):
            predicted_dg, predicted_dr = improvements(rewards, safety, beta, x[0], x[1])
            return [predicted_dg - dg, predicted_dr - dr]

        (scale, weight), _, found, message = fsolve(mismatch, [1.0, lam], full_output=True)
        if found != 1:
            print(f"{path:<60} no tilt reproduces dg {dg:.3f}, dr {dr:.3f}: {message}")
            continue
        print(f"{path:<60} {lam:>8.4f} {dg:>7.3f} {dr:>7.3f} {scale:>6.3f} {weight / lam:>19.3f}")


if __name__ == "__main__":
    main()
