"""`triton-eagle` command line: one sub-command per job, each in its own module."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module with `add_arguments(parser)` and `run(args) -> int`
COMMANDS = {
    "assets": "triton_eagle.assets",
    "serve": "triton_eagle.serve",
    "openai": "triton_eagle.openai_api.command",
    "generate": "triton_eagle.generate",
    "repo": "triton_eagle.repo",
    "bench-engine": "triton_eagle.bench_engine",
    "bench-serving": "triton_eagle.bench_serving",
    "train-draft": "triton_eagle.train_draft",
    "eval-acceptance": "triton_eagle.eval_acceptance",
    "soak": "triton_eagle.soak",
    "eval-quality": "triton_eagle.eval_quality",
    "loadtest": "loadtest.cli",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triton-eagle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    args = parser.parse_args(argv)
    return modules[args.command].run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
