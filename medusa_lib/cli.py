"""Every command: the seed's four (preprocess_data, train_kd, decode_tree, evaluate), export and demo.

Each is a console script and, but for `evaluate` (whose module name is the library it runs,
`medusa_lib.evaluate`, below this one), a module (`python -m medusa_lib.train_kd ...`); `train_kd` also runs
under `accelerate launch -m medusa_lib.train_kd ...`, which picks the device. Flags come from the
dataclasses in `medusa_lib.config`, with the chosen profile's values as defaults. Every argument is
checked before a model loads or data is generated; a user error ends with one line on stderr and
exit status 2, success with status 0. The backbone flag is `--model`, except where the seed named it
(`train_kd --student_name`, `decode_tree --base_model_id`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from medusa_lib import plots
from medusa_lib.checkpoints import check_save_dir, clear_run, save_checkpoint, write_record
from medusa_lib.config import (
    DecodeConfig,
    HeadConfig,
    TrainConfig,
    add_arguments,
    from_arguments,
    profile_for,
    set_seed,
    smoke,
)
from medusa_lib.data import (
    blocks_to_rows,
    chat_ids,
    check_blocks_out,
    draft_vocab,
    heldout_rows,
    load_blocks,
    load_corpus,
    load_prompts,
    pack,
    save_blocks,
    self_distill_data,
)
from medusa_lib.decoding import check_sampling, check_typical, context_of, medusa_generate
from medusa_lib.drafters import KINDS, heads_with_lookup
from medusa_lib.evaluate import is_heads_method, markdown_table, report
from medusa_lib.files import check_writable, run_lock, sigterm_as_interrupt
from medusa_lib.heads import CONFIG_NAME, SHIPPED, MedusaModel, read_config
from medusa_lib.interop import FORMATS, export_heads, load_heads
from medusa_lib.models import EMBEDDED_NAME, load_base
from medusa_lib.positions import check_block_size
from medusa_lib.recipes import DEFAULT_KIND as DECODE_KIND
from medusa_lib.recipes import HYBRID_HEADS, quick_heads, resolve_heads, shipped_heads_fit
from medusa_lib.train import add_lora, check_config, train_heads, train_joint
from medusa_lib.tree import Tree

USER_ERRORS = (ValueError, KeyError, OSError, ImportError)  # bad input, file, package: one line, exit 2


def run(command, argv=None) -> int:
    """Run a command; a user error prints `prog: error: message` and returns 2."""
    try:
        command(argv)
    except USER_ERRORS as e:
        print(f"{command.__name__}: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: training saved last/ first and says how to resume
        print(f"{command.__name__}: stopped: {e or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


def load_name(name: str) -> str:
    """The `load_base` name of a checkpoint's base_model_name_or_path (the embedded model's hub id)."""
    return "embedded" if name == EMBEDDED_NAME else name


def check_out(path, what: str = "--out") -> Path:
    """An output folder that is not a file and can be written, checked (and made) before any work."""
    return check_writable(path, what)


# ----------------------------------------------------------------------------- preprocess_data


def preprocess_data(argv=None) -> Path:
    ap = argparse.ArgumentParser(prog="preprocess_data", description="Chunk and pack a corpus into fixed blocks.")
    ap.add_argument("--dataset_name", default="wikitext", help="wikitext, wikitext-2, wikitext-103 (needs the hub)")
    ap.add_argument("--text_dir", default=None, help="a local file or folder of .txt/.md/.rst/.py (offline)")
    ap.add_argument("--block_size", type=int, default=1024)
    ap.add_argument("--model", default="embedded", help="whose tokenizer to use")
    ap.add_argument("--max_chars", type=int, default=None)
    ap.add_argument("--out", default="runs/data")
    args = ap.parse_args(argv)
    if args.block_size < 2:
        raise ValueError(f"--block_size must be >= 2, got {args.block_size}")
    if args.max_chars is not None and args.max_chars < 1:
        raise ValueError(f"--max_chars must be >= 1 (characters to keep), got {args.max_chars}")
    out = check_blocks_out(args.out, args.text_dir)
    _, tok = load_base(args.model, device="cpu")
    texts = load_corpus(args.text_dir or args.dataset_name, max_chars=args.max_chars)
    blocks = pack(tok, texts, args.block_size)
    save_blocks(blocks, out, tok, args.model)
    print(f"{len(texts)} texts -> {len(blocks)} blocks of {args.block_size} tokens in {out}")
    return out


# ----------------------------------------------------------------------------- train_kd


def train_kd_parser(student: str = "embedded") -> argparse.ArgumentParser:
    """train_kd's flags: the run's own, then TrainConfig's and HeadConfig's with the profile's defaults."""
    prof = profile_for(student)
    ap = argparse.ArgumentParser(prog="train_kd", description="Train Medusa heads by self-distillation "
                                 "(Medusa-1: heads only; Medusa-2: heads + LoRA).")
    ap.add_argument("--student_name", default=student, help="embedded, tiny, a profile, a hub id or a folder")
    ap.add_argument("--qlora", action="store_true", help="NF4 4-bit base + LoRA; implies --stage joint")
    ap.add_argument("--save_dir", default="runs/heads", help="a new folder (or --resume / --overwrite)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --save_dir")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in --save_dir")
    ap.add_argument("--data", default="selfdistill", help="'selfdistill' or a folder written by preprocess_data")
    ap.add_argument("--n_prompts", type=int, default=None, help="self-distil this many training prompts")
    ap.add_argument("--max_new_tokens", type=int, default=smoke(256, 16), help="tokens per self-distilled answer")
    add_arguments(ap, TrainConfig, prof.train)
    add_arguments(ap, HeadConfig, prof.head, skip=("num_heads",))  # one head per offset
    return ap


