"""The `talkinghead` command.

  talkinghead synth --layout vox2 --out data/synthtalk/vox2     # write a SynthTalk corpus
  talkinghead preprocess --dataset vox2 --root R --store S      # raw corpus -> clip store
  talkinghead data --out data                                   # SynthTalk in every layout, preprocessed
  talkinghead train --method pcavs [--config synth] [KEY=VALUE ...]  # train a registered method
  talkinghead bench --dataset synth --methods ground_truth static   # score methods, write the results table
  talkinghead compare runs/bench/A runs/bench/B                 # several bench runs in one report (index.html)
  talkinghead weights                                           # pretrained files: present or where to get them
  talkinghead dashboard --entity E [--project P] [--protocol synth]  # W&B comparison reports + training workspace
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from talkinghead.bench.cli import add_bench_parser
from talkinghead.bench.compare import add_compare_parser
from talkinghead.bench.dashboard import add_dashboard_parser
from talkinghead.data.corpora import READERS
from talkinghead.data.synthtalk import puppet
from talkinghead.data.synthtalk.generate import LAYOUTS, MOTIONS, SynthConfig


#: `talkinghead data` variants: name -> (corpus layout, head motion, clip duration factor). The
#: large-motion variant has clips twice as long (6 s by default): Rhythmic Head's protocol takes 64
#: reference frames and scores the rest.
DATA_VARIANTS = {"vox2": ("vox2", "natural", 1.0), "lrw": ("lrw", "natural", 1.0), "mead": ("mead", "natural", 1.0),
                 "vox2-large": ("vox2", "large", 2.0), "vox2-large-nods": ("vox2", "large-nods", 2.0)}
#: what `talkinghead data` writes without --layouts (vox2-large-nods, the large motion plus speech-driven
#: nods, is opt-in)
DEFAULT_DATA_VARIANTS = ("vox2", "lrw", "mead", "vox2-large")


def _synth_config(args: argparse.Namespace, layout: str, motion: str | None = None, duration_factor: float = 1.0
                  ) -> SynthConfig:
    """MEAD has one actor per identity and 22 emotion/level clips each, so it has its own size;
    its train/test split is by actor (see corpora.mead.mead_split)."""
    motion = motion or args.motion
    duration = args.duration * duration_factor
    if layout == "mead":
        return SynthConfig(layout=layout, train_identities=args.mead_actors, test_identities=0,
                           clips_per_video=1, duration=duration, motion=motion, seed=args.seed,
                           identity_candidates=args.identity_candidates)
    return SynthConfig(layout=layout, train_identities=args.train_identities, test_identities=args.test_identities,
                       videos_per_identity=args.videos_per_identity, clips_per_video=args.clips_per_video,
                       duration=duration, lrw_words=args.lrw_words, motion=motion, seed=args.seed,
                       identity_candidates=args.identity_candidates)


def _print_failures(kind: str, failed: list) -> None:
    for item in failed:
        file, reason = (item["file"], item["reason"]) if isinstance(item, dict) else item
        print(f"  {kind} skipped {file}: {reason}", file=sys.stderr)


def cmd_synth(args: argparse.Namespace) -> int:
    from talkinghead.data.synthtalk.generate import generate

    result = generate(args.out, _synth_config(args, args.layout), workers=args.workers)
    _print_failures("synth", result["failed"])
    print(f"SynthTalk {args.layout} corpus: {result['root']} ({result['clips']} clips, {result['written']} written, "
          f"{result['skipped']} already there, {len(result['failed'])} failed)")
    return 1 if result["failed"] else 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from talkinghead.data.preprocess import preprocess_corpus

    report = preprocess_corpus(args.dataset, args.root, args.store, workers=args.workers, backend=args.backend,
                               limit=args.limit, strict=args.strict, shards=args.shards)
    print(f"clip store: {report['store']} ({report['processed']} processed, {report['skipped']} already there, "
          f"{len(report['failed'])} skipped as bad input, {len(report['converted'])} converted); "
          f"report: {Path(report['store']) / 'report.json'}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from talkinghead.data.preprocess import preprocess_corpus
    from talkinghead.data.synthtalk.generate import generate

    out = Path(args.out)
    summary = {}
    for variant in args.layouts:
        layout, motion, duration_factor = DATA_VARIANTS[variant]
        raw = out / "synthtalk" / variant
        result = generate(raw, _synth_config(args, layout, motion, duration_factor), workers=args.workers)
        _print_failures("synth", result["failed"])
        report = preprocess_corpus(layout, raw, out / "store" / f"synth-{variant}", workers=args.workers)
        summary[variant] = {"raw": str(raw), "store": report["store"], "clips": report["clips"],
                            "bad_inputs": len(report["failed"])}
    print(json.dumps(summary, indent=1))
    for layout, s in summary.items():
        print(f"SynthTalk {layout}: raw corpus {s['raw']} -> clip store {s['store']}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from talkinghead import weights

    rows = weights.status()
    width = max(len(r["name"]) for r in rows)
    print(f"pretrained files: ${weights.HOME_ENV} = {weights.home()}")
    for r in rows:
        state = "present " if r["present"] else "missing "
        where = r["path"] if r["present"] else f"get: {r['source']}"
        print(f"  {r['name']:<{width}}  {state} {r['purpose']}\n  {'':<{width}}           {where}")
    return 0


def _method(name: str):
    """The registered method `name`, or None after printing the registered ones."""
    from talkinghead.methods.registry import UnknownMethodError, get_method

    try:
        return get_method(name)
    except UnknownMethodError as error:
        print(f"talkinghead: {error}", file=sys.stderr)
        return None


def train_parser(method) -> argparse.ArgumentParser:
    """The options of ``talkinghead train --method X`` (the same for every method)."""
    configs = ", ".join(p.stem for p in method.config_files)
    parser = argparse.ArgumentParser(
        prog=f"talkinghead train --method {method.name}",
        description=f"Train {method.description}.\nStages, in order: {' -> '.join(method.stages)}. A finished stage "
                    f"is skipped; a killed or time-stopped one resumes from its last checkpoint when the same "
                    f"command is run again.",
        epilog=f"configs (experiments/{method.name}/): {configs}; default {method.default_config}. "
               f"Any config key can be set as KEY=VALUE (e.g. {method.stages[-1]}.max_steps=100 trainer.devices=2); "
               f"--print-config lists them all with their values.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"a config name ({configs}) or a YAML file")
    parser.add_argument("--stage", choices=method.stages, default=None,
                        help="start at this stage (the earlier ones' checkpoints are read, not retrained)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check the method, config, overrides and --stage, then exit (0: valid; 2: the "
                             "reason); makes no store and trains nothing (the Makefile runs it first)")
    parser.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from talkinghead.config import ConfigError, to_yaml

    method = _method(args.method)
    if method is None:
        return 2
    options = train_parser(method).parse_args([a for a in args.options if a != "--"])
    try:
        if options.print_config or options.check:
            from talkinghead.training.runner import resolve, stage_plan

            cfg = resolve(method, options.config, options.overrides)
            if options.print_config:
                print(to_yaml(cfg), end="")
            else:
                stages = stage_plan(method, cfg, options.stage)
                print(f"talkinghead train: {method.name} settings ok (config {options.config or method.default_config}"
                      f", stages {' -> '.join(stages)}, store {cfg.store})")
            return 0
        from talkinghead.training.runner import train

        path = train(method, options.config, options.overrides, stage=options.stage, record=options.record)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"talkinghead train: error: {error}", file=sys.stderr)
        return 2
    print(f"{method.name} checkpoint: {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from talkinghead.generation import main as generation_main

    method = _method(args.method)
    if method is None:
        return 2
    generator = method.generator_class()
    if generator is None:
        print(f"talkinghead generate: {method.name} generates no video (it has no generator)", file=sys.stderr)
        return 2
    train_hint = f"make train METHOD={method.name}"
    return generation_main(generator, list(args.options), prog=f"talkinghead generate --method {method.name}",
                           default_checkpoint=method.default_checkpoint, train_hint=train_hint,
                           default_checkpoint_hint=f"the final checkpoint of `{train_hint}`, "
                                                   f"runs/{method.name}/{method.last_stage}/checkpoints/last.ckpt")


#: Subcommands whose unknown options belong to the method's own parser.
PASS_THROUGH = ("train", "generate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def synth_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--train-identities", type=int, default=48)
        p.add_argument("--test-identities", type=int, default=12, help="held-out identities (test split)")
        p.add_argument("--videos-per-identity", type=int, default=1)
        p.add_argument("--clips-per-video", type=int, default=2)
        p.add_argument("--duration", type=float, default=3.0, help="seconds per clip (not LRW: 29 frames)")
        p.add_argument("--lrw-words", type=int, default=10)
        p.add_argument("--mead-actors", type=int, default=6)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--identity-candidates", type=int, default=puppet.CANDIDATES,
                       help="draws per identity that each group of 12 identities is chosen from, so that a face "
                            "recogniser tells them apart (about 70 s per group of 12); 1: the first usable draw, no choice")
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--motion", choices=MOTIONS, default="natural",
                       help="head motion: natural, large (yaw +-35, pitch +-20, roll +-15 deg, translation, scale), "
                            "or large-nods (large plus nods driven by the speech)")

    p = sub.add_parser("synth", help="write a SynthTalk corpus in a published layout")
    p.add_argument("--layout", choices=LAYOUTS, default="vox2")
    p.add_argument("--out", required=True, help="corpus root folder")
    synth_options(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("preprocess", help="raw corpus -> clip store (aligned frames, audio, mel, landmarks, pose)")
    p.add_argument("--dataset", required=True, choices=sorted(READERS), help="corpus layout")
    p.add_argument("--root", required=True, help="corpus root folder")
    p.add_argument("--store", required=True, help="output clip store folder")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backend", default="dlib", choices=["dlib", "face_alignment"], help="landmark detector")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips (sorted by id)")
    p.add_argument("--strict", action="store_true", help="skip inputs that are not 25 fps / 16 kHz mono")
    p.add_argument("--shards", action="store_true", help="also write LitData shards to <store>/shards")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("data", help="generate SynthTalk in every layout and preprocess it (the default data)")
    p.add_argument("--out", default="data", help="writes <out>/synthtalk/<layout> and <out>/store/synth-<layout>")
    p.add_argument("--layouts", nargs="+", choices=list(DATA_VARIANTS), default=list(DEFAULT_DATA_VARIANTS),
                   help="layouts to write (default: all but vox2-large-nods); vox2-large is the VoxCeleb2 layout with "
                        "large head motion and 6 s clips, vox2-large-nods the same with nods driven by the speech")
    synth_options(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a registered method through the staged runner; its options follow "
                       "(talkinghead train --method pcavs -- --help)", add_help=False)
    p.add_argument("--method", required=True, help="method to train (syncnet, pcavs)")
    p.set_defaults(func=cmd_train, options=[])

    p = sub.add_parser("generate", help="make a talking-head mp4 with a trained method; the method's own options "
                       "follow (talkinghead generate --method pcavs --help)", add_help=False)
    p.add_argument("--method", required=True, help="method to run (e.g. pcavs)")
    p.set_defaults(func=cmd_generate, options=[])

    add_bench_parser(sub)
    add_compare_parser(sub)
    add_dashboard_parser(sub)

    p = sub.add_parser("weights", help="list the pretrained files the suite can use and whether each is present")
    p.set_defaults(func=cmd_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command not in PASS_THROUGH:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.options = list(args.options) + extra
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
