"""Medusa heads against Hydra heads (Ankner et al., 2024) on the embedded model, with one recipe.

Both kinds get the same data and training: self-distilled answers of the embedded model to the
hand-written training prompts (`data.selfdistill_rows`, cached), then `recipes.fresh_heads` (3 heads,
1 ResBlock each, shared lm_head, 8192-token draft vocabulary, Medusa-1, 2 epochs). Reported:

- per-head top-1 / top-5 on the self-distilled held-out answers (`evaluate.head_accuracy`; Hydra
  heads teacher-forced along the true path, i.e. the accuracy each depth has once its path is right);
- tau (tokens per base forward) of greedy decoding on a few held-out prompts (`evaluate.measure_tau`)
  with a tree grown from each kind's own accuracies (8 nodes) and with the chain of 3, and the wall
  time of those runs (greedy is lossless, so both kinds emit the same tokens).

    OMP_NUM_THREADS=1 python scripts/compare_heads.py
    OMP_NUM_THREADS=1 python scripts/compare_heads.py --data data/selfdistill   # the saved template answers

With `--data`, the training rows are the answers `scripts/generate_data.py` saved there (their kept
hidden states, where present, spare the backbone pass) and the held-out answers are those shipped
with the heads.

With `--heads`, nothing is trained: heads folders already made (`make_heads.py --kind ... --out ...`)
race each other and both baselines in one interleaved benchmark (`evaluate.benchmark`), each kind with
the tree `evaluate.choose_tree` picks for it on this machine (its drafting cost included), with our own
prompt lookup and the hybrid of the Hydra heads with it (`evaluate.drafter_methods`):

    python scripts/compare_heads.py --heads runs/heads_medusa runs/heads_hydra --json runs/race.json
"""

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

from medusa_lib.config import PROFILES, set_seed
from medusa_lib.data import heldout_rows, load_prompts, saved_rows, selfdistill_rows
from medusa_lib.drafters import KINDS
from medusa_lib.eagle import load_eagle
from medusa_lib.evaluate import (
    account_divergences,
    baselines,
    bench_prompts,
    benchmark,
    choose_tree,
    drafter_methods,
    head_accuracy,
    markdown_table,
    measure_tau,
    medusa_method,
)
from medusa_lib.heads import SHIPPED_HEADS, MedusaModel
from medusa_lib.models import load_base
from medusa_lib.recipes import HYBRID_HEADS, fresh_heads
from medusa_lib.tree import Tree, expected_accept_length


def run_kind(kind, model, tok, train, heldout, prompts, args) -> dict:
    """Train fresh heads of one kind, then measure held-out accuracy and tau."""
    set_seed(args.seed)
    t0 = time.perf_counter()
    mm, state = fresh_heads(model, train, epochs=args.epochs, head=replace(PROFILES["embedded"].head, kind=kind),
                            draft=args.draft, seed=args.seed, progress=False)
    train_s = time.perf_counter() - t0
    acc = head_accuracy(mm, heldout, topk=10)  # [3, 10] cumulative
    row = {"kind": kind, "train_s": train_s, "positions": state["positions"],
           "top1": acc[:, 0].tolist(), "top5": acc[:, 4].tolist()}
    trees = {"acc-8": Tree.from_accuracies(acc, 8), "chain-4": Tree.chain(3)}
    for name, tree in trees.items():
        t0 = time.perf_counter()
        taus = measure_tau(mm, tok, tree, prompts, args.max_new_tokens)
        row[f"tau {name}"] = statistics.mean(taus)
        row[f"decode_s {name}"] = time.perf_counter() - t0
        row[f"E[tau] {name}"] = expected_accept_length(tree, acc)
    row["tree acc-8"] = [list(p) for p in trees["acc-8"].paths]
    return row