def backbone_arg(argv, flag: str) -> str:
    """The backbone named by `flag` (first pass): its profile gives the other flags' defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(flag, default="embedded")
    return getattr(pre.parse_known_args(argv)[0], flag.lstrip("-"))


def parse_train_kd(argv=None) -> argparse.Namespace:
    student = backbone_arg(argv, "--student_name")
    args = train_kd_parser(student).parse_args(argv)
    args.qlora = args.qlora or profile_for(student).load_in_4bit  # a 4-bit profile always trains QLoRA
    if args.qlora and args.stage == "heads" and "--stage" in (argv if argv is not None else sys.argv):
        raise ValueError("--stage heads cannot train a 4-bit (QLoRA) backbone; drop --stage, or use a "
                         "full-precision model")
    if args.qlora:
        args.stage = "joint"
    return args


def check_train_kd(args) -> tuple[TrainConfig, HeadConfig]:
    """Every train_kd argument, checked before a model loads or data is generated."""
    cfg = from_arguments(TrainConfig, args)
    head = HeadConfig(**{**vars(from_arguments(HeadConfig, args)), "num_heads": len(cfg.offsets)})
    check_config(cfg)
    if head.num_layers < 1:
        raise ValueError(f"--num_layers must be >= 1 (ResBlocks per head), got {head.num_layers}")
    if head.draft_size < 0:
        raise ValueError(f"--draft_size must be >= 0 (0 = the full vocabulary), got {head.draft_size}")
    if args.n_prompts is not None and args.n_prompts < 1:
        raise ValueError(f"--n_prompts must be >= 1, got {args.n_prompts}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if args.data != "selfdistill" and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such folder; write one with preprocess_data, "
                                f"or use --data selfdistill")
    if args.qlora and args.student_name in ("embedded", "tiny"):
        raise ValueError(f"--qlora needs a hub model that bitsandbytes can load in 4-bit; {args.student_name!r} "
                         f"cannot be (try --student_name llama2-7b-qlora on a GPU, or drop --qlora)")
    if head.kind == "hydra" and cfg.stage == "joint":
        raise ValueError("--kind hydra trains in the heads stage (Medusa-1, teacher-forced on the saved answers); "
                         "use --stage heads, or --kind medusa for the joint stage")
    if args.resume and cfg.stage == "joint":
        raise ValueError("--resume continues Medusa-1 (heads stage) runs only; a joint run starts again with "
                         "--overwrite")
    check_save_dir(args.save_dir, args.resume, args.overwrite)
    return cfg, head


def train_kd(argv=None) -> dict:
    args = parse_train_kd(argv)
    cfg, head = check_train_kd(args)
    with run_lock(args.save_dir), sigterm_as_interrupt():  # one run per folder; SIGTERM stops as Ctrl-C does
        return _train_kd(args, cfg, head)


def _train_kd(args, cfg: TrainConfig, head: HeadConfig) -> dict:
    from accelerate import Accelerator

    set_seed(cfg.seed)
    model, tok = load_base(args.student_name, device=Accelerator().device, load_in_4bit=args.qlora)
    check_block_size(cfg.block_size, context_of(model.config))  # before generating
    rows = training_rows(args, model, tok)
    heldout = [r for r in heldout_rows(model, tok, smoke(None, 4)) if len(r["response_ids"]) >= 3] or None
    if cfg.stage == "joint":
        model = add_lora(model, cfg, qlora=args.qlora)
    mm = MedusaModel.from_base(model, head.num_heads, head.num_layers, share_lm_head=head.share_lm_head,
                               kind=head.kind)
    if head.draft_size:
        mm.set_draft_vocab(draft_vocab(rows, head.draft_size, mm.config.vocab_size))
    t0 = time.time()
    state = fit(mm, rows, heldout, cfg, args)
    record = {"student": args.student_name, "stage": cfg.stage, "rows": len(rows), "seconds": time.time() - t0,
              "qlora": bool(getattr(model, "is_loaded_in_4bit", False)), "evals": state.get("evals", []),
              "args": vars(args)}
    write_record(args.save_dir, record)
    print(json.dumps({k: v for k, v in record.items() if k != "args"}, indent=1))
    print(f"heads: {Path(args.save_dir) / 'best'} (decode with: decode_tree --base_model_id "
          f"{shlex.quote(args.student_name)} --mtp_ckpt_path {shlex.quote(str(args.save_dir))})")
    return record


def fit(mm: MedusaModel, rows, heldout, cfg: TrainConfig, args) -> dict:
    """Medusa-1 writes best/ and last/; Medusa-2 writes its heads and adapter to best/ as well."""
    if cfg.stage == "heads":
        return train_heads(mm, rows, heldout, cfg, save_dir=args.save_dir, resume=args.resume,
                           overwrite=args.overwrite)
    if args.overwrite:
        clear_run(Path(args.save_dir))
    state = train_joint(mm, rows, cfg)
    save_checkpoint(mm, Path(args.save_dir) / "best", {k: v for k, v in state.items() if k != "history"})
    return state


def training_prompts(n: int | None) -> list[str]:
    """The first `n` hand-written training prompts (4 in smoke mode); asking for more than there are says so."""
    prompts = [p.prompt for p in load_prompts("train")]
    if n is not None and n > len(prompts):
        print(f"note: --n_prompts {n}: there are {len(prompts)} training prompts; using them all", file=sys.stderr)
    return prompts[: n or smoke(None, 4)]


def training_rows(args, model, tok) -> list[dict]:
    if args.data == "selfdistill":
        return self_distill_data(model, tok, training_prompts(args.n_prompts), args.max_new_tokens, batch_size=16)
    return blocks_to_rows(load_blocks(args.data, tok))


# ----------------------------------------------------------------------------- decode_tree


def parse_tree(spec: str, num_heads: int | None = None) -> Tree:
    """--tree: default, chain, mc_sim_7b_63, N (nodes of the standard tree) or JSON choices."""
    names = {"default": lambda: Tree.default(num_heads or 3), "chain": lambda: Tree.chain(num_heads or 3),
             "mc_sim_7b_63": Tree.mc_sim_7b_63}
    if spec in names:
        return names[spec]()
    if spec.lstrip("-").isdigit():
        if int(spec) < 1:
            raise ValueError(f"--tree {spec}: a tree needs at least 1 node")
        return Tree.standard(num_heads or 3, int(spec))
    try:
        choices = json.loads(spec)
    except json.JSONDecodeError:
        raise ValueError(f"--tree {spec!r} is not one of default, chain, mc_sim_7b_63, a node count, "
                         f"or JSON choices like '[[0], [0, 0], [1]]'") from None
    try:
        return Tree.from_choices(choices, num_heads=num_heads)
    except TypeError as e:  # JSON of the wrong shape or type (null, "x", [0], [[0.5]]): a user error
        raise ValueError(f"--tree {spec!r}: {e}") from None


def decode_tree_parser(base: str = "embedded") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="decode_tree", description="Decode with Medusa heads and tree verification.")
    ap.add_argument("--base_model_id", default=base, help="embedded, a profile, a hub id or a folder")
    ap.add_argument("--adapter_dir", default=None, help="a PEFT adapter folder (Medusa-2; default: the heads' own)")
    ap.add_argument("--mtp_ckpt_path", default=None, help="heads folder or train_kd run (default: shipped heads)")
    kind_arg(ap, KINDS)
    ap.add_argument("--prompt", default="Explain what a hash table is in two sentences.")
    add_arguments(ap, DecodeConfig, profile_for(base).decode)
    return ap


def decode_tree(argv=None) -> dict:
    args = decode_tree_parser(backbone_arg(argv, "--base_model_id")).parse_args(argv)
    dec = from_arguments(DecodeConfig, args)
    parse_tree(dec.tree)  # the tree's shape, before any model loads
    check_sampling(dec.mode, dec.temperature, dec.max_new_tokens)
    if dec.mode == "typical":
        check_typical(dec.posterior_threshold, dec.posterior_alpha)
    if args.adapter_dir is not None and not Path(args.adapter_dir).is_dir():
        raise FileNotFoundError(f"--adapter_dir {args.adapter_dir}: no such folder")
    model, tok = load_base(args.base_model_id)
    mm, tree = decode_source(model, tok, args, dec.tree)
    ids = chat_ids(tok, args.prompt).to(model.device)
    t0 = time.perf_counter()
    out = medusa_generate(mm, ids, tree=tree, max_new_tokens=dec.max_new_tokens, mode=dec.mode,
                          temperature=dec.temperature, posterior_threshold=dec.posterior_threshold,
                          posterior_alpha=dec.posterior_alpha, seed=0)
    dt = time.perf_counter() - t0
    n = out.new_tokens.numel()
    print(tok.decode(out.new_tokens, skip_special_tokens=True))
    shape = f"{tree.num_nodes}-node tree" if tree is not None else f"{args.kind}, a tree per step"
    print(f"\n[{dec.mode}, {shape}] {n} tokens in {dt:.2f} s = {n / dt:.1f} tok/s, tau = {out.tau:.2f} tokens/step")
    return {"tokens": n, "seconds": dt, "tau": out.tau}


def decode_source(model, tok, args, tree_arg: str):
    """(what decodes, its tree): heads on the `--tree` asked for; the hybrid of those heads (adapter included)
    with prompt lookup; or a drafter that builds its own tree."""
    if args.kind in SHIPPED or args.kind == "hybrid":
        heads_kind = args.kind if args.kind in SHIPPED else HYBRID_HEADS
        mm = with_adapter(load_heads_arg(model, tok, args.mtp_ckpt_path, heads_kind), args.adapter_dir,
                          args.mtp_ckpt_path)
        tree = parse_tree(tree_arg, mm.num_heads)
        return (mm, tree) if args.kind in SHIPPED else (heads_with_lookup(mm, tree), None)
    if tree_arg != "default":
        raise ValueError(f"--kind {args.kind} builds its own tree each step; leave --tree unset")
    if args.adapter_dir is not None:
        raise ValueError(f"--adapter_dir goes with Medusa-2 heads, not with --kind {args.kind}")
    heads = run_heads(args.mtp_ckpt_path) if args.mtp_ckpt_path else None
    return resolve_heads(model, tok, heads, kind=args.kind), None


def load_heads_arg(model, tok, path, kind: str = DECODE_KIND) -> MedusaModel:
    """The heads a command was given: a heads folder, or a train_kd run folder (its best/, else last/);
    with none, the shipped heads of `kind`."""
    if path is None:
        mm = resolve_heads(model, tok, kind=kind)
        others = " or ".join(f"--kind {k}" for k in SHIPPED if k != kind)
        print(f"heads: the shipped {kind} set ({others} for the other)")
        return mm
    return load_heads(run_heads(path), model)


def run_heads(path) -> Path:
    """A heads folder as given, or a train_kd run folder's best/ (else last/) heads."""
    path = Path(path)
    for sub in ("best", "last"):
        if path.is_dir() and not (path / CONFIG_NAME).exists() and (path / sub).is_dir():
            print(f"{path} is a training run: using its {sub}/ heads")
            return path / sub
    return path


