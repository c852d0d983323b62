"""The command line: `mask` (cli.mask_command) and, when cli.bench provides it, `eval`."""
from __future__ import annotations

import argparse
import difflib
import logging
import sys

from .mask_command import add_mask_command


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest flag for an unknown one."""

    def error(self, message):
        if "unrecognized arguments" in message:
            known = [s for a in self._actions for s in a.option_strings]
            for action in getattr(self, "_subparsers", None) and self._subparsers._group_actions or []:
                for sub in action.choices.values():
                    known += [s for a in sub._actions for s in a.option_strings]
            hints = []
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], known, n=1)
                if close:
                    hints.append(f"{word}: did you mean {close[0]}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="concept_masks.py",
                    description="Concept masks for whole folders, in-process on your ComfyUI or across ComfyUI "
                                "servers (ConceptAttention node pack).")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages, only the summary")
    parser.add_argument("--verbose", action="store_true", help="ComfyUI's own log too")
    subparsers = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    add_mask_command(subparsers)
    try:
        from .bench import add_eval_command
    except ImportError:
        add_eval_command = None
    if add_eval_command is not None:
        add_eval_command(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
