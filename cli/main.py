"""The command line: `mask` (cli.mask_command) and, when cli.bench provides it, `eval`."""
from __future__ import annotations

import argparse
import difflib
import logging
import sys

from .mask_command import add_mask_command
from .options import add_output_options

EPILOG = ("--quiet and --verbose may come before or after the verb. Run 'concept_masks.py VERB --help' "
          "for a verb's options and its exit status.")


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest flag for an unknown one, and names the verb of a flag
    given to another verb."""

    def error(self, message):
        if "unrecognized arguments" in message:
            owners = {}  # option -> the verbs that have it ("" for the tool itself)
            for a in self._actions:
                for s in a.option_strings:
                    owners.setdefault(s, []).append("")
            for action in getattr(self, "_subparsers", None) and self._subparsers._group_actions or []:
                for verb, sub in action.choices.items():
                    for a in sub._actions:
                        for s in a.option_strings:
                            owners.setdefault(s, []).append(verb)
            hints = []
            for word in message.split(":", 1)[1].split():
                flag = word.split("=")[0]
                if flag in owners:
                    hints.append(f"{flag} is an option of {' and '.join(repr(v) for v in owners[flag] if v)}")
                    continue
                close = difflib.get_close_matches(flag, list(owners), n=1)
                if close:
                    hints.append(f"{word}: did you mean {close[0]}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="concept_masks.py",
                    description="Concept masks for whole folders, in-process on your ComfyUI or across ComfyUI "
                                "servers (ConceptAttention node pack).", epilog=EPILOG)
    add_output_options(parser)
    subparsers = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    add_mask_command(subparsers)
    try:
        from .bench import add_eval_command
    except ImportError:
        add_eval_command = None
    if add_eval_command is not None:
        add_eval_command(subparsers)
    for verb in subparsers.choices.values():
        add_output_options(verb, anywhere=True)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