def with_adapter(mm: MedusaModel, adapter_dir, heads_dir) -> MedusaModel:
    """Medusa-2 heads read LoRA-adapted states: load the adapter given, else the one saved with the heads."""
    found = [Path(heads_dir) / sub / "adapter" for sub in ("", "best", "last")] if heads_dir else []
    adapter = adapter_dir or next((str(p) for p in found if p.is_dir()), None)
    if adapter is None:
        return mm
    from peft import PeftModel

    print(f"adapter: {adapter}")
    base = PeftModel.from_pretrained(mm.base, adapter)
    out = MedusaModel(base, mm.heads, mm.base_name)
    out.set_draft_vocab(mm.draft_ids)
    return out


# ----------------------------------------------------------------------------- evaluate and demo


def kind_arg(ap: argparse.ArgumentParser, kinds=KINDS) -> None:
    ap.add_argument("--kind", choices=kinds, default=DECODE_KIND,
                    help=f"which drafter ({', '.join(kinds)}); heads kinds: the shipped set when no heads are named "
                         f"(default: {DECODE_KIND}, the fastest in the race (assets/heads_race.md); "
                         f"the notebooks teach with the medusa heads)")


def measured_heads(model, tok, args) -> MedusaModel:
    """The heads evaluate and demo score (accuracy, tree): `--kind`'s, or for a kind without heads (eagle, pld,
    hybrid: each is raced anyway) the hybrid's heads."""
    kind = args.kind if args.kind in SHIPPED else HYBRID_HEADS
    if kind != args.kind:
        print(f"--kind {args.kind} has no heads to score: scoring the {kind} heads; every drafter is raced")
    return with_adapter(load_heads_arg(model, tok, args.heads, kind), None, args.heads)