def print_table(rows: list[dict]) -> None:
    cols = ["kind"] + [f"head {k + 1} top-1/top-5" for k in range(3)]
    cols += ["tau acc-8", "E[tau] acc-8", "tau chain-4", "E[tau] chain-4", "decode s acc-8", "decode s chain-4",
             "train s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [r["kind"]] + [f"{r['top1'][k]:.3f} / {r['top5'][k]:.3f}" for k in range(3)]
        cells += [f"{r['tau acc-8']:.3f}", f"{r['E[tau] acc-8']:.3f}", f"{r['tau chain-4']:.3f}",
                  f"{r['E[tau] chain-4']:.3f}", f"{r['decode_s acc-8']:.1f}", f"{r['decode_s chain-4']:.1f}",
                  f"{r['train_s']:.0f}"]
        print("| " + " | ".join(cells) + " |")


def race(dirs: list[str], args) -> dict:
    """Heads folders against each other and HF greedy / prompt lookup, interleaved, on the bench prompts."""
    model, tok = load_base("embedded", device="cpu")
    methods = baselines(model)
    heads = {}
    for d in dirs:
        mm = MedusaModel.from_pretrained(d, base=model)
        acc = head_accuracy(mm, heldout_rows(model, tok, heads_dir=d), topk=10)  # [3, 10]
        tree, _ = choose_tree(mm, acc)
        name = f"{mm.kind}[acc-{tree.num_nodes}]"
        methods[name] = medusa_method(mm, tree)
        heads[name] = {"dir": d, "top1": acc[:, 0].tolist(), "top5": acc[:, 4].tolist(),
                       "E[tau]": expected_accept_length(tree, acc), "tree": [list(p) for p in tree.paths]}
        print(f"{name} ({d}): top-1 {[round(x, 3) for x in heads[name]['top1']]}, E[tau] {heads[name]['E[tau]']:.2f}")
        if mm.kind == HYBRID_HEADS:  # our prompt lookup, the hybrid of these heads with it, and EAGLE
            eagle = [load_eagle(args.eagle, model)] if args.eagle else []
            methods.update(drafter_methods(mm, tree, eagle))
    prompts = bench_prompts(per_group=args.per_group, humaneval=args.humaneval)
    res = benchmark(methods, tok, prompts, args.max_new_tokens, rounds=args.rounds)
    res["divergences"] = account_divergences(model, tok, prompts, res["runs"])
    print(markdown_table(res["summary"]))
    for d in res["divergences"]:
        print(f"{d['method']} left HF greedy on {d['prompt']} at token {d['at']}: explained {d['explained']}")
    by_step = {m: step_costs([r for r in res["runs"] if r["method"] == m]) for m in methods}
    return {"heads": heads, "summary": res["summary"], "divergences": res["divergences"], "noisy": res["noisy"],
            "machine": platform.processor() or platform.machine(), "rounds": args.rounds, "steps": by_step}


def race_markdown(res: dict) -> str:
    """The race as assets/heads_race.md: the machine, the table by group, and each verdict computed from it."""
    rows = {(r["method"], r["group"]): r for r in res["summary"]}
    kinds = {m.split("[")[0]: m for m, _ in rows}
    lines = [f"Race on {res['machine']}, {res['rounds']} rounds per (method, prompt), fastest kept"
             + (" (the machine was too noisy to trust)" if res["noisy"] else ""), "",
             markdown_table(sorted(res["summary"], key=lambda r: (r["group"], -r["speedup"]))), ""]
    ours = [m for k, m in kinds.items() if k in KINDS]
    best = max(ours, key=lambda m: rows[(m, "all")]["speedup"])
    lines.append(f"- fastest of ours over all prompts: {best}, x{rows[(best, 'all')]['speedup']:.2f} against HF greedy")
    if {"hybrid", "pld", HYBRID_HEADS} <= set(kinds):
        hyb, pld, heads = kinds["hybrid"], kinds["pld"], kinds[HYBRID_HEADS]
        for group in ("copy", "chat"):
            t = {m: rows[(m, group)]["tau"] for m in (hyb, pld, heads)}
            lines.append(f"- {group}: tau hybrid {t[hyb]:.2f}, heads {t[heads]:.2f}, prompt lookup {t[pld]:.2f}")
    return "\n".join(lines) + "\n"


def step_costs(runs: list[dict]) -> dict:
    """Median per-prompt time per step and tau of one method's runs (the drafting share is in the methods' own
    step_times; here: wall time / steps)."""
    return {"ms_per_step": statistics.median(1000 * r["seconds"] / max(1, r["steps"]) for r in runs),
            "tau": statistics.median(r["new_tokens"] / max(1, r["steps"]) for r in runs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--draft", type=int, default=8192, help="draft vocabulary the heads rank")
    ap.add_argument("--prompts", type=int, default=6, help="held-out prompts to measure tau on")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--data", default=None, help="train on the answers saved here (scripts/generate_data.py)")
    ap.add_argument("--heads", nargs="+", default=None, help="race these heads folders instead of training")
    ap.add_argument("--per_group", type=int, default=4, help="with --heads: bench prompts per group")
    ap.add_argument("--humaneval", type=int, default=2, help="with --heads: HumanEval problems (if installed)")
    ap.add_argument("--eagle", default=None, help="with --heads: also race this EAGLE drafter folder")
    ap.add_argument("--rounds", type=int, default=2, help="with --heads: runs per (method, prompt); the fastest counts")
    args = ap.parse_args()
    if args.heads:
        res = race(args.heads, args)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
            Path(args.json).with_suffix(".md").write_text(race_markdown(res))
        return
    model, tok = load_base("embedded", device="cpu")
    if args.data:
        train, heldout = saved_rows(args.data, model, states=True), heldout_rows(model, tok, heads_dir=SHIPPED_HEADS)
    else:
        train, heldout = selfdistill_rows(model, tok, "train"), selfdistill_rows(model, tok, "heldout")
    prompts = [p.prompt for p in load_prompts("heldout")][: args.prompts]
    print(f"train: {len(train)} answers, held-out: {len(heldout)} answers, tau on {len(prompts)} prompts "
          f"x {args.max_new_tokens} tokens")
    rows = [run_kind(kind, model, tok, train, heldout, prompts, args) for kind in ("medusa", "hydra")]
    print_table(rows)
    for r in rows:
        print(f"{r['kind']}: acc-8 tree {r['tree acc-8']}, {r['positions']} training positions")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
