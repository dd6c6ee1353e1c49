#!/usr/bin/env python3
"""Reference test: build/can-dual against scipy on the empirical dual of docs/design.md §2.

Random offline scores (fixed seeds, ragged N_i, heavy tails, per-prompt offsets,
m = 1 and m = 2) are written to a temporary folder and solved by can-dual --json.
The same dual is written here independently in numpy, with the scores as read,
not centred within prompts:

    D(λ) = mean_i β·log((1/N_i) Σ_k exp((r_ik + λᵀg_ik)/β)) − λᵀ(ḡ + b),
    ḡ_j  = mean_i (1/N_i) Σ_k g_ijk                  (each prompt weighs the same),
    ∇D   = mean_i Σ_k w_ik g_ik − ḡ − b,  w_i· = softmax_k((r_ik + λᵀg_ik)/β),

and minimised over λ ≥ 0 by scipy's L-BFGS-B. Checked per case (tolerances and
why: see TOLERANCES below):
  * exit status 0, converged, feasible; λ matches scipy's argmin;
  * D at CAN's λ equals CAN's dual_value (same λ: rounding only), and CAN's
    dual_value equals scipy's minimum;
  * CAN's λ satisfies the KKT conditions of the numpy dual (projected gradient),
    and an LP (below) confirms the margins are reachable;
  * predicted safety/reward improvement and their standard errors over prompts, KL, ESS and max_safety_improvement
    recomputed in numpy at CAN's λ;
  * constraints made slack give λ_j = 0 exactly in both;
  * infeasible margins give exit status 2 with null lambda, and scipy agrees that
    no re-weighting reaches them: an LP over the per-prompt simplices (linprog)
    finds the best worst-constraint slack negative, and L-BFGS-B in the box
    [0, 1e6]^m runs to the upper bound with the constraint still unmet there.
Both can-dual solvers (newton, pgd) run on every case but the "tight" ones (newton only).

Exit 0: all pass; 1: a failure (case and quantity named); 77: scipy missing.
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import scipy.optimize
except ImportError:
    # CI installs everything (requirements.txt): there, a missing library is a failure.
    print("SKIPPED: scipy not installed" if not os.environ.get("CI") else "FAILED: scipy not installed in CI")
    sys.exit(1 if os.environ.get("CI") else 77)

# --- TOLERANCES -----------------------------------------------------------------
# λ: CAN stops at |projected ∇D|∞ ≤ 1e-9·s (s = sqrt of the mean within-prompt
# variance of g), scipy below at TIGHT options; λ errors are gradient residual over
# curvature, ∇²D = (1/β)·E Cov_w[g], which falls to ~1e-3·s²/β near the reachable
# edge (ESS of a few responses). 1e-9 / 1e-3 = 1e-6, so 1e-5·(1+|λ|) leaves a
# factor of 10 and is still far below any λ difference a formula error makes.
LAMBDA_RTOL = 1e-5
# D at the same λ in two programs: sums of ~10^4 terms of size ≤ 100, rounding ~1e-13.
VALUE_SAME_LAMBDA_RTOL = 1e-11
# D(λ_CAN) against min D from scipy: D is flat at λ*, so a λ error δ moves it by
# ~½·H·δ², below 1e-10 here; 1e-8 relative to max(1, |D|).
VALUE_RTOL = 1e-8
# Predictions at the same λ: weighted means of scores ≤ ~100 over ≤ 40 responses,
# rounding ~1e-14; 1e-9 absolute (score units, nats, fractions of N).
PREDICTION_ATOL = 1e-9
# KKT at CAN's λ, gradient of the numpy dual: CAN's own bound 1e-9·s plus the
# rounding of a gradient that is a difference of O(1) terms.
KKT_FACTOR = 1e-9
KKT_ROUNDING = 1e-12
# L-BFGS-B: stop only when no progress is left (ftol at rounding, pgtol far below
# CAN's tolerance); many corrections and line-search steps for the ill-conditioned
# cases near the reachable edge.
TIGHT = {"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000, "maxfun": 40000, "maxcor": 30, "maxls": 100}
INFEASIBLE_BOX = 1e6  # upper bound on λ for the scipy run on infeasible margins


class CaseFailure(Exception):
    pass


# --- Instances --------------------------------------------------------------------
def make_instance(seed, num_prompts, m, df, correlation, anti=False):
    """Ragged prompts (N_i in 3..40), Student-t scores (heavy tails), per-prompt offsets
    in r and g (they cancel in λ* and the predictions, not in D), g_1 traded against r.
    anti: g_2 ≈ −g_1, so margins each below reach are not reachable together."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(num_prompts):
        n = int(rng.integers(3, 41))
        reward_noise = rng.standard_t(df, n)
        reward = rng.normal(0, 3) + reward_noise
        rows = []
        for j in range(m):
            if anti and j == 1:
                g = -(rows[0] - rows[0].mean()) + 0.3 * rng.standard_t(df, n)
            else:
                g = correlation[j] * reward_noise + rng.standard_t(df, n)
            rows.append(g * (1.0 + 0.5 * j) + rng.normal(0, 2))
        prompts.append({"prompt_id": f"p{seed}-{i}", "reward": reward, "safety": rows})
    return prompts