def raced_drafters(model, tok) -> list:
    """The drafters the race adds to the heads, prompt lookup and the hybrid: the shipped EAGLE drafter when it
    fits `model`."""
    return [resolve_heads(model, tok, kind="eagle")] if shipped_heads_fit(model, "eagle") else []


def measure_args(ap: argparse.ArgumentParser, out: str) -> None:
    ap.add_argument("--model", default="embedded", help="embedded, a profile, a hub id or a folder")
    ap.add_argument("--dtype", default=None, help="float32 (exact), bfloat16 or float16; baselines run in it too "
                    "(default: the profile's); divergences from HF greedy are explained or flagged")
    ap.add_argument("--heads", default=None, help="heads folder or train_kd run (default: the shipped heads)")
    kind_arg(ap)
    ap.add_argument("--out", default=out)
    ap.add_argument("--per_group", type=int, default=smoke(2, 1), help="benchmark prompts per group")
    ap.add_argument("--humaneval", type=int, default=smoke(1, 0), help="HumanEval problems (if installed)")
    ap.add_argument("--max_new_tokens", type=int, default=smoke(96, 12))
    ap.add_argument("--rounds", type=int, default=smoke(2, 1), help="times each method runs each prompt (the "
                    "fastest counts, the spread is reported: a shared machine's bursts land on one round)")


def check_measure(args) -> Path:
    for name in ("per_group", "max_new_tokens", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.humaneval < 0:
        raise ValueError(f"--humaneval must be >= 0 (problems to add), got {args.humaneval}")
    if args.heads is not None and not Path(args.heads).is_dir():
        raise FileNotFoundError(f"--heads {args.heads}: no such folder")
    return check_out(args.out)


def evaluate(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="evaluate", description="Benchmark Medusa against HF greedy and prompt lookup.")
    measure_args(ap, "runs/bench")
    ap.add_argument("--sweep", action="store_true", help="also run the tree-size sweep")
    args = ap.parse_args(argv)
    out = check_measure(args)
    model, tok = load_base(args.model, dtype=args.dtype)
    mm = measured_heads(model, tok, args)
    answers = heldout_rows(model, tok, smoke(24, 4), heads_dir=args.heads or SHIPPED[mm.kind])
    res = report(mm, tok, answers, out, args.per_group, args.max_new_tokens, args.humaneval, args.sweep,
                 raced_drafters(model, tok), args.rounds)
    print("\n" + markdown_table(res["summary"]))
    return res


def demo(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="demo", description="The whole Medusa story on the embedded model, "
                                 "offline: heads -> accuracy -> tree for this machine -> speed vs baselines.")
    ap.add_argument("--train", action="store_true", help="first train heads live on a small budget")
    measure_args(ap, "runs/demo")
    args = ap.parse_args(argv)
    out = check_measure(args)
    if args.train and args.heads is not None:
        raise ValueError("--train trains new heads and --heads names heads to measure: pass one of them")
    set_seed(0)
    t0 = time.time()
    model, tok = load_base(args.model, device="cpu", dtype=args.dtype)
    if args.train:
        print("[1/2] self-distil training prompts, then train 3 heads (Medusa-1)")
        mm, state = quick_heads(model, tok, save_dir=out / "heads")
        plots.save_fig(plots.plot_loss_curves(state["history"]), out / "loss.png")
    else:
        mm = measured_heads(model, tok, args)
    print("[2/2] measuring" if args.train else "measuring the heads")
    answers = heldout_rows(model, tok, smoke(24, 4), heads_dir=args.heads or SHIPPED[mm.kind])
    res = report(mm, tok, answers, out, args.per_group, args.max_new_tokens, args.humaneval, others=raced_drafters(
        model, tok), rounds=args.rounds)
    print("\n" + markdown_table(res["summary"]))
    same = [r["identical"] for r in res["summary"] if is_heads_method(r["method"]) and r["group"] == "all"]
    print(f"\n{mm.kind.capitalize()} output identical to HF greedy: {same[0]} prompts")
    print(f"wrote {out}/results.json, results.md and plots; demo took {time.time() - t0:.0f} s")
    return res


# ----------------------------------------------------------------------------- export


def export(argv=None) -> Path:
    ap = argparse.ArgumentParser(prog="export", description="Write heads in vLLM's or FasterDecoding's layout.")
    ap.add_argument("--heads", required=True, help="folder written by MedusaModel.save_pretrained")
    ap.add_argument("--format", choices=FORMATS, default="vllm")
    ap.add_argument("--out", required=True, help="output folder (new or empty, unless --overwrite)")
    ap.add_argument("--model", default=None, help="load_base name (default: the heads' base model)")
    ap.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    args = ap.parse_args(argv)
    heads_dir, out = Path(args.heads), check_out(args.out)
    if out.resolve() == heads_dir.resolve() or out.resolve() in heads_dir.resolve().parents:
        raise ValueError(f"--out {out} is the heads folder or holds it; export into another folder")
    if (heads_dir / "adapter").is_dir():
        print(f"note: {heads_dir} was trained with a LoRA adapter (Medusa-2): serve the heads on the adapted "
              f"model (merge {heads_dir / 'adapter'} into the base), or they will draft worse")
    saved = saved_config(heads_dir)
    base, _ = load_base(load_name(args.model or saved.get("base_model_name_or_path") or _no_base(heads_dir)),
                        device="cpu")
    mm = load_heads(heads_dir, base)
    export_heads(mm, out, args.format, saved, overwrite=args.overwrite)
    for path in sorted(out.iterdir()):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return out


def saved_config(heads_dir: Path) -> dict:
    """medusa_config.json (or a foreign config.json) of a heads folder, by `heads.read_config`; {} if neither."""
    for name, foreign in ((CONFIG_NAME, False), ("config.json", True)):
        if (heads_dir / name).exists():
            return read_config(heads_dir / name, foreign)
    if not heads_dir.is_dir():
        raise FileNotFoundError(f"--heads {heads_dir}: no such folder")
    return {}


def _no_base(heads_dir: Path) -> str:
    raise ValueError(f"{heads_dir} does not name its base model; pass --model")


# ----------------------------------------------------------------------------- console scripts


def entry_point(command):
    """`command` as a console script: `main(argv=None) -> exit status`."""
    def main(argv=None) -> int:
        return run(command, argv)
    main.__name__ = f"{command.__name__}_main"
    return main


preprocess_data_main, train_kd_main, decode_tree_main = map(entry_point, (preprocess_data, train_kd, decode_tree))
evaluate_main, export_main, demo_main = map(entry_point, (evaluate, export, demo))