def write_scores(prompts, path):
    with open(path, "w") as out:
        for p in prompts:
            m = len(p["safety"])
            safety = [row.tolist() for row in p["safety"]]
            record = {
                "prompt_id": p["prompt_id"],
                "reward": p["reward"].tolist(),  # repr of a double: read back exactly
                "safety": safety[0] if m == 1 else safety,
            }
            out.write(json.dumps(record) + "\n")


# --- The empirical dual in numpy ---------------------------------------------------
class NumpyDual:
    """Padded [M, N_max] arrays with a mask; nothing centred, nothing shared with CAN."""

    def __init__(self, prompts, beta, margins):
        self.beta = float(beta)
        self.margins = np.asarray(margins, dtype=float)
        self.m = len(prompts[0]["safety"])
        self.M = len(prompts)
        sizes = np.array([len(p["reward"]) for p in prompts])
        self.n = sizes.astype(float)
        width = int(sizes.max())
        self.mask = np.arange(width)[None, :] < sizes[:, None]  # [M, K]
        self.r = np.zeros((self.M, width))
        self.g = np.zeros((self.m, self.M, width))
        for i, p in enumerate(prompts):
            self.r[i, : sizes[i]] = p["reward"]
            for j in range(self.m):
                self.g[j, i, : sizes[i]] = p["safety"][j]
        self.g_mean = (self.g.sum(axis=2) / self.n).mean(axis=1)  # [m] ḡ_j
        self.r_mean = (self.r.sum(axis=1) / self.n).mean()  # r̄
        g_max = np.where(self.mask[None], self.g, -np.inf).max(axis=2)  # [m, M]
        g_min = np.where(self.mask[None], self.g, np.inf).min(axis=2)
        self.reach = g_max.mean(axis=1) - self.g_mean  # [m] mean_i max_k g − ḡ
        self.floor = g_min.mean(axis=1) - self.g_mean  # [m] mean_i min_k g − ḡ
        centred = np.where(self.mask[None], self.g - (self.g.sum(axis=2) / self.n)[..., None], 0.0)
        self.safety_scale = np.sqrt(((centred**2).sum(axis=2) / self.n).mean(axis=1))  # [m]

    def tilt(self, lam):
        """logits z [M, K] (−inf in padding), log-softmax and weights, log mean exp [M]."""
        lam = np.asarray(lam, dtype=float)
        z = (self.r + np.tensordot(lam, self.g, axes=1)) / self.beta
        z = np.where(self.mask, z, -np.inf)
        z_max = z.max(axis=1, keepdims=True)
        log_sum = z_max[:, 0] + np.log(np.exp(z - z_max).sum(axis=1))  # stable log Σ exp
        log_w = z - log_sum[:, None]
        w = np.exp(log_w)  # 0 in padding
        log_mean_exp = log_sum - np.log(self.n)
        return z, log_w, w, log_mean_exp

    def value_and_gradient(self, lam):
        lam = np.asarray(lam, dtype=float)
        _, _, w, log_mean_exp = self.tilt(lam)
        value = self.beta * log_mean_exp.mean() - lam @ (self.g_mean + self.margins)
        tilted = (w[None] * self.g).sum(axis=2).mean(axis=1)  # [m] mean_i Σ_k w g
        return value, tilted - self.g_mean - self.margins

    def predict(self, lam):
        _, log_w, w, _ = self.tilt(lam)
        safety = (w[None] * self.g).sum(axis=2).mean(axis=1) - self.g_mean
        reward = (w * self.r).sum(axis=1).mean() - self.r_mean
        # KL_i = Σ_k w log(N_i w), in log space (w may underflow to 0).
        log_nw = np.where(self.mask, log_w, 0.0) + np.log(self.n)[:, None]  # padding: w = 0, log finite
        kl = (w * log_nw).sum(axis=1).mean()
        ess = 1.0 / ((w**2).sum(axis=1) * self.n)
        # Standard errors over prompts of the per-prompt improvements (sample std, ddof 1, / √M).
        safety_i = (w[None] * self.g).sum(axis=2) - self.g.sum(axis=2) / self.n  # [m, M]
        reward_i = (w * self.r).sum(axis=1) - self.r.sum(axis=1) / self.n  # [M]
        root = np.sqrt(self.M)
        return {"safety": safety, "reward": reward, "kl": kl, "ess_min": ess.min(), "ess_mean": ess.mean(),
                "safety_stderr": safety_i.std(axis=1, ddof=1) / root, "reward_stderr": reward_i.std(ddof=1) / root}

    def projected_gradient(self, lam):
        _, gradient = self.value_and_gradient(lam)
        lam = np.asarray(lam, dtype=float)
        return np.abs(np.where(lam > 0, gradient, np.minimum(gradient, 0.0))).max()

    def minimize(self, upper=None):
        bounds = [(0.0, upper)] * self.m
        result = scipy.optimize.minimize(self.value_and_gradient, np.ones(self.m), jac=True, method="L-BFGS-B",
                                         bounds=bounds, options=TIGHT)
        return result

    def best_joint_slack(self):
        """LP: max t s.t. mean_i Σ_k w_ik g_ijk − ḡ_j − b_j ≥ t ∀j, w_i· in the simplex of prompt i.
        t < 0 exactly when no re-weighting of the samples meets every margin."""
        rows, cols = np.nonzero(self.mask)
        count = rows.size
        # variables: w (count), t;  minimise −t
        cost = np.zeros(count + 1)
        cost[-1] = -1.0
        a_ub = np.zeros((self.m, count + 1))  # t − mean_i Σ w g ≤ −ḡ − b
        for j in range(self.m):
            a_ub[j, :count] = -self.g[j, rows, cols] / self.M
            a_ub[j, -1] = 1.0
        b_ub = -(self.g_mean + self.margins)
        a_eq = np.zeros((self.M, count + 1))
        a_eq[rows, np.arange(count)] = 1.0
        b_eq = np.ones(self.M)
        bounds = [(0, None)] * count + [(None, None)]
        result = scipy.optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds,
                                        method="highs")
        if result.status != 0:
            raise CaseFailure(f"linprog failed: {result.message}")
        return -result.fun


# --- can-dual ---------------------------------------------------------------------
def run_can_dual(binary, scores, beta, margins, solver):
    command = [binary, "--scores", scores, "--beta", repr(beta), "--solver", solver, "--json"]
    for b in margins:
        command += ["--margin", repr(float(b))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    try:
        output = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise CaseFailure(f"can-dual printed no JSON (exit {done.returncode}): {done.stderr.strip()[:300]}")
    return done.returncode, output, done.stderr


def check(condition, quantity, detail):
    if not condition:
        raise CaseFailure(f"{quantity}: {detail}")


def relative(a, b):
    return abs(a - b) / max(1.0, abs(b))


def fmt_vec(values):
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def run_feasible(binary, scores, dual, solver, kind, scipy_result):
    status, out, err = run_can_dual(binary, scores, dual.beta, dual.margins, solver)
    check(status == 0, "exit status", f"expected 0, got {status}: {err.strip()[:300]}")
    check(out["feasible"] is True and out["converged"] is True, "converged",
          f"feasible={out['feasible']} converged={out['converged']}")
    check(out["num_prompts"] == dual.M, "num_prompts", f"{out['num_prompts']} != {dual.M}")
    lam = np.asarray(out["lambda"], dtype=float)
    lam_ref = scipy_result.x
    check(lam.shape == (dual.m,), "lambda", f"expected {dual.m} entries, got {out['lambda']}")

    d_lambda = np.abs(lam - lam_ref)
    check(np.all(d_lambda <= LAMBDA_RTOL * (1 + np.abs(lam_ref))), "lambda",
          f"CAN {fmt_vec(lam)} vs scipy {fmt_vec(lam_ref)} (|Δ| {fmt_vec(d_lambda)}, "
          f"tolerance {LAMBDA_RTOL}·(1+|λ|))")
    if kind.startswith("slack"):
        check(np.all(lam == 0) and np.all(lam_ref == 0), "lambda (slack)",
              f"expected λ* = 0 exactly, CAN {fmt_vec(lam)} scipy {fmt_vec(lam_ref)}")
    if kind == "mixed":
        check(lam[0] > 0 and lam[1] == 0 and lam_ref[1] == 0, "lambda (mixed)",
              f"expected λ_1 > 0 and λ_2 = 0, CAN {fmt_vec(lam)} scipy {fmt_vec(lam_ref)}")
    if kind in ("binding", "tight", "edge"):
        check(np.all(lam > 0), "lambda (binding)", f"expected λ > 0, CAN {fmt_vec(lam)}")

    value_at_can, _ = dual.value_and_gradient(lam)
    d_value_same = relative(out["dual_value"], value_at_can)
    check(d_value_same <= VALUE_SAME_LAMBDA_RTOL, "dual_value at CAN's λ",
          f"CAN {out['dual_value']!r} vs numpy {float(value_at_can)!r} (rel {d_value_same:.3g} > {VALUE_SAME_LAMBDA_RTOL})")
    d_value = relative(out["dual_value"], scipy_result.fun)
    check(d_value <= VALUE_RTOL, "dual_value vs scipy minimum",
          f"CAN {out['dual_value']!r} vs scipy {float(scipy_result.fun)!r} (rel {d_value:.3g} > {VALUE_RTOL})")

    slack = dual.best_joint_slack()
    check(slack > 0, "LP witness", f"linprog finds the margins unreachable (best worst slack {slack:.3g}) "
          "although both solvers returned a λ")

    kkt = dual.projected_gradient(lam)
    kkt_tolerance = KKT_FACTOR * dual.safety_scale.max() + KKT_ROUNDING * (1 + np.abs(dual.g).max())
    check(kkt <= kkt_tolerance, "KKT at CAN's λ", f"|projected ∇D| {kkt:.3g} > {kkt_tolerance:.3g}")

    prediction = dual.predict(lam)
    reported = out["predicted"]
    differences = {
        "safety": np.abs(np.asarray(reported["safety_improvement"]) - prediction["safety"]).max(),
        "reward": abs(reported["reward_improvement"] - prediction["reward"]),
        "kl": abs(reported["kl"] - prediction["kl"]),
        "safety stderr": np.abs(np.asarray(reported["safety_improvement_stderr"]) - prediction["safety_stderr"]).max(),
        "reward stderr": abs(reported["reward_improvement_stderr"] - prediction["reward_stderr"]),
        "ess": max(abs(out["ess"]["min"] - prediction["ess_min"]), abs(out["ess"]["mean"] - prediction["ess_mean"])),
        "reach": np.abs(np.asarray(out["max_safety_improvement"]) - dual.reach).max(),
    }
    for name, difference in differences.items():
        check(difference <= PREDICTION_ATOL, f"predicted {name}", f"|Δ| {difference:.3g} > {PREDICTION_ATOL}")
    d_pred = max(differences["safety"], differences["reward"], differences["kl"])
    return (f"λ {fmt_vec(lam)} |Δλ| {d_lambda.max():.1e} ΔD {d_value:.1e} ΔD(same λ) {d_value_same:.1e} "
            f"Δpred {d_pred:.1e} Δess {differences['ess']:.1e} KKT {kkt:.1e} "
            f"ESS {out['ess']['mean']:.3f} LP {slack:.3g} iters {out['iterations']} (scipy {scipy_result.nit}, "
            f"pg {dual.projected_gradient(lam_ref):.1e})")


def run_infeasible(binary, scores, dual, solver):
    status, out, err = run_can_dual(binary, scores, dual.beta, dual.margins, solver)
    check(status == 3, "exit status", f"expected 3 (infeasible), got {status}: {err.strip()[:300]}")
    check(out["feasible"] is False and out["converged"] is False, "feasible",
          f"feasible={out['feasible']} converged={out['converged']}")
    check(out["lambda"] is None and out["dual_value"] is None and out["predicted"] is None, "null fields",
          "lambda, dual_value and predicted must be null when infeasible")
    check("infeasible" in err, "stderr", f"expected the infeasibility message, got {err.strip()[:300]}")
    d_reach = np.abs(np.asarray(out["max_safety_improvement"]) - dual.reach).max()
    check(d_reach <= PREDICTION_ATOL, "max_safety_improvement", f"|Δ| {d_reach:.3g} > {PREDICTION_ATOL}")
    slack = dual.best_joint_slack()
    check(slack < 0, "LP certificate", f"linprog reaches every margin (best worst slack {slack:.3g} ≥ 0)")
    boxed = dual.minimize(upper=INFEASIBLE_BOX)
    _, gradient = dual.value_and_gradient(boxed.x)
    at_bound = boxed.x >= 0.999 * INFEASIBLE_BOX
    check(at_bound.any(), "scipy argmin (box)", f"L-BFGS-B in [0, {INFEASIBLE_BOX:g}] stopped inside at {boxed.x}")
    check(np.all(gradient[at_bound] < 0), "scipy argmin (box)",
          f"constraint met at the bound: predicted − b = {fmt_vec(gradient)}")
    return (f"exit 2, LP best slack {slack:.4g}, scipy λ {fmt_vec(boxed.x)} with predicted−b {fmt_vec(gradient)}; "
            f"'{err.strip().splitlines()[-1][:90]}'")


def main():
    start = time.monotonic()
    binary_dir = os.environ.get("CAN_BINARY_DIR", "build")
    binary = os.path.join(binary_dir, "can-dual")
    if not os.access(binary, os.X_OK):
        print(f"FAIL: {binary} not found or not executable; build can-dual first (CAN_BINARY_DIR={binary_dir})")
        return 1

    # name, seed, prompts, m, β, Student-t df, correlation of g_j with r, anti
    instances = [
        ("A", 11, 150, 1, 0.5, 3.0, [-0.6], False),
        ("B", 12, 200, 2, 1.0, 3.0, [-0.5, 0.3], False),
        ("C", 13, 100, 2, 0.5, 3.0, [-0.4, 0.0], True),
        ("D", 14, 50, 1, 0.1, 2.5, [-0.8], False),
    ]
    failures = []
    with tempfile.TemporaryDirectory(prefix="can_dual_vs_scipy_") as folder:
        for name, seed, num_prompts, m, beta, df, correlation, anti in instances:
            prompts = make_instance(seed, num_prompts, m, df, correlation, anti)
            scores = os.path.join(folder, f"{name}.jsonl")
            write_scores(prompts, scores)
            probe = NumpyDual(prompts, beta, np.zeros(m))
            s0 = probe.predict(np.zeros(m))["safety"]  # improvement at λ = 0 (the reward-only tilt)
            reach, floor, scale = probe.reach, probe.floor, probe.safety_scale
            cases = []  # (kind, margins, solvers)
            cases.append(("slack", s0 - 0.05 * scale, ["newton", "pgd"]))
            if m == 1:
                cases.append(("binding", np.array([0.5 * reach[0]]), ["newton", "pgd"]))
                cases.append(("tight", np.array([0.9 * reach[0]]), ["newton"]))
                cases.append(("edge", np.array([0.99 * reach[0]]), ["newton", "pgd"]))  # small ∇²D, large λ
                cases.append(("infeasible", reach + 0.1 * scale, ["newton", "pgd"]))
            else:
                cases.append(("mixed", np.array([0.4 * reach[0], floor[1] - 0.1 * scale[1]]), ["newton", "pgd"]))
                if anti:  # g_2 ≈ −g_1: together the margins reach far less than each alone
                    cases.append(("binding", 0.05 * reach, ["newton", "pgd"]))
                    cases.append(("tight", 0.1 * reach, ["newton"]))
                    cases.append(("infeasible-joint", 0.6 * reach, ["newton", "pgd"]))  # each below its reach
                else:
                    cases.append(("binding", 0.3 * reach, ["newton", "pgd"]))
                    cases.append(("infeasible", np.array([0.3 * reach[0], reach[1] + 0.1 * scale[1]]), ["newton", "pgd"]))
            for kind, margins, solvers in cases:
                dual = NumpyDual(prompts, beta, margins)
                scipy_result = None if kind.startswith("infeasible") else dual.minimize()
                for solver in solvers:
                    label = (f"{name} m={m} M={num_prompts} β={beta:g} {kind:<16} b={fmt_vec(margins)} "
                             f"{solver:<6}")
                    try:
                        if scipy_result is not None:
                            line = run_feasible(binary, scores, dual, solver, kind, scipy_result)
                        else:
                            line = run_infeasible(binary, scores, dual, solver)
                        print(f"ok   {label} {line}", flush=True)
                    except CaseFailure as failure:
                        failures.append(f"{label.split(' b=')[0]} ({solver}): {failure}")
                        print(f"FAIL {label} {failure}", flush=True)
    elapsed = time.monotonic() - start
    if failures:
        print(f"\n{len(failures)} case(s) failed ({elapsed:.1f} s):")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print(f"all cases pass ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
